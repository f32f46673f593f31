"""`planner export`: a plan as Megatron-LM / Megatron-Bridge / DeepSpeed / torchtitan configuration,
a DLRM plan as a TorchRec sharding plan, or a serving plan as a vLLM / SGLang / TensorRT-LLM server
command or config file.

`planner export PLAN --task TASK --to TARGET` exports a plan of any family;
`planner export INFERENCE_TASK --to vllm|sglang|trtllm` solves the inference task first (the exact
serving search of `planner solve`, within --time-limit) and exports its optimum.

Exit codes: 0 written; 2 bad input (files, a plan made for another problem, an unwritable -o, a
target of another family); 3 an inference task with no feasible plan; 4 the target cannot express
the plan (the message says why and what to change).
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
    is_serving,
    load_task,
    seconds,
)
from planner.core.errors import PlannerError
from planner.core.files import shown
from planner.export.base import ExportError
from planner.llm.problem import load_plan

LLM_TARGETS = ["megatron", "megatron-bridge", "deepspeed", "torchtitan"]
RECSYS_TARGETS = ["torchrec", "torchrec-python"]
SERVING_TARGETS = ["vllm", "sglang", "trtllm"]
EXPORT_TARGETS = LLM_TARGETS + RECSYS_TARGETS
"""Targets of a training or DLRM plan (also `planner solve --export`'s choices)."""
ALL_TARGETS = EXPORT_TARGETS + SERVING_TARGETS
SERVING_FLAGS = ("format", "model", "time_limit")
"""Flags of the serving targets only (argparse dest names)."""
DEFAULT_TIME_LIMIT_S = 10.0


def check_export_flags(args: argparse.Namespace) -> None:
    """Refused before any work: --check-with without --to megatron, or a path that is not a
    Megatron-LM checkout; a --target-version the target does not know."""
    from planner.export import check_version

    if args.to in RECSYS_TARGETS:
        raise PlannerError(f"--to {args.to}: exports embedding-sharding (DLRM) plans; this is an LLM task")
    if args.to in SERVING_TARGETS:
        raise PlannerError(f"--to {args.to}: exports serving plans of an inference task; this is an LLM training task "
                           f"(its plans export to {', '.join(LLM_TARGETS)})")
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


def refuse_serving_flags(args: argparse.Namespace) -> None:
    given = [f"--{name.replace('_', '-')}" for name in SERVING_FLAGS if getattr(args, name, None) is not None]
    if given:
        raise PlannerError(f"{', '.join(given)}: apply to the serving targets ({', '.join(SERVING_TARGETS)}), not "
                           f"--to {args.to}")


def refuse_serving_target(args: argparse.Namespace, problem) -> None:
    """A serving target on a training or DLRM task: one line naming the task file and its block."""
    from planner.core.errors import InputError

    if args.to in SERVING_TARGETS:
        family, targets = ("a DLRM", RECSYS_TARGETS) if is_recsys(problem) else ("an LLM training", LLM_TARGETS)
        raise InputError(f"{problem.source}: training: --to {args.to} exports serving plans of an inference task "
                         f"(an `inference` block); this is {family} task, whose plans export to {', '.join(targets)}")


def run(args: argparse.Namespace) -> int:
    from planner.core.files import write_atomic

    if args.task is None:
        return run_task_only(args)
    problem = load_task(args.task)
    if is_serving(problem):
        return run_serving(args, problem)
    refuse_serving_target(args, problem)
    if is_recsys(problem):
        return run_recsys(args, problem)
    check_export_flags(args)
    refuse_serving_flags(args)
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
    refuse_serving_flags(args)
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


def run_task_only(args: argparse.Namespace) -> int:
    """`planner export TASK --to vllm|sglang|trtllm`: an inference task without a plan is solved
    first; anything else needs --task."""
    from pathlib import Path

    from planner.core.errors import InputError
    from planner.core.files import read_yaml
    from planner.core.inputs import find_input

    task_path = find_input(args.plan, "tasks")
    data = None
    try:
        if task_path.is_file():
            data = read_yaml(task_path)
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and "training" in data and "inference" not in data:
        if args.to in SERVING_TARGETS:
            raise InputError(f"{task_path}: training: --to {args.to} exports serving plans of an inference task (an "
                             "`inference` block); this is a training task")
        raise InputError(f"{task_path}: --task is required: a training task exports a plan of it (planner export PLAN "
                         "--task TASK --to TARGET); only an inference task exports without a plan, solved first")
    if not (isinstance(data, dict) and "inference" in data):
        plan_path = find_input(args.plan, "plans")
        exists = Path(plan_path).is_file() or task_path.is_file()
        if exists:
            raise InputError(f"{args.plan}: --task is required: give the task this plan solves (planner export PLAN "
                             "--task TASK --to TARGET); only an inference task (an `inference` block) exports without "
                             "a plan, solved first")
    problem = load_task(args.plan)  # a missing or unreadable file is reported here, naming it
    if not is_serving(problem):
        raise InputError(f"{problem.source}: training: --task is required: a training task exports a plan of it "
                         "(planner export PLAN --task TASK --to TARGET); only an inference task exports without one")
    return run_serving(args, problem, solve=True)


def run_serving(args: argparse.Namespace, problem, solve: bool = False) -> int:
    """An inference task: its serving plan (given, or solved) as a vLLM / SGLang / TensorRT-LLM export."""
    from planner.core.errors import InputError
    from planner.export.serving import export_serving
    from planner.export.serving_check import table
    from planner.serving.plan import ServingPlan, check_plan

    task_source = problem.source
    if args.to not in SERVING_TARGETS:
        raise InputError(f"{task_source}: inference: --to {args.to} exports training plans; an inference task's "
                         f"serving plans export to {', '.join(SERVING_TARGETS)}")
    if args.check_with:
        raise InputError("--check-with runs Megatron-LM's parser; serving exports are checked against the engines' "
                         "recorded flag tables on every export")
    recorded = {"vllm": "version", "sglang": "version"}.get(args.to)
    if args.target_version is not None:
        known = table(args.to).get("version") if recorded else "main"
        if args.target_version != known:
            raise InputError(f"--target-version: {args.to} exports are written for {known}, not "
                             f"{args.target_version[:40]!r}")
    if args.time_limit is not None and not solve:
        raise InputError("--time-limit: applies when an inference task is exported without a plan (solved first)")
    fmt = args.format or "command"
    if solve:
        inputs = list(problem.files)
        check_output(args.output, inputs)
        plan, source, code = solved_plan(args, problem)
        if plan is None:
            return code
    else:
        if _is_inference_task(args.plan):
            raise InputError(f"{args.plan}: inference: this is an inference task, not a serving plan; give the plan "
                             f"(planner export PLAN --task {args.task} --to {args.to}), or drop --task to solve the "
                             "task and export its optimum")
        from planner.cli.serving_disagg import load_plan

        plan = load_plan(args.plan)
        source = args.plan
        inputs = [args.plan, *problem.files]
        check_output(args.output, inputs)
        check_plan_matches(plan, problem, args.plan, args.task)
        if not isinstance(plan, ServingPlan):  # a disaggregated plan: a prefill and a decode pool
            from planner.export.serving_disagg import export_disaggregated
            from planner.serving.disagg import check_disaggregated

            errors = check_disaggregated(plan, problem)
            if errors:
                raise invalid_plan(args.plan, args.task, errors)
            result = export_disaggregated(problem, plan, args.to, fmt, args.model)
            return _write_serving(args, result, inputs, solve, source)
        errors = check_plan(plan, problem)
        if errors:
            raise invalid_plan(args.plan, args.task, errors)
    result = export_serving(problem, plan, args.to, fmt, args.model)
    return _write_serving(args, result, inputs, solve, source)


def _write_serving(args: argparse.Namespace, result, inputs, solve: bool, source: str) -> int:
    from planner.core.files import write_atomic

    for note in result.approximations:
        print(note, file=sys.stderr)
    if solve:
        print(f"plan: {source}", file=sys.stderr)
    if args.output:
        write_atomic(args.output, result.text, inputs)
        print(f"written to {args.output}")
    else:
        print(result.text, end="")
    return 0


def _is_inference_task(path: str) -> bool:
    """Whether `path` (or the preset task of that name) is a task file with an `inference` block."""
    from planner.core.files import read_yaml
    from planner.core.inputs import find_input

    try:
        found = find_input(path, "tasks")
        data = read_yaml(found) if found.is_file() else None
    except (PlannerError, OSError, ValueError):  # unreadable here: the plan loader reports it, naming the file
        return False
    return isinstance(data, dict) and "inference" in data


def checkpoint(text: str) -> str:
    """An argparse type: a checkpoint name or path written into a script (one printable word)."""
    if not text or len(text) > 1000 or not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"expected a Hugging Face id or a path without spaces, got {text[:40]!r}")
    return text


def solved_plan(args: argparse.Namespace, problem):
    """(the optimum of the serving search, how it was found, exit code when there is none)."""
    from planner.cli.common import COMMAND_START
    from planner.core.provenance import Provenance
    from solvers.serving import solve_serving

    limit = args.time_limit if args.time_limit is not None else DEFAULT_TIME_LIMIT_S
    result = solve_serving(problem, COMMAND_START[0] + limit)
    if result.plan is None:
        why = result.infeasibility or "; ".join(result.notes) or "no configuration was priced"
        print(f"{problem.source}: inference: no serving plan to export: {result.status.lower()}: {why}",
              file=sys.stderr)
        return None, "", 130 if result.interrupted else 3
    plan = result.plan.model_copy(update={"provenance": Provenance(
        solver=result.solver, status=result.status.lower(),
        objective_tokens_per_s_per_gpu=result.objective_tokens_per_s_per_gpu,
        best_bound_tokens_per_s_per_gpu=result.best_bound_tokens_per_s_per_gpu, gap=result.gap,
        wall_time_s=result.wall_time_s, problem_hash=problem.hash)})
    source = (f"{plan.summary()}, solved by {result.solver} ({result.status}, {result.space_size:,} configurations, "
              f"{result.wall_time_s:.2f} s)")
    return plan, source, 0


def add_parser(sub) -> None:
    exp = sub.add_parser(
        "export",
        help="write a plan as Megatron-LM / Megatron-Bridge / DeepSpeed / torchtitan configuration, a "
        "DLRM plan as a TorchRec sharding plan, or a serving plan as a vLLM / SGLang / TensorRT-LLM server "
        "command or config",
        description="Render a plan for a framework or serving engine, with a header naming the problem, the "
        "prediction and the planner version. Unsupported combinations are errors (exit 4) or printed "
        "approximations. An inference task given alone (no --task) is solved first and its optimum exported.",
    )
    exp.add_argument("plan", help="plan file (from planner solve -o, or by hand), or a shipped plan's name; or, "
                     "without --task, an inference task (solved first)")
    exp.add_argument("--task", help="the task YAML the plan solves (for the header and checks); required with a plan")
    exp.add_argument("--to", required=True, choices=ALL_TARGETS)
    exp.add_argument("--target-version", help="framework version (torchtitan: 0.2 TOML or 0.3 flags)")
    exp.add_argument("--check-with", help="path to a Megatron-LM checkout: run its own parse_args and "
                     "validate_args on the export (needs a Python with torch: .venv-frameworks, or "
                     "PLANNER_FRAMEWORKS_PYTHON)")
    exp.add_argument("--format", choices=["command", "config"],
                     help="serving targets: a bash script launching the server (command, the default) or the YAML "
                     "the server reads with --config (vLLM, SGLang) / --extra_llm_api_options (TensorRT-LLM)")
    exp.add_argument("--model", type=checkpoint, help="serving targets: the checkpoint to serve (Hugging Face id or path); default: "
                     "the script reads $MODEL")
    exp.add_argument("--time-limit", type=seconds(7 * 24 * 3600.0),
                     help="serving targets, an inference task without a plan: seconds for its search (default 10)")
    exp.add_argument("-o", "--output", help="write here instead of standard output (atomically)")
    exp.set_defaults(func=run)
