"""Benchmark: our embedding-sharding plan beside TorchRec's, under our cost model AND under
TorchRec's own estimator, on the workloads where TorchRec's planner finishes.

For each case: TorchRec's planning time (its planner in .venv-torchrec, capped), our solve time
(CP-SAT with the rules as hints, --time-limit), both plans' step time under our model, and both
plans under TorchRec's estimate -- the score its planner minimizes (NoopPerfModel.rate: the busiest
rank's sum of Perf.total over its shards; embedding tables only, no dense part). Our plan is priced
by planner/frameworks/torchrec_plan.py estimate (TorchRec's enumerator restricted to each table's
sharding type and kernel, shards on our ranks, EmbeddingPerfEstimator / EmbeddingStorageEstimator).
TorchRec's plan is re-priced the same way as a check: it must give back its planner's own figure.

A second table takes both plans' busiest rank (under TorchRec's estimate) apart, and prices both
once more with two terms of TorchRec's table-wise / column-wise compute estimate turned off (the
block-usage penalty and the 32-column minimum lookup width), and takes out the data-parallel
tables' part of every rank's score: the terms where its estimator and our model differ most.

Run by hand:  .venv/bin/python benchmarks/recsys_torchrec_estimate.py [--time-limit 30] [--torchrec-cap 120]
Results go in benchmarks/README.md. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.recsys_workloads import heterogeneous_problem
from planner.cli.common import load_task
from planner.core import kernels
from planner.recsys.cost import evaluate
from planner.recsys.loads import entry_loads
from solvers import SolveOptions
from solvers.recsys import RECSYS_SOLVERS, solve_recsys
from solvers.recsys.torchrec_baseline import torchrec_entries, torchrec_estimates

NO_KERNEL_TERMS = {"block_usage_penalty": False, "min_dim_for_lookup": False}


def cases():
    yield "MLPerf DLRM-DCNv2, 26 tables, 8 x H100", load_task("mlperf-dlrm-dcnv2-8xh100")
    for tables, devices in ((64, 8), (128, 16), (256, 32)):
        yield f"heterogeneous {tables} tables, {devices} x H100", heterogeneous_problem(tables, devices)


def same_placement(problem, plan, priced: dict) -> bool:
    """TorchRec's estimator placed every table with the sharding type and ranks it was given."""
    given = torchrec_entries(problem, plan)
    return all(priced[name]["sharding_type"] == e["sharding_type"] and priced[name]["ranks"] == e["ranks"]
               for name, e in given.items())


def busiest(estimate: dict) -> str:
    perf = estimate["per_rank_perf_ms"]
    r = max(range(len(perf)), key=perf.__getitem__)
    parts = {k[:-3]: v[r] for k, v in estimate["per_rank_parts_ms"].items()}
    return (f"rank {r}: compute {parts['fwd_compute'] + parts['bwd_compute']:.3f}, "
            f"comms {parts['fwd_comms'] + parts['bwd_comms']:.3f} (bwd {parts['bwd_comms']:.3f}), "
            f"input dist {parts['input_dist_comms']:.3f}")


def dp_share(estimate: dict, priced_plan: dict, world: int) -> float:
    """The data-parallel tables' part of every rank's score (the same on each rank: compute at the
    'dense' kernel's half HBM bandwidth, gradient all-reduce and optimizer kernels)."""
    return sum(row["total_ms"] for name, row in estimate["tables"].items()
               if priced_plan[name]["sharding_type"] == "data_parallel") / world


def our_dp_ms(problem, plan) -> float:
    """Our model's time for the data-parallel tables on one rank (the same on each): their forward and
    backward lookups, dense gradient and optimizer pass at the achievable HBM bandwidth; their gradient
    all-reduce joins the dense one and hides under the backward in our step (not counted here)."""
    total = 0.0
    for entry in plan.tables:
        if entry.sharding == "data_parallel":
            lo = entry_loads(problem, entry)
            total += float(kernels.memory_bound_time_s(lo.lookup_fwd_bytes[0] + lo.lookup_bwd_bytes[0],
                                                       problem.cluster.device))
    return total * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--torchrec-cap", type=float, default=120.0)
    args = parser.parse_args()
    head = ("| case | TorchRec planning s | our solve s | our model: ours / TorchRec's ms | "
            "TorchRec's estimate: ours / TorchRec's ms | ours vs TorchRec's (its estimate) | "
            "re-priced TorchRec plan = its planner's | plans |")
    print(head)
    print("|---|---:|---:|---:|---:|---:|---|---|")
    detail = []
    for case, problem in cases():
        started = time.perf_counter()
        (ours,) = solve_recsys(problem, ["cpsat"], SolveOptions(time_limit_s=args.time_limit))
        tr = RECSYS_SOLVERS["torchrec"].solve(problem, SolveOptions(time_limit_s=args.torchrec_cap))
        if tr.plan is None:
            print(f"| {case} | did not finish ({'; '.join(tr.notes)[:80]}) | {ours.wall_time_s:.1f} | "
                  f"{ours.breakdown.step_time_s * 1e3:.2f} / - | - | - | - | {ours.plan.summary()} |", flush=True)
            continue
        world = problem.cluster.num_devices
        priced = torchrec_estimates(problem, {"ours": ours.plan, "torchrec": tr.plan})
        bare = torchrec_estimates(problem, {"ours": ours.plan, "torchrec": tr.plan},
                                  estimator_overrides=NO_KERNEL_TERMS)
        for got in (priced, bare):
            for label, item in got.items():
                if "error" in item:
                    raise SystemExit(f"{case}: {label}: {item['error']}")
        e_ours, e_tr = priced["ours"]["estimate"], priced["torchrec"]["estimate"]
        own = tr.stats["torchrec_max_rank_perf_ms"]
        ms_ours, ms_tr = e_ours["max_rank_perf_ms"], e_tr["max_rank_perf_ms"]
        check = "yes" if abs(ms_tr - own) <= 1e-9 * max(own, 1.0) else f"no ({ms_tr:.4f} vs {own:.4f})"
        placed = same_placement(problem, ours.plan, priced["ours"]["plan"])
        fits = "" if e_ours["fits"] else " (over TorchRec's HBM after reservation)"
        print(f"| {case} | {tr.stats['torchrec_planning_s']:.1f} | {ours.wall_time_s:.1f} ({ours.status}) | "
              f"{ours.breakdown.step_time_s * 1e3:.2f} / {tr.breakdown.step_time_s * 1e3:.2f} | "
              f"{ms_ours:.3f} / {ms_tr:.3f}{fits} | {100 * (ms_ours / ms_tr - 1):+.1f}% | {check} | "
              f"ours {ours.plan.summary()}; TorchRec's {tr.plan.summary()}"
              f"{'' if placed else ' (PLACEMENT DIFFERS)'} |", flush=True)
        b_ours, b_tr = bare["ours"]["estimate"]["max_rank_perf_ms"], bare["torchrec"]["estimate"]["max_rank_perf_ms"]
        dp_ours = dp_share(e_ours, priced["ours"]["plan"], world)
        dp_tr = dp_share(e_tr, priced["torchrec"]["plan"], world)
        detail.append(
            f"| {case} | {busiest(e_ours)} | {busiest(e_tr)} | {dp_ours:.3f} / {our_dp_ms(problem, ours.plan):.3f} | "
            f"{b_ours:.3f} / {b_tr:.3f} ({100 * (b_ours / b_tr - 1):+.1f}%) | "
            f"{b_ours - dp_ours:.3f} / {b_tr - dp_tr:.3f} ({100 * ((b_ours - dp_ours) / (b_tr - dp_tr) - 1):+.1f}%) |")
        print(f"<!-- {case}: {time.perf_counter() - started:.1f} s; our model re-evaluated: "
              f"{evaluate(problem, ours.plan).step_time_s * 1e3:.3f} ms -->", flush=True)
    print()
    print("| case | ours, busiest rank under TorchRec's estimate (ms) | TorchRec's, busiest rank (ms) | "
          "our plan's data-parallel tables on every rank: TorchRec's estimate / our model ms | TorchRec's estimate without "
          "block penalty and 32-column minimum: ours / TorchRec's ms | the same less the data-parallel tables' part |")
    print("|---|---|---|---:|---:|---:|")
    for row in detail:
        print(row)


if __name__ == "__main__":
    main()
