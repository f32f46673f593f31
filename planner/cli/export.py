"""`planner export`: a plan as Megatron-LM / Megatron-Bridge / DeepSpeed / torchtitan configuration.

Exit codes: 0 written; 2 bad input (files, a plan made for another problem, an unwritable -o);
4 the target cannot express the plan (the message says why and what to change).
"""

from __future__ import annotations

import argparse
import os
import sys

from planner.cli.common import (
    check_output,
    check_plan_matches,
    check_plan_valid,
    invalid_plan,
    is_recsys,
    load_task,
    refuse_serving,
)
from planner.core.errors import PlannerError
from planner.core.files import shown
from planner.export.base import ExportError
from planner.llm.problem import load_plan

LLM_TARGETS = ["megatron", "megatron-bridge", "deepspeed", "torchtitan"]
RECSYS_TARGETS = ["torchrec", "torchrec-python"]
EXPORT_TARGETS = LLM_TARGETS + RECSYS_TARGETS


def check_export_flags(args: argparse.Namespace) -> None:
    """Refused before any work: --check-with without --to megatron, or a path that is not a
    Megatron-LM checkout; a --target-version the target does not know."""
    from planner.export import check_version

    if args.to in RECSYS_TARGETS:
        raise PlannerError(f"--to {args.to}: exports embedding-sharding (DLRM) plans; this is an LLM task")
    if args.check_with:
        if args.to != "megatron":
            raise PlannerError("--check-with checks Megatron-LM arguments; use it with --to megatron")
        from pathlib import Path

        source = Path(args.check_with) / "megatron" / "training" / "arguments.py"
        try:
            usable = source.is_file() and os.access(source, os.R_OK)
        except (OSError, ValueError):
            usable = False
        if not usable:
            raise PlannerError(f"--check-with: {shown(args.check_with)}: no readable megatron/training/arguments.py "
                               "(is this a Megatron-LM checkout?)")
    check_version(args.to, args.target_version)


def export_text(problem, plan, args) -> str:
    """The rendered export (approximation notes go to stderr); checked with --check-with."""
    from planner.export import export

    result = export(problem, plan, args.to, args.target_version)
    if args.check_with:
        from planner.export.megatron_check import check_megatron_export

        problems = check_megatron_export(result.text, args.check_with)
        if problems:
            raise ExportError(f"Megatron-LM at {args.check_with} does not accept this export:\n"
                               + "\n".join(f"  - {p}" for p in problems))
    for note in result.approximations:
        print(note, file=sys.stderr)
    return result.text


def run(args: argparse.Namespace) -> int:
    from planner.core.files import write_atomic

    problem = load_task(args.task)
    refuse_serving(problem, "export")
    if is_recsys(problem):
        return run_recsys(args, problem)
    check_export_flags(args)
    plan = load_plan(args.plan)
    inputs = [args.plan, *problem.files]
    check_output(args.output, inputs)
    check_plan_matches(plan, problem, args.plan, args.task)
    check_plan_valid(plan, problem, args.plan, args.task)
    text = export_text(problem, plan, args)
    if args.output:
        write_atomic(args.output, text, inputs)
        print(f"written to {args.output}")
    else:
        print(text, end="")
    return 0


def recsys_export_text(problem, plan, target: str) -> str:
    from planner.export.torchrec import torchrec_json, torchrec_python

    return torchrec_json(problem, plan) if target == "torchrec" else torchrec_python(problem, plan)


def run_recsys(args: argparse.Namespace, problem) -> int:
    """A DLRM task: its embedding-sharding plan as a TorchRec sharding plan (JSON or Python)."""
    from planner.core.files import write_atomic
    from planner.recsys.plan import check_plan
    from planner.recsys.plan_io import load_sharding_plan

    if args.to not in RECSYS_TARGETS:
        raise PlannerError(f"--to {args.to}: {args.task} is a DLRM task; its plans export to "
                           f"{' or '.join(RECSYS_TARGETS)}")
    if args.check_with or args.target_version:
        raise PlannerError("--check-with and --target-version apply to the LLM targets")
    plan = load_sharding_plan(args.plan)
    inputs = [args.plan, *problem.files]
    check_output(args.output, inputs)
    check_plan_matches(plan, problem, args.plan, args.task)
    errors = check_plan(plan, problem)
    if errors:
        raise invalid_plan(args.plan, args.task, errors)
    text = recsys_export_text(problem, plan, args.to)
    if args.output:
        write_atomic(args.output, text, inputs)
        print(f"written to {args.output}")
    else:
        print(text, end="")
    return 0


def add_parser(sub) -> None:
    exp = sub.add_parser(
        "export",
        help="write a plan as Megatron-LM / Megatron-Bridge / DeepSpeed / torchtitan configuration, or a "
        "DLRM plan as a TorchRec sharding plan",
        description="Render a plan for a training framework, with a header naming the problem, the "
        "prediction and the planner version. Unsupported combinations are errors (exit 4) or printed "
        "approximations.",
    )
    exp.add_argument("plan", help="plan file (from planner solve -o, or by hand), or a shipped plan's name")
    exp.add_argument("--task", required=True, help="the task YAML the plan solves (for the header and checks)")
    exp.add_argument("--to", required=True, choices=EXPORT_TARGETS)
    exp.add_argument("--target-version", help="framework version (torchtitan: 0.2 TOML or 0.3 flags)")
    exp.add_argument("--check-with", help="path to a Megatron-LM checkout: run its own parse_args and "
                     "validate_args on the export (needs a Python with torch: .venv-frameworks, or "
                     "PLANNER_FRAMEWORKS_PYTHON)")
    exp.add_argument("-o", "--output", help="write here instead of standard output (atomically)")
    exp.set_defaults(func=run)
