"""`planner report`: one self-contained HTML file for a task (training, DLRM, inference) or a sweep result.

A training task: the methods `planner compare` runs (same solvers, flags and given plans), their
step-time breakdowns as stacked bars, the chosen plan's pipeline schedule as a Gantt chart and its
memory per stage against the device. An inference task: the serving search's Pareto front of
output tokens/s per GPU against TPOT (`planner solve --pareto`). A sweep result (`planner sweep
--json` output): its scenarios and the Pareto front of time, cost and energy. A DLRM task: the
embedding-sharding methods `planner compare` runs, their breakdowns, and the chosen plan's lookups
and memory on every rank. The output path is checked before any work; the file is written atomically.

Exit codes: 0 written; 2 bad input (or an output path that cannot be written); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from planner.cli.common import add_search_flags, check_output, dump_json, is_recsys, is_serving

DEFAULT_OUTPUT = "report.html"
DEFAULT_SOLVERS = "cpsat,megatron-rules,fsdp-only,greedy"


def _read_result(path: str):
    """The JSON document at `path` when it is a result (it has a `kind`), else None (a task)."""
    from planner.core.files import read_json
    from planner.report.html.sweep import is_sweep_document

    if not path.lower().endswith(".json") or not Path(path).is_file():
        return None
    data = read_json(path)
    return data if is_sweep_document(data) else None


def run(args: argparse.Namespace) -> int:
    from planner.core.errors import InputError
    from planner.core.files import write_atomic
    from planner.report.html.page import chart_names, render_page

    output = args.output or DEFAULT_OUTPUT
    document = _read_result(args.input)
    check_output(output, [args.input, *(args.plan or [])])
    if document is not None:
        from planner.report.html.sweep import parse_sweep, sweep_sections

        if args.plan:
            raise InputError(f"--plan: {args.input} is a sweep result; --plan goes with a training task")
        result = parse_sweep(document, args.input)
        title = f"planner report: sweep {Path(args.input).name}"
        subtitle = [result.description] if result.description else []
        sections = sweep_sections(result)
    else:
        title, subtitle, sections = _training(args)
    text = render_page(title, subtitle, sections)
    write_atomic(output, text, [args.input, *(args.plan or [])])
    charts = chart_names(sections)
    size = os.path.getsize(output)
    if args.json:
        print(dump_json({"output": output, "bytes": size, "charts": charts}))
    else:
        print(f"report written to {output} ({size / 2**20:.1f} MiB, {len(charts)} charts: {', '.join(charts)})")
    return 0


def _training(args: argparse.Namespace):
    from planner.cli.common import (
        check_plan_matches,
        check_plan_valid,
        check_searchable,
        load_task,
        solve_options,
    )
    from planner.core.errors import InputError
    from planner.llm.cost.step import evaluate
    from planner.llm.problem import load_plan
    from planner.report.html.training import training_sections
    from solvers import SOLVERS, SolveResult, run_solvers

    problem = load_task(args.input)
    if is_recsys(problem):
        return _recsys(args, problem)
    if is_serving(problem):
        return _serving(args, problem)
    check_searchable(problem)
    names = [n.strip() for n in args.solvers.split(",") if n.strip()]
    if not names and not args.plan:
        raise InputError("--solvers: no solver named; give at least one (e.g. cpsat,greedy) or a --plan")
    unknown = [n for n in names if n not in SOLVERS]
    if unknown:
        raise InputError(f"--solvers: unknown solver {unknown[0][:40]!r}; choose from {', '.join(SOLVERS)}")
    if len(set(names)) != len(names):
        raise InputError("--solvers: a solver is named twice")
    given = []
    for path in args.plan or []:
        plan = load_plan(path)
        check_plan_matches(plan, problem, path, args.input)
        check_plan_valid(plan, problem, path, args.input)
        given.append((f"plan {path}", plan))
    rows = run_solvers(problem, names, solve_options(args)) if names else []
    if any(r.interrupted for _, r in rows):
        raise KeyboardInterrupt
    for label, plan in given:
        b = evaluate(problem, plan)
        rows.append((label, SolveResult(solver="user", status="GIVEN", plan=plan, objective_s=b.step_time_s,
                                        breakdown=b)))
    task, cluster = problem.task, problem.cluster
    subtitle = [
        (f"problem  {problem.model.name} on {cluster.num_devices} x {cluster.device.name} ({cluster.name}); "
         f"{task.batch_text} x {task.seq_len} tokens/step, {task.precision}"),
        f"task     {args.input}; priced as framework profile {task.framework.profile}",
    ]
    return f"planner report: {problem.model.name} on {cluster.num_devices} x {cluster.device.name}", subtitle, \
        training_sections(problem, rows, {label for label, _ in given})


def _recsys(args: argparse.Namespace, problem):
    """A DLRM task: the embedding-sharding methods `planner compare` runs, and per-rank loads."""
    from planner.cli.common import check_plan_matches, invalid_plan
    from planner.cli.recsys_commands import DEFAULT_COMPARE, _options, _refuse_llm_flags
    from planner.core.errors import InputError
    from planner.recsys.cost import evaluate
    from planner.recsys.plan import check_plan
    from planner.recsys.plan_io import load_sharding_plan
    from planner.report.html.recsys import recsys_sections
    from planner.report.recsys import problem_line
    from solvers import SolveResult
    from solvers.recsys import RECSYS_SOLVERS, solve_recsys

    args.task = args.input
    _refuse_llm_flags(args)
    text = DEFAULT_COMPARE if args.solvers == DEFAULT_SOLVERS else args.solvers
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names and not args.plan:
        raise InputError("--solvers: no solver named; give at least one (e.g. cpsat,greedy) or a --plan")
    unknown = [n for n in names if n not in RECSYS_SOLVERS]
    if unknown:
        raise InputError(f"--solvers: {unknown[0][:40]!r} is not a DLRM solver; choose from {', '.join(RECSYS_SOLVERS)}")
    if len(set(names)) != len(names):
        raise InputError("--solvers: a solver is named twice")
    given = []
    for path in args.plan or []:
        plan = load_sharding_plan(path)
        check_plan_matches(plan, problem, path, args.input)
        errors = check_plan(plan, problem)
        if errors:
            raise invalid_plan(path, args.input, errors)
        given.append((path, plan))
    results = solve_recsys(problem, names, _options(args)) if names else []
    if any(r.interrupted for r in results):
        raise KeyboardInterrupt
    rows = list(zip(names, results, strict=True))
    for path, plan in given:
        b = evaluate(problem, plan)
        rows.append((f"plan {path}", SolveResult(solver="user", status="GIVEN", plan=plan, objective_s=b.step_time_s,
                                                 breakdown=b)))
    cluster = problem.cluster
    return f"planner report: {problem.model.name} on {cluster.num_devices} x {cluster.device.name}", \
        [problem_line(problem), f"task     {args.input}"], recsys_sections(problem, rows)


def _serving(args: argparse.Namespace, problem):
    """An inference task: the serving search with its Pareto front (`planner solve --pareto`)."""
    from planner.cli.common import COMMAND_START
    from planner.core.errors import InputError
    from planner.report.html.serving import serving_sections
    from solvers.serving import solve_serving

    if args.plan:
        raise InputError(f"--plan: {args.input} is an inference task; its report draws the serving search's front "
                         "(price a serving plan with planner estimate TASK --plan PLAN)")
    if args.solvers != DEFAULT_SOLVERS:
        raise InputError(f"--solvers: {args.input} is an inference task; its report runs the serving search")
    result = solve_serving(problem, COMMAND_START[0] + args.time_limit, pareto=True)
    if result.interrupted:
        raise KeyboardInterrupt
    from planner.report.serving import problem_line

    cluster = problem.cluster
    subtitle = [problem_line(problem), f"task     {args.input}"]
    return f"planner report: {problem.model.name} serving on {cluster.num_devices} x {cluster.device.name}", \
        subtitle, serving_sections(problem, result)


def add_parser(sub) -> None:
    rep = sub.add_parser(
        "report",
        help="one self-contained HTML file: a training task's comparison, breakdown, pipeline schedule and "
        "memory; a DLRM task's methods and per-rank loads; an inference task's throughput/TPOT front; or a sweep "
        "result's Pareto front",
        description="Write an HTML report (opens from disk, no server or network). INPUT is a training task "
        "or a DLRM task (what `planner compare` computes, drawn), an inference task (the serving front) or a sweep "
        "result (`planner sweep --json` output). Exit codes: "
        "0 written, 2 bad input, 130 interrupted.",
    )
    rep.add_argument("input", metavar="TASK_OR_SWEEP_RESULT",
                     help="task YAML or shipped task name, or a sweep result (.json)")
    rep.add_argument("--plan", action="append", help="also price and draw this plan file (repeatable)")
    rep.add_argument("--solvers", default=DEFAULT_SOLVERS, help=f"comma-separated (default {DEFAULT_SOLVERS})")
    rep.add_argument("-o", "--output", help=f"the HTML file to write (default {DEFAULT_OUTPUT})")
    add_search_flags(rep)  # --json: print what was written (path, bytes, charts) as JSON
    rep.set_defaults(func=run)


__all__ = ["add_parser", "run"]
