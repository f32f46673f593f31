"""Benchmark: CP-SAT solve time and status on large published setups, a sweep of GPU counts,
and CP-SAT vs the exhaustive oracle on the same (small) spaces in one run.

Run by hand:  .venv/bin/python benchmarks/solve_scaling.py [--time-limit 10]
              .venv/bin/python benchmarks/solve_scaling.py --command-wall  (whole `planner solve`
              commands, interpreter start to exit, against --time-limit 1, 2 and 10)
              .venv/bin/python benchmarks/solve_scaling.py --two-seconds  (the four issue-12 cases:
              whole `planner solve` commands, median of 3, beside the search with the table bounds
              off for dense models, i.e. the search as it was before them, in the same run)
              .venv/bin/python benchmarks/solve_scaling.py --free-batch  (the benchmark tasks with
              the global batch fixed, and free between 3/4 of it and it: what the free batch buys)
              .venv/bin/python benchmarks/solve_scaling.py --moe  (MoE models: EP, ETP,
              dispatcher and EP overlap searched; the size of the space; what alignment excludes)
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

from planner.llm.problem import load_problem  # noqa: E402
from planner.llm.space import SpaceOptions  # noqa: E402
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
                                   "--time-limit", str(limit), "--json"], capture_output=True, text=True,
                                  check=False)
            wall = time.perf_counter() - start
            try:
                data = json.loads(done.stdout)
                status, gap = data["status"], data["gap"]
            except (ValueError, KeyError):
                status, gap = f"exit {done.returncode}", None
            shown = f"{100 * gap:.2f}%" if gap is not None else "-"
            print(f"| {name} | {limit} | {wall:.2f} | {wall - limit:+.2f} | {status} | {shown} |", flush=True)


TWO_SECOND_TASKS = ["gpt3-175b-4096xa100", "megatron-1t-3072xa100", "llama3-405b-16384xh100",
                    "llama3-405b-65536xh100"]


def two_seconds(runs: int = 3) -> None:
    """Whole `planner solve TASK` commands (default 10 s limit), median wall of `runs`, and the
    in-process search with solvers.cpsat.TABLE_BOUNDS_FOR_DENSE off (the dense search before
    the table bounds) beside it."""
    import statistics

    from solvers import cpsat

    planner = Path(sys.executable).parent / "planner"
    print("| task | status | step s | gap | median wall s | walls s | table bounds off: status | gap | wall s |")
    print("|---|---|---:|---:|---:|---|---|---:|---:|")
    for name in TWO_SECOND_TASKS:
        walls, data = [], {}
        for _ in range(runs):
            start = time.perf_counter()
            done = subprocess.run([str(planner), "solve", str(ROOT / "problems" / "tasks" / f"{name}.yaml"), "--json"],
                                  capture_output=True, text=True, check=False)
            walls.append(time.perf_counter() - start)
            data = json.loads(done.stdout) if done.returncode == 0 else {"status": f"exit {done.returncode}"}
        problem = load_problem(ROOT / "problems" / "tasks" / f"{name}.yaml")
        cpsat.TABLE_BOUNDS_FOR_DENSE = False
        try:
            start = time.perf_counter()
            old = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=10.0))
            old_wall = time.perf_counter() - start
        finally:
            cpsat.TABLE_BOUNDS_FOR_DENSE = True
        gap = data.get("gap")
        old_gap = f"{100 * old.gap:.2f}%" if old.gap is not None else "-"
        step = data.get("objective_s")
        print(f"| {name} | {data.get('status')} | {step:.3f} | {100 * (gap or 0):.2f}% | {statistics.median(walls):.2f} | "
              f"{', '.join(f'{w:.2f}' for w in walls)} | {old.status} ({old.objective_s:.3f}) | {old_gap} | "
              f"{old_wall:.1f} |", flush=True)


def moe_problems() -> list[tuple[str, object]]:
    """The MoE benchmark problems, built from shipped presets (sources in each comment)."""
    from planner.llm.problem import Problem, load_cluster, load_model

    def make(model, cluster, n, batch, seq, precision, label, nvlink=None):
        c = load_cluster(cluster, num_devices=n)
        if nvlink is not None:
            c = c.model_copy(update={"tiers": [c.tiers[0].model_copy(update={"bandwidth_bytes_per_s": nvlink}),
                                               *c.tiers[1:]]})
        task = TrainingTask(global_batch_size=batch, seq_len=seq, precision=precision)
        return label, Problem(model=load_model(model), cluster=c, task=task, source=label)

    return [
        # DeepSeek-V3 technical report: 2048 H800, batch 15360 x 4096, fp8. H100 nodes, and an
        # H800-like variant with NVLink at 200 GB/s per direction (400 GB/s bidirectional).
        make("deepseek-v3", "dgx-h100", 2048, 15360, 4096, "fp8", "deepseek-v3-2048xh100"),
        make("deepseek-v3", "dgx-h100", 2048, 15360, 4096, "fp8", "deepseek-v3-2048xh800-like", nvlink=200e9),
        ("deepseek-v3-1024xh100", load_problem(ROOT / "problems" / "tasks" / "deepseek-v3-1024xh100.yaml")),
        make("qwen3-235b-a22b", "dgx-h100", 256, 2048, 4096, "fp8", "qwen3-235b-a22b-256xh100"),
        make("mixtral-8x22b", "dgx-h100", 64, 256, 4096, "bf16", "mixtral-8x22b-64xh100"),
        make("gpt-oss-120b", "gb200-nvl72", 72, 288, 4096, "bf16", "gpt-oss-120b-72xgb200-nvl72"),
        ("qwen3-30b-a3b-16xh100", load_problem(ROOT / "problems" / "tasks" / "qwen3-30b-a3b-16xh100.yaml")),
    ]


def space_sizes(problem) -> tuple[int, int, int]:
    """(configurations without the expert decisions, with them, after exact duplicates)."""
    import numpy as np

    from planner.llm.space import enumerate_within
    from solvers.cpsat import dominance_filter

    every, _ = enumerate_within(problem, options=SpaceOptions())
    base = np.stack([every.tp, every.cp, every.pp, every.dp, every.virtual_stages, every.micro_batch_size, every.sp,
                     every.tp_comm_overlap, every.zero_stage, every.recompute, every.axis_order, every.shard_size])
    distinct = len(np.unique(base, axis=1).T) if len(every) else 0
    return distinct, len(every), int(dominance_filter(problem, every).sum())


def moe(time_limit: float) -> None:
    options = SolveOptions(time_limit_s=time_limit)
    print("## MoE models (EP, ETP, dispatcher and EP overlap searched; aligned stage partitions)\n")
    print("| case | status | step s | gap | wall s | configurations | pruned by time bound | rounds | plan |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for label, problem in moe_problems():
        start = time.perf_counter()
        result = SOLVERS["cpsat"].solve(problem, options)
        wall = time.perf_counter() - start
        plan = result.plan.summary() if result.plan else (result.infeasibility or "; ".join(result.notes))[:60]
        objective = f"{result.objective_s:.3f}" if result.objective_s is not None else "-"
        gap = f"{100 * result.gap:.2f}%" if result.gap is not None else "-"
        st = result.stats
        print(f"| {label} | {result.status} | {objective} | {gap} | {wall:.1f} | {st.get('configurations', '-')} | "
              f"{st.get('pruned_by_time_bound', '-')} | {st.get('rounds', '-')} | {plan} |", flush=True)
    print("\n## Size of the space\n")
    print("| case | without expert decisions | with them | after exact duplicates |")
    print("|---|---:|---:|---:|")
    for label, problem in moe_problems():
        if label in ("deepseek-v3-1024xh100", "qwen3-30b-a3b-16xh100"):
            base, full, kept = space_sizes(problem)
            print(f"| {label} | {base} | {full} | {kept} |", flush=True)


FREE_BATCH_TASKS = ["gpt3-175b-1024xa100", "gpt3-175b-4096xa100", "megatron-1t-3072xa100", "llama3-70b-64xh100"]


def free_batch(time_limit: float, runs: int = 3) -> None:
    """Each task as published (fixed batch B) and with the batch free in 3/4 B .. B (a range of
    sequences), solved in process `runs` times each: the plans, tokens/s, median solve time and
    the size of the space."""
    import statistics

    from planner.llm.problem import Problem
    from planner.llm.task import BatchRange

    print("| task | fixed: step s, tokens/s, median solve s | free 3/4 B..B: batch, plan, tokens/s, gain, "
          "median solve s | configurations fixed -> free |")
    print("|---|---|---|---|")
    options = SolveOptions(time_limit_s=time_limit)
    for name in FREE_BATCH_TASKS:
        problem = load_problem(ROOT / "problems" / "tasks" / f"{name}.yaml")
        batch = problem.task.num_sequences
        task = problem.task.model_copy(update={"global_batch_size": BatchRange(min=3 * batch // 4, max=batch),
                                               "global_batch_tokens": None})
        free = Problem(model=problem.model, cluster=problem.cluster, task=TrainingTask.model_validate(
            task.model_dump()))
        results = {}
        for label, p in (("fixed", problem), ("free", free)):
            walls = []
            for _ in range(runs):
                start = time.perf_counter()
                result = SOLVERS["cpsat"].solve(p, options)
                walls.append(time.perf_counter() - start)
            results[label] = (result, statistics.median(walls))
        (fixed, fixed_wall), (chosen, free_wall) = results["fixed"], results["free"]
        gain = chosen.breakdown.tokens_per_s / fixed.breakdown.tokens_per_s - 1
        print(f"| {name} ({3 * batch // 4}..{batch}) | {fixed.status} {fixed.objective_s:.3f}, "
              f"{fixed.breakdown.tokens_per_s:,.0f}, {fixed_wall:.2f} | {chosen.status} "
              f"{chosen.plan.global_batch_size}, {chosen.plan.summary()}, {chosen.breakdown.tokens_per_s:,.0f}, "
              f"{100 * gain:+.2f}%, {free_wall:.2f} | {fixed.stats['configurations']:,} -> "
              f"{chosen.stats['configurations']:,} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--command-wall", action="store_true", help="only the whole-command wall times")
    parser.add_argument("--moe", action="store_true", help="only the MoE benchmarks")
    parser.add_argument("--two-seconds", action="store_true", help="only the four issue-12 cases, whole commands")
    parser.add_argument("--free-batch", action="store_true", help="only the fixed vs free global batch table")
    args = parser.parse_args()
    if args.free_batch:
        free_batch(args.time_limit)
        return
    if args.two_seconds:
        two_seconds()
        return
    if args.command_wall:
        command_wall()
        return
    if args.moe:
        moe(args.time_limit)
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
