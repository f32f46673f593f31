"""What every command shares: the plan given by flags, the search flags and their options."""

from __future__ import annotations

import argparse

from planner.plan import Plan
from planner.problem import build, load_plan

PLAN_FLAGS = {
    "tp": int,
    "cp": int,
    "pp": int,
    "dp": int,
    "virtual_stages": int,
    "micro_batch_size": int,
    "zero_stage": int,
    "recompute": str,
    "schedule": str,
}
"""Plan fields that `estimate` takes as flags (they override --plan)."""


def plan_from_args(args: argparse.Namespace, num_devices: int) -> Plan:
    """The plan of `--plan` with flag overrides, or one built from the flags alone."""
    if args.plan:
        plan = load_plan(args.plan)
        overrides = {k: getattr(args, k) for k in PLAN_FLAGS if getattr(args, k) is not None}
        return build(Plan, plan.model_dump() | overrides, args.plan) if overrides else plan
    fields = {k: getattr(args, k) for k in PLAN_FLAGS if getattr(args, k) is not None}
    if "dp" not in fields:
        fields["dp"] = max(num_devices // (fields.get("tp", 1) * fields.get("cp", 1) * fields.get("pp", 1)), 1)
    if fields.get("virtual_stages", 1) > 1:
        fields.setdefault("schedule", "interleaved")
    return build(Plan, fields, "command line")


def add_search_flags(p: argparse.ArgumentParser) -> None:
    """Flags of `solve` and `compare`: time, workers, seed and the declared search space."""
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--workers", type=int, default=2, help="CP-SAT workers (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-configs", type=int, default=25, help="configurations per CP-SAT round")
    p.add_argument("--max-vpp", type=int, default=4, help="largest virtual-stage count searched")
    p.add_argument("--max-mbs", type=int, default=16, help="largest micro-batch searched")
    p.add_argument("--axis-orders", choices=["megatron", "tp-inner", "all"], default="tp-inner")
    p.add_argument("--no-hsdp", action="store_true", help="do not search HSDP sharding")
    p.add_argument("--tp-across-tiers", action="store_true", help="allow TP groups to span NVLink domains")
    p.add_argument("--log", action="store_true", help="print the CP-SAT search log")
    p.add_argument("--json", action="store_true")


def solve_options(args: argparse.Namespace):
    """SolveOptions from the search flags."""
    from planner.candidates import SpaceOptions
    from solvers import SolveOptions

    space = SpaceOptions(
        max_virtual_stages=args.max_vpp,
        max_micro_batch_size=args.max_mbs,
        axis_orders=args.axis_orders,
        hsdp=not args.no_hsdp,
        tp_within_tier=None if args.tp_across_tiers else 0,
    )
    return SolveOptions(
        time_limit_s=args.time_limit, workers=args.workers, seed=args.seed, space=space,
        max_configs=args.max_configs, log=args.log,
    )
