"""TorchRec's own sharding planner as a baseline (`planner compare --solvers ...,torchrec`): it runs
in its environment (.venv-torchrec, or PLANNER_TORCHREC_PYTHON) through
planner/frameworks/torchrec_plan.py on the same tables, batch, memory and bandwidths, and its plan
is priced by our cost model. TorchRec's inputs: HBM capacity per rank, HBM bandwidth at the
device's achievable fraction, the innermost tier's and the outermost tier's bandwidth per rank at
their efficiencies, the local batch, the embedding optimizer (Adagrad, which its script does not
offer, as rowwise Adagrad), its default 15% storage reservation, the fused kernel (and dense for
data-parallel), a timeout of what is left of the time limit.

`torchrec_estimates(problem, plans)` prices any of our plans with TorchRec's own estimators (the
script's `estimate` mode: TorchRec's enumerator restricted to each table's sharding type and kernel,
the shards placed on the plan's ranks, EmbeddingPerfEstimator and EmbeddingStorageEstimator), and
`add_torchrec_estimates` puts those figures beside TorchRec's plan in `planner compare`: the score
TorchRec's planner minimizes (NoopPerfModel.rate: the largest per-rank sum of its shards' Perf.total,
embedding tables only) of every plan of the comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from planner.export.base import ExportError
from planner.export.torchrec import _expanded, parameter_sharding, plan_from_torchrec, table_specs
from planner.recsys.cost import evaluate
from solvers.base import SolveOptions, SolveResult

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "planner" / "frameworks" / "torchrec_plan.py"


def torchrec_python() -> Path:
    return Path(os.environ.get("PLANNER_TORCHREC_PYTHON", ROOT / ".venv-torchrec" / "bin" / "python"))


def torchrec_input(problem, timeout_s: float) -> dict:
    cluster, task = problem.cluster, problem.task
    device = cluster.device
    inner, outer = cluster.tiers[0], cluster.tiers[-1]
    optimizer = {"adagrad": "rowwise_adagrad"}.get(task.embedding_optimizer, task.embedding_optimizer)
    return {
        "tables": table_specs(problem), "world_size": cluster.num_devices, "local_world_size": problem.ranks_per_host,
        "batch_size_per_rank": problem.local_batch_size, "hbm_bytes_per_rank": device.hbm_bytes,
        "ddr_bytes_per_rank": 2**40,
        "hbm_bandwidth_bytes_per_s": device.hbm_bandwidth_bytes_per_s * device.efficiency.hbm_fraction,
        "intra_host_bandwidth_bytes_per_s": inner.bandwidth_bytes_per_s * inner.efficiency,
        "inter_host_bandwidth_bytes_per_s": outer.bandwidth_bytes_per_s * outer.efficiency,
        "storage_reservation_fraction": 0.15,
        "sharding_types": ["table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"],
        "compute_kernels": ["fused", "dense"], "optimizer": optimizer, "timeout_s": max(timeout_s, 1.0),
    }


def run_script(mode: str, spec: dict, timeout_s: float) -> tuple[dict | None, str | None]:
    """(the script's JSON output, None) or (None, why there is none); an {"error"} output is returned."""
    python = torchrec_python()
    if not python.exists():
        return None, f"TorchRec environment not installed ({python}; .ci/run builds .venv-torchrec)"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.json"
        source.write_text(json.dumps(spec))
        try:
            done = subprocess.run([str(python), str(SCRIPT), mode, str(source)], capture_output=True, text=True,
                                  timeout=max(timeout_s, 1.0), check=False)
        except subprocess.TimeoutExpired:
            return None, f"did not finish within {max(timeout_s, 1.0):g} s"
    try:
        return json.loads(done.stdout), None
    except json.JSONDecodeError:
        return None, f"failed: {done.stderr.strip()[-300:]}"


def torchrec_entries(problem, plan) -> dict:
    """Our plan table by table as TorchRec's ParameterSharding fields (those of the export); column
    shards of a width TorchRec's kernels refuse (not a multiple of 4) are kept, to be priced as given."""
    out = {}
    for name, group, entry in _expanded(problem, plan):
        try:
            out[name] = parameter_sharding(problem, group, entry)
        except ExportError:
            k = len(entry.ranks)
            width = group.dim // k
            out[name] = {"sharding_type": "column_wise", "compute_kernel": "fused", "ranks": list(entry.ranks),
                         "shard_sizes": [[group.num_rows, width] for _ in range(k)],
                         "shard_offsets": [[0, i * width] for i in range(k)]}
    return out


def torchrec_estimates(problem, plans: dict, timeout_s: float = 120.0, estimator_overrides: dict | None = None) -> dict:
    """TorchRec's own estimate of each of our plans ({label: ShardingPlan}), on the inputs TorchRec's
    planner gets here (torchrec_input). Returns {label: {"plan", "estimate", ...}} as the script's
    estimate mode gives them (estimate: per_rank_perf_ms, per_rank_hbm_bytes, max_rank_perf_ms -- the
    score TorchRec's planner minimizes --, fits, per_rank_parts_ms, tables), or {label: {"error": ...}}.
    estimator_overrides (diagnosis only): {"block_usage_penalty": False, "min_dim_for_lookup": False}
    turn off those two terms of TorchRec's table-wise and column-wise compute estimate."""
    if not plans:
        return {}
    spec = torchrec_input(problem, timeout_s)
    spec.pop("timeout_s")
    spec["plans"] = {label: torchrec_entries(problem, plan) for label, plan in plans.items()}
    if estimator_overrides:
        spec["estimator_overrides"] = dict(estimator_overrides)
    out, why = run_script("estimate", spec, timeout_s)
    if out is None or "error" in out:
        why = why or out["error"]
        return {label: {"error": f"TorchRec's estimator: {why}"} for label in plans}
    return out["estimates"]


def add_torchrec_estimates(problem, results: dict, deadline: float | None = None) -> None:
    """Beside TorchRec's plan (results["torchrec"]), every other plan under TorchRec's own estimate:
    each result with a plan gets stats["torchrec_estimate_ms"], and the torchrec result one note that
    lists them all (TorchRec's plan first). Takes what is left until the deadline (the command's
    time limit holds: with under a second left the others are not priced, and the note says so)."""
    own = results.get("torchrec")
    if own is None or own.plan is None or own.stats.get("torchrec_max_rank_perf_ms") is None:
        return
    own_ms = float(own.stats["torchrec_max_rank_perf_ms"])
    own.stats["torchrec_estimate_ms"] = own_ms
    others = {name: r.plan for name, r in results.items() if name != "torchrec" and r.plan is not None}
    if not others:
        return
    left = (deadline - time.perf_counter()) if deadline is not None else 120.0
    if left < MIN_ESTIMATE_S:
        own.notes.append(f"under TorchRec's own estimate: torchrec {own_ms:.3f} ms; the other plans were not priced "
                         "by TorchRec's estimator (the time limit was used up: give a longer --time-limit)")
        return
    started = time.perf_counter()
    priced = torchrec_estimates(problem, others, timeout_s=left)
    own.stats["torchrec_estimate_s"] = time.perf_counter() - started
    parts = [f"torchrec {own_ms:.3f} ms"]
    for name in others:
        item = priced.get(name, {"error": "not priced"})
        if "error" in item:
            parts.append(f"{name} not priced ({item['error'][:120]})")
            continue
        ms = float(item["estimate"]["max_rank_perf_ms"])
        results[name].stats["torchrec_estimate_ms"] = ms
        over = "" if item["estimate"].get("fits", True) else ", over TorchRec's HBM after its reservation"
        parts.append(f"{name} {ms:.3f} ms ({100 * (ms / own_ms - 1):+.1f}%{over})" if own_ms > 0 else
                     f"{name} {ms:.3f} ms{over}")
    own.notes.append("under TorchRec's own estimate (its planner's score: the busiest rank's embedding time): "
                     + "; ".join(parts))


MIN_ESTIMATE_S = 1.0
"""Below this much time left, the other plans are not sent to TorchRec's estimator."""


class TorchRecPlanner:
    name = "torchrec"
    exact = False

    def solve(self, problem, options: SolveOptions, hints=()) -> SolveResult:
        started = time.perf_counter()
        deadline = options.deadline or started + options.time_limit_s
        python = torchrec_python()
        if not python.exists():
            return SolveResult(self.name, "UNKNOWN", notes=[(f"TorchRec environment not installed ({python}; "
                                                             ".ci/run builds .venv-torchrec)")])
        left = deadline - time.perf_counter()
        out, why = run_script("plan", torchrec_input(problem, left * 0.8), left)
        wall = time.perf_counter() - started
        if out is None:
            if why.startswith("did not finish"):
                why = f"did not finish within {options.time_limit_s:g} s"
            return SolveResult(self.name, "UNKNOWN", wall_time_s=wall, notes=[f"TorchRec's planner {why}"])
        if "error" in out:
            return SolveResult(self.name, "INFEASIBLE", wall_time_s=wall, infeasibility=f"TorchRec: {out['error']}")
        try:
            plan = plan_from_torchrec(problem, out["plan"])
        except ExportError as exc:
            return SolveResult(self.name, "UNKNOWN", wall_time_s=wall, notes=[str(exc)])
        b = evaluate(problem, plan)
        estimate = out.get("estimate", {})
        stats = {"torchrec_planning_s": out.get("planning_s"), "torchrec_version": out.get("torchrec_version"),
                 "torchrec_max_rank_perf_ms": estimate.get("max_rank_perf_ms"),
                 "torchrec_timed_out": estimate.get("timed_out", out.get("timed_out"))}
        plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update={
            "solver": self.name, "status": "HEURISTIC", "objective_s": b.step_time_s, "problem_hash": problem.hash})})
        return SolveResult(self.name, "HEURISTIC", plan=plan, objective_s=b.step_time_s, wall_time_s=wall,
                           breakdown=b, stats=stats)
