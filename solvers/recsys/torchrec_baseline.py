"""TorchRec's own sharding planner as a baseline (`planner compare --solvers ...,torchrec`): it runs
in its environment (.venv-torchrec, or PLANNER_TORCHREC_PYTHON) through
planner/frameworks/torchrec_plan.py on the same tables, batch, memory and bandwidths, and its plan
is priced by our cost model. TorchRec's inputs: HBM capacity per rank, HBM bandwidth at the
device's achievable fraction, the innermost tier's and the outermost tier's bandwidth per rank at
their efficiencies, the local batch, the embedding optimizer (Adagrad, which its script does not
offer, as rowwise Adagrad), its default 15% storage reservation, the fused kernel (and dense for
data-parallel), a timeout of what is left of the time limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from planner.export.base import ExportError
from planner.export.torchrec import plan_from_torchrec, table_specs
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


class TorchRecPlanner:
    name = "torchrec"
    exact = False

    def solve(self, problem, options: SolveOptions, hints=()) -> SolveResult:
        started = time.perf_counter()
        deadline = options.deadline or started + options.time_limit_s
        python = torchrec_python()
        if not python.exists():
            return SolveResult(self.name, "UNKNOWN", notes=[f"TorchRec environment not installed ({python}; "
                                                            ".ci/run builds .venv-torchrec)"])
        left = deadline - time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "in.json"
            source.write_text(json.dumps(torchrec_input(problem, left * 0.8)))
            try:
                done = subprocess.run([str(python), str(SCRIPT), "plan", str(source)], capture_output=True, text=True,
                                      timeout=max(left, 1.0))
            except subprocess.TimeoutExpired:
                return SolveResult(self.name, "UNKNOWN", wall_time_s=time.perf_counter() - started,
                                   notes=[f"TorchRec's planner did not finish within {options.time_limit_s:g} s"])
        wall = time.perf_counter() - started
        try:
            out = json.loads(done.stdout)
        except json.JSONDecodeError:
            return SolveResult(self.name, "UNKNOWN", wall_time_s=wall,
                               notes=[f"TorchRec's planner failed: {done.stderr.strip()[-300:]}"])
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
