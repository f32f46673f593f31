"""Benchmark: the exact embedding-sharding model in CP-SAT beside the same decision as a MILP (SCIP
and HiGHS through OR-Tools' linear solver), side by side in one run: status, step time, best bound,
wall time. This is the measured answer to "CP-SAT or a MILP, where its LP bound is tighter".

Run by hand:  .venv/bin/python benchmarks/recsys_milp.py [--time-limit 30]
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
from solvers.recsys import solve_recsys  # noqa: E402
from solvers.recsys.milp import RecsysMilp  # noqa: E402


def cases():
    yield "MLPerf DLRM-DCNv2, 26 tables, 8 x H100", RecsysProblem(
        model=load_dlrm("mlperf-dlrm-dcnv2"), cluster=load_cluster("dgx-h100", num_devices=8),
        task=RecsysTraining(global_batch_size=65536, dense_precision="bf16", embedding_optimizer="adagrad"))
    yield "DLRM-A, 4096 tables, 128 x A100", load_task("madmax-dlrm-a-zionex128")
    yield "heterogeneous 64 tables, 8 x H100", heterogeneous_problem(64, 8)
    yield "heterogeneous 128 tables, 16 x H100", heterogeneous_problem(128, 16)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=30.0)
    args = parser.parse_args()
    options = SolveOptions(time_limit_s=args.time_limit)
    print("| case | solver | status | step ms | bound ms | gap | wall s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for case, problem in cases():
        runs = [("cpsat", lambda p=problem: solve_recsys(p, ["cpsat"], options)[0])]
        for backend in ("SCIP", "HIGHS"):
            runs.append((f"milp ({backend})", lambda p=problem, b=backend: RecsysMilp(b).solve(p, options)))
        for name, run in runs:
            started = time.perf_counter()
            r = run()
            wall = time.perf_counter() - started
            step = f"{r.objective_s * 1e3:.3f}" if r.objective_s is not None else "-"
            bound = f"{r.best_bound_s * 1e3:.3f}" if r.best_bound_s is not None else "-"
            gap = f"{100 * r.gap:.2f}%" if r.gap is not None else "-"
            print(f"| {case} | {name} | {r.status} | {step} | {bound} | {gap} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
