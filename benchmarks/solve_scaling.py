"""Benchmark: CP-SAT solve time and status on large published setups, a sweep of GPU counts,
and CP-SAT vs the exhaustive oracle on the same (small) spaces in one run.

Run by hand:  .venv/bin/python benchmarks/solve_scaling.py [--time-limit 10]
              .venv/bin/python benchmarks/solve_scaling.py --command-wall  (whole `planner solve`
              commands, interpreter start to exit, against --time-limit 1, 2 and 10)
Results go in benchmarks/README.md. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.llm.candidates import SpaceOptions  # noqa: E402
from planner.llm.problem import load_problem  # noqa: E402
from planner.llm.task import TrainingTask  # noqa: E402
from solvers import SOLVERS, SolveOptions  # noqa: E402

NAMED = ["gpt3-175b-1024xa100", "megatron-1t-3072xa100", "llama3-405b-16384xh100"]
SWEEP = [8, 64, 512, 4096, 16384, 65536]
SMALL = ["single-gpu", "pipeline-needed", "uneven-layers", "too-big"]


def row(label: str, result, wall: float) -> str:
    plan = result.plan.summary() if result.plan else (result.infeasibility or "; ".join(result.notes))[:60]
    objective = f"{result.objective_s:.3f}" if result.objective_s is not None else "-"
    gap = f"{100 * result.gap:.2f}%" if result.gap is not None else "-"
    configs = result.stats.get("configurations", "-")
    return f"| {label} | {result.status} | {objective} | {gap} | {wall:.1f} | {configs} | {plan} |"


WALL_TASKS = ["llama3-405b-16384xh100", "gpt3-175b-1024xa100"]
WALL_LIMITS = [1, 2, 10]


def command_wall() -> None:
    """Wall time of whole `planner solve` commands (start-up, loading, search and printing)."""
    planner = Path(sys.executable).parent / "planner"
    print("| task | --time-limit s | wall s | over s | status | gap |")
    print("|---|---:|---:|---:|---|---:|")
    for name in WALL_TASKS:
        for limit in WALL_LIMITS:
            start = time.perf_counter()
            done = subprocess.run([str(planner), "solve", str(ROOT / "problems" / "tasks" / f"{name}.yaml"),
                                   "--time-limit", str(limit), "--json"], capture_output=True, text=True)
            wall = time.perf_counter() - start
            try:
                data = json.loads(done.stdout)
                status, gap = data["status"], data["gap"]
            except (ValueError, KeyError):
                status, gap = f"exit {done.returncode}", None
            shown = f"{100 * gap:.2f}%" if gap is not None else "-"
            print(f"| {name} | {limit} | {wall:.2f} | {wall - limit:+.2f} | {status} | {shown} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--command-wall", action="store_true", help="only the whole-command wall times")
    args = parser.parse_args()
    if args.command_wall:
        command_wall()
        return
    options = SolveOptions(time_limit_s=args.time_limit)

    print("## Published setups (default search space)\n")
    print("| case | status | step s | gap | wall s | configurations | plan |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name in NAMED:
        problem = load_problem(ROOT / "problems" / "tasks" / f"{name}.yaml")
        start = time.perf_counter()
        result = SOLVERS["cpsat"].solve(problem, options)
        print(row(name, result, time.perf_counter() - start), flush=True)

    print("\n## GPU-count sweep: Llama-3 405B, 16M-token batches, DGX H100\n")
    print("| GPUs | status | step s | gap | wall s | configurations | plan |")
    print("|---|---|---:|---:|---:|---:|---|")
    base = load_problem(ROOT / "problems" / "tasks" / "llama3-405b-16384xh100.yaml")
    for n in SWEEP:
        cluster = base.cluster.model_copy(update={"num_devices": n})
        problem = type(base)(model=base.model, cluster=cluster, task=base.task, source=f"sweep-{n}")
        start = time.perf_counter()
        result = SOLVERS["cpsat"].solve(problem, options)
        print(row(str(n), result, time.perf_counter() - start), flush=True)

    print("\n## CP-SAT vs exhaustive on the same space (max 2 virtual stages, micro-batch <= 4)\n")
    print("| problem | exhaustive s | cpsat s | ratio | same optimum |")
    print("|---|---:|---:|---:|---|")
    small = SolveOptions(space=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=4), max_evaluations=10**8)
    for name in SMALL:
        problem = load_problem(ROOT / "problems" / "catalogue" / f"{name}.yaml")
        start = time.perf_counter()
        oracle = SOLVERS["exhaustive"].solve(problem, small)
        oracle_s = time.perf_counter() - start
        start = time.perf_counter()
        exact = SOLVERS["cpsat"].solve(problem, small)
        exact_s = time.perf_counter() - start
        same = (oracle.status == exact.status == "INFEASIBLE") or (
            oracle.objective_s is not None and exact.objective_s is not None
            and abs(oracle.objective_s - exact.objective_s) <= exact.stats.get("rounding_bound_s", 0) + 1e-12
        )
        print(f"| {name} | {oracle_s:.2f} | {exact_s:.2f} | {oracle_s / exact_s:.1f}x | {'yes' if same else 'NO'} |",
              flush=True)
    _ = TrainingTask


if __name__ == "__main__":
    main()
