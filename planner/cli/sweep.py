"""`planner sweep SWEEP_FILE`: solve a grid of scenarios (GPU counts, clusters, devices, network
tiers, HBM, batch sizes, price lists) on a process pool, with cost and energy beside step time,
and the Pareto front of the three."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from planner.cli import progress
from planner.cli.common import add_search_flags, check_output, dump_json, integer, solve_options

DEFAULT_MAX_SCENARIOS = 1_000


def run(args: argparse.Namespace) -> int:
    from planner.core.files import write_atomic
    from planner.sweep.pricing import COSTS_FILE, load_costs
    from planner.sweep.render import render_table, sweep_json
    from planner.sweep.run import run_sweep
    from planner.sweep.spec import load_sweep

    started = time.perf_counter()
    costs = load_costs(args.costs or COSTS_FILE)
    sweep = load_sweep(args.sweep, args.max_scenarios, tuple(p.provider for p in costs.providers))
    check_output(args.output, [*sweep.files, args.costs or COSTS_FILE])
    options = dataclasses.replace(solve_options(args), deadline=None, time_limit_s=args.time_limit)
    num = len(sweep.scenarios)
    num_invalid = sum(s.invalid is not None for s in sweep.scenarios)
    num_unique = len({s.problem.hash for s in sweep.scenarios if s.problem is not None})
    jobs = args.jobs or os.cpu_count() or 1
    tty = not args.json and progress.is_terminal(sys.stderr)
    if not args.json:
        print(f"{num} scenarios ({num_unique} distinct problems to solve, {num_invalid} invalid), {jobs} jobs, "
              f"{args.time_limit:g} s per solve", file=sys.stderr)
    status = _Progress(sys.stderr) if tty else None
    rows, interrupted = run_sweep(sweep, options, costs, jobs, status)
    if status:
        status.clear()
    wall = time.perf_counter() - started
    document = sweep_json(sweep, rows, costs, {
        "time_limit_s": args.time_limit, "workers": args.workers, "seed": args.seed, "jobs": jobs,
        "max_configs": args.max_configs, "max_vpp": args.max_vpp, "max_mbs": args.max_mbs,
        "axis_orders": args.axis_orders, "hsdp": not args.no_hsdp, "tp_across_tiers": args.tp_across_tiers,
    }, wall, interrupted)
    print(dump_json(document) if args.json else render_table(sweep, rows, wall))
    if args.output:
        write_atomic(args.output, dump_json(document) + "\n", [*sweep.files])
        if not args.json:
            print(f"\nsweep written to {args.output}")
    if interrupted:
        return 130
    return 0 if any(r.step_time_s is not None for r in rows) else 3


class _Progress:
    """The sweep's status line (planner.cli.progress.StatusLine): done / left, and the fastest
    plan so far."""

    def __init__(self, stream):
        self.line = progress.StatusLine(stream)
        self.best = None

    def __call__(self, done: int, total: int, row) -> None:
        if row is not None and row.step_time_s is not None and (self.best is None or
                                                                 row.step_time_s < self.best.step_time_s):
            self.best = row
        best = (f", fastest so far {self.best.scenario.name}: {self.best.step_time_s:.3f} s"
                if self.best else "")
        self.line.update(f"sweep: {done}/{total} scenarios done, {total - done} left{best}")

    def clear(self) -> None:
        self.line.clear()


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="solve a grid of scenarios (GPUs, clusters, network, HBM, batch, prices): time, cost, energy, Pareto front",
        description="Expand a sweep file into scenarios (the cartesian product of its axes), solve each with the "
        "exact solver on a process pool, and print step time, tokens/s, $ and kWh per 1M tokens and the Pareto "
        "front. Exit codes: 0 at least one scenario has a plan, 2 bad input, 3 no scenario has a plan, "
        "130 interrupted (the scenarios done are printed).",
    )
    p.add_argument("sweep", help="sweep YAML, or the name of a shipped sweep (problems/sweeps/)")
    p.add_argument("--jobs", type=integer(1, 1024), default=None,
                   help="solver processes at once (default: the number of CPUs)")
    p.add_argument("--max-scenarios", type=integer(1, 10_000), default=DEFAULT_MAX_SCENARIOS,
                   help=f"refuse a grid larger than this (default {DEFAULT_MAX_SCENARIOS:,})")
    p.add_argument("--costs", help="price and power list (default: planner/data/device_costs.yaml)")
    p.add_argument("-o", "--output", help="also write the JSON document here (written atomically)")
    add_search_flags(p)
    p.set_defaults(func=run, workers=1)
    for action in p._actions:
        if action.dest == "time_limit":
            action.help = "seconds for each scenario's solve (default 10)"
        elif action.dest == "workers":
            action.help = "CP-SAT workers per scenario, 1-64 (default 1: the pool runs --jobs scenarios at once)"
