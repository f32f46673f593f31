"""Benchmark: exact embedding sharding (CP-SAT) beside the rules and TorchRec's own planner, in one
run: solve time, status, step time under our cost model, bound and gap; TorchRec's planning time
(capped) and its plan priced by our model.

Run by hand:  .venv/bin/python benchmarks/recsys_scaling.py [--time-limit 30] [--torchrec-cap 120]
Results go in benchmarks/README.md. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.recsys_workloads import heterogeneous_problem  # noqa: E402
from planner.cli.common import load_task  # noqa: E402
from planner.core.inputs import load_cluster  # noqa: E402
from planner.recsys.problem import RecsysProblem, load_dlrm  # noqa: E402
from planner.recsys.task import RecsysTraining  # noqa: E402
from solvers import SolveOptions  # noqa: E402
from solvers.recsys import RECSYS_SOLVERS, solve_recsys  # noqa: E402


def cases():
    yield "DLRM-A, 4096 tables, 128 x A100 (ZionEX)", load_task("madmax-dlrm-a-zionex128")
    dcn = RecsysProblem(model=load_dlrm("mlperf-dlrm-dcnv2"), cluster=load_cluster("dgx-h100", num_devices=8),
                        task=RecsysTraining(global_batch_size=65536, dense_precision="bf16",
                                            embedding_optimizer="adagrad"))
    yield "MLPerf DLRM-DCNv2, 26 tables, 8 x H100", dcn
    for tables, devices in ((128, 16), (256, 32), (856, 64)):
        yield f"heterogeneous {tables} tables, {devices} x H100", heterogeneous_problem(tables, devices)


def line(case: str, r) -> str:
    b = r.breakdown
    step = f"{b.step_time_s * 1e3:.2f}" if b else "-"
    bound = f"{r.best_bound_s * 1e3:.2f}" if r.best_bound_s is not None else "-"
    gap = f"{100 * r.gap:.2f}%" if r.gap is not None else "-"
    plan = r.plan.summary() if r.plan else (r.infeasibility or "; ".join(r.notes))[:70]
    return f"| {case} | {r.solver} | {r.status} | {step} | {bound} | {gap} | {r.wall_time_s:.1f} | {plan} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--torchrec-cap", type=float, default=120.0)
    args = parser.parse_args()
    print("| case | solver | status | step ms (our model) | bound ms | gap | wall s | plan |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for case, problem in cases():
        started = time.perf_counter()
        results = solve_recsys(problem, ["cpsat", "greedy", "madmax-mp"], SolveOptions(time_limit_s=args.time_limit))
        for r in results:
            print(line(case, r), flush=True)
        tr = RECSYS_SOLVERS["torchrec"].solve(problem, SolveOptions(time_limit_s=args.torchrec_cap))
        print(line(case, tr) + (f" (TorchRec planning {tr.stats.get('torchrec_planning_s', 0):.1f} s, its own "
                                f"estimate {tr.stats.get('torchrec_max_rank_perf_ms')} ms/rank)" if tr.plan else ""),
              flush=True)
        print(f"<!-- {case}: {time.perf_counter() - started:.1f} s -->", flush=True)


if __name__ == "__main__":
    main()
