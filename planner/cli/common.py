"""What every command shares: checked flag types, the plan given by flags, the search flags,
JSON output without NaN, and the check of an output path before any work is done."""

from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any

from planner.llm.plan import Plan
from planner.llm.problem import build, load_plan

_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")


def integer(low: int, high: int):
    """An argparse type: an integer in [low, high] (the message names the range)."""

    def parse(text: str) -> int:
        if not _INTEGER.fullmatch(text):  # ASCII digits only: int() also takes "1_0" and "٨"
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high:,}, got {text[:40]}")
        return value

    parse.__name__ = "integer"
    return parse


def seconds(high: float):
    """An argparse type: a finite number of seconds in (0, high]."""

    def parse(text: str) -> float:
        if not _DECIMAL.fullmatch(text):
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text[:40]!r}")
        value = float(text)
        if not math.isfinite(value) or not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"must be a finite number of seconds in (0, {high:g}], got {text[:40]}")
        return value

    parse.__name__ = "seconds"
    return parse


DEGREE = integer(1, 2**24)
"""A parallel degree on the command line."""


def recompute_modules(text: str) -> list[str]:
    """`--recompute-modules layernorm,moe_act`: Megatron-Core module names, comma-separated."""
    from typing import get_args

    from planner.llm.task import RecomputeModule

    allowed = get_args(RecomputeModule)
    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if n not in allowed]
    if not text.strip() or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(allowed)}; got {text[:60]!r}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a module is listed twice in {text[:60]!r}")
    return names


recompute_modules.__name__ = "recompute modules"

PLAN_FLAGS = {
    "tp": "--tp",
    "cp": "--cp",
    "pp": "--pp",
    "dp": "--dp",
    "virtual_stages": "--vpp",
    "micro_batch_size": "--mbs",
    "global_batch_size": "--gbs",
    "zero_stage": "--zero",
    "recompute": "--recompute",
    "recompute_modules": "--recompute-modules",
    "schedule": "--schedule",
    "sp": "--sp",
    "tp_comm_overlap": "--tp-comm-overlap",
}
"""Plan fields that `estimate` takes as flags (they override --plan), and the flag of each."""


def plan_from_args(args: argparse.Namespace, num_devices: int) -> tuple[Plan, str]:
    """(the plan of `--plan` with flag overrides, or one built from the flags alone; where it
    came from, for messages: the file, the flags, or both)."""
    flags = {k: getattr(args, k) for k in PLAN_FLAGS if getattr(args, k) not in (None, False)}
    named = " ".join(PLAN_FLAGS[k] for k in flags)
    if args.plan:
        plan = load_plan(args.plan)
        if not flags:
            return plan, args.plan
        source = f"{args.plan} with {named}"
        base = plan.model_dump()
        if flags.get("recompute", "selective") != "selective" and "recompute_modules" not in flags:
            base.pop("recompute_modules", None)  # --recompute none/full replaces the plan's selective modules
        if flags.get("recompute", "full") != "full":
            base.pop("recompute_num_layers", None)  # and --recompute none/selective its full-recompute counts
        return build(Plan, base | flags, source), source
    source = f"the plan flags ({named})" if named else "the default plan (no flags)"
    if "dp" not in flags:
        flags["dp"] = max(num_devices // (flags.get("tp", 1) * flags.get("cp", 1) * flags.get("pp", 1)), 1)
    if flags.get("virtual_stages", 1) > 1:
        flags.setdefault("schedule", "interleaved")
    return build(Plan, flags, source), source


MAX_TIME_LIMIT_S = 7 * 24 * 3600.0
"""Longest --time-limit accepted (a week)."""


def add_search_flags(p: argparse.ArgumentParser) -> None:
    """Flags of `solve` and `compare`: time, workers, seed and the declared search space."""
    p.add_argument("--time-limit", type=seconds(MAX_TIME_LIMIT_S), default=10.0,
                   help="seconds for the whole command, loading and heuristics included (default 10)")
    p.add_argument("--workers", type=integer(1, 64), default=2, help="CP-SAT workers, 1-64 (default 2)")
    p.add_argument("--seed", type=integer(0, 2**31 - 1), default=0, help="CP-SAT random seed, 0-2147483647")
    p.add_argument("--max-configs", type=integer(1, 10_000), default=25,
                   help="configurations per CP-SAT round (default 25)")
    p.add_argument("--max-vpp", type=integer(1, 1024), default=None,
                   help="largest virtual-stage count searched (default: up to one layer per model chunk)")
    p.add_argument("--max-mbs", type=integer(1, 2**20), default=16, help="largest micro-batch searched")
    p.add_argument("--axis-orders", choices=["megatron", "tp-inner", "all"], default="tp-inner")
    p.add_argument("--no-hsdp", action="store_true", help="do not search HSDP sharding")
    p.add_argument("--tp-across-tiers", action="store_true", help="allow TP groups to span NVLink domains")
    p.add_argument("--log", action="store_true", help="print the CP-SAT search log")
    p.add_argument("--json", action="store_true")


def load_task(path):
    """The problem of a task file, of whichever family its model and workload are: an
    `inference` block gives a planner.serving problem; with a `training` block a DLRM model
    (`family: dlrm`) gives a planner.recsys problem, any other an LLM training problem."""
    from planner.core.inputs import find_input, read_task, task_model_family
    from planner.llm.problem import load_problem

    found = find_input(path, "tasks")
    data = read_task(found)
    if "inference" in data:
        from planner.serving.problem import load_serving_problem

        return load_serving_problem(found, data, [str(found)])
    if task_model_family(found, data) == "dlrm":
        from planner.recsys.problem import load_recsys_problem

        return load_recsys_problem(found, data, [str(found)])
    return load_problem(found)


def is_recsys(problem) -> bool:
    from planner.recsys.problem import RecsysProblem

    return isinstance(problem, RecsysProblem)


def is_serving(problem) -> bool:
    from planner.serving.problem import ServingProblem

    return isinstance(problem, ServingProblem)


def refuse_serving(problem, command: str) -> None:
    """Commands the serving family does not have yet say so (bad input, exit 2)."""
    from planner.core.errors import InputError

    if is_serving(problem):
        raise InputError(f"{problem.source}: inference: `planner {command}` does not handle inference tasks yet "
                         "(`planner estimate TASK --plan SERVING_PLAN` prices a serving plan)")


def refuse_recsys(problem, command: str) -> None:
    """Commands the DLRM family does not have yet say so (bad input, exit 2)."""
    from planner.core.errors import InputError

    if is_recsys(problem):
        raise InputError(f"{problem.source}: model: {problem.model.name} is a DLRM; `planner {command}` does not "
                         "handle embedding-sharding problems yet (`planner estimate` prices their plans)")


def check_searchable(problem) -> None:
    """Refuses (bad input, exit 2) a model the searches cannot cut into stages exactly: an MoE
    model whose explicit moe.layer_pattern is not a dense prefix followed by every P-th layer
    (planner.llm.candidates.Alignment)."""
    from planner.core.errors import InputError
    from planner.llm.candidates import alignment

    try:
        alignment(problem.model)
    except InputError as exc:
        raise InputError(f"{problem.source}: {exc}") from None


def solve_options(args: argparse.Namespace):
    """SolveOptions from the search flags."""
    from planner.llm.space import SpaceOptions
    from solvers import SolveOptions

    space = SpaceOptions(
        max_virtual_stages=args.max_vpp,
        max_micro_batch_size=args.max_mbs,
        axis_orders=args.axis_orders,
        hsdp=not args.no_hsdp,
        tp_within_tier=None if args.tp_across_tiers else 0,
    )
    return SolveOptions(
        time_limit_s=args.time_limit, deadline=COMMAND_START[0] + args.time_limit, workers=args.workers,
        seed=args.seed, space=space, max_configs=args.max_configs, log=args.log,
    )


COMMAND_START = [0.0]
"""When the running command started (time.perf_counter() seconds); set by planner.cli.main."""


def process_start() -> float:
    """When this process started, in time.perf_counter() seconds (so that --time-limit counts the
    interpreter start and the imports too); the clock now where /proc cannot tell."""
    import os
    import time

    now = time.perf_counter()
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of proc(5): start time after boot, in clock ticks
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        age_s = uptime_s - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - min(max(age_s, 0.0), 30.0)


def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dump_json(value: Any) -> str:
    """Strict JSON (no NaN/Infinity; other objects as text), indented."""
    return json.dumps(finite(value), indent=2, default=str, allow_nan=False)


def check_output(path: str | None, inputs=()) -> None:
    """Refuses an output path that cannot be written (or is an input) before any work is done."""
    from planner.core.errors import InputError
    from planner.core.files import output_problem

    if path is None:
        return
    problem = output_problem(path, list(inputs))
    if problem:
        raise InputError(f"-o/--output: {problem}")


def check_plan_matches(plan, problem, plan_path, task_path) -> None:
    """A plan file stamped with another problem's hash is refused (remove the hash to force it)."""
    from planner.core.errors import PlannerError

    plan_hash = plan.provenance.problem_hash
    if plan_hash is not None and plan_hash != problem.hash:
        raise PlannerError(
            f"{plan_path}: this plan was made for problem {plan_hash[:40]}, but {task_path} is problem "
            f"{problem.hash}; re-solve, or remove provenance.problem_hash to price it anyway"
        )


MAX_SHOWN_ERRORS = 10
"""Inconsistencies of a plan printed one per line; the rest are counted ("and N more")."""


def invalid_plan(plan_source: str, task_source: str, errors: list[str]):
    """The InputError for a plan inconsistent with its task: the first MAX_SHOWN_ERRORS
    inconsistencies, then how many more there are (a plan with 100,000 bad entries is one screen)."""
    from planner.core.errors import InputError

    lines = [f"  - {e}" for e in errors[:MAX_SHOWN_ERRORS]]
    if len(errors) > MAX_SHOWN_ERRORS:
        lines.append(f"  - and {len(errors) - MAX_SHOWN_ERRORS:,} more")
    return InputError(f"{plan_source}: this plan is invalid for {task_source}:\n" + "\n".join(lines))


def check_plan_valid(plan, problem, plan_source: str, task_source: str) -> None:
    """Every way the plan is inconsistent with the task, as one error naming both."""
    from planner.llm.plan import check_plan

    errors = check_plan(plan, problem)
    if errors:
        raise invalid_plan(plan_source, task_source, errors)
