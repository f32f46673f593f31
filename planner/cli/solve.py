"""`planner solve`: the fastest plan that fits, with its proof; optionally saved and exported.

The result is printed before the plan file is written, so an unwritable path loses nothing
(and the path is checked before the search starts).
"""

from __future__ import annotations

import argparse
import sys

from planner.cli import progress
from planner.cli.common import (
    add_search_flags,
    check_output,
    check_searchable,
    dump_json,
    is_recsys,
    is_serving,
    load_task,
    solve_options,
)
from planner.cli.export import EXPORT_TARGETS, check_export_flags, export_text
from planner.core.errors import PlannerError
from planner.report.estimate import estimate_json, render_estimate


def run(args: argparse.Namespace) -> int:
    from planner.export.base import ExportError
    from planner.llm.plan_io import plan_document, save_plan
    from planner.report.solve import proof_line, stats_line
    from solvers import SOLVERS

    problem = load_task(args.task)
    if is_serving(problem):
        from planner.cli import serving_commands

        if args.disaggregated:
            from planner.cli import serving_disagg

            if args.solver not in ("cpsat", "serving-disaggregated"):
                raise PlannerError(f"--solver {args.solver[:40]!r}: --disaggregated runs the serving-disaggregated "
                                   "search; drop --solver")
            return serving_disagg.solve(args, problem)
        return serving_commands.solve(args, problem)
    if args.disaggregated:
        raise PlannerError(f"--disaggregated: prefill/decode disaggregation is for inference tasks; {args.task} is a "
                           f"{'DLRM' if is_recsys(problem) else 'training'} task")
    if args.pareto:
        raise PlannerError(f"--pareto: the Pareto front of throughput per GPU against TPOT is for inference tasks; "
                           f"{args.task} is a training task")
    if is_recsys(problem):
        from planner.cli import recsys_commands

        return recsys_commands.solve(args, problem)
    check_searchable(problem)
    if args.solver not in SOLVERS:
        raise PlannerError(f"--solver: unknown solver {args.solver[:40]!r}; choose from {', '.join(SOLVERS)}")
    check_output(args.output, problem.files)
    if args.export:
        args.to = args.export
        check_export_flags(args)
    elif args.check_with or args.target_version:
        raise PlannerError("--check-with and --target-version apply to --export; add --export TARGET")
    options = solve_options(args)
    status = None
    if progress.wanted(args):  # a status line on a terminal, erased before the result is printed
        import dataclasses

        status = progress.StatusLine()
        options = dataclasses.replace(options, progress=lambda event: status.update(progress.search_text(event)))
    try:
        result = SOLVERS[args.solver].solve(problem, options)
    finally:
        if status is not None:
            status.clear()
    # The result is shown (and saved) whatever happens to the export.
    exported = export_error = None
    export_code = 0
    if args.export and result.plan is not None:
        try:
            exported = export_text(problem, result.plan, args)
        except ExportError as exc:
            export_error, export_code = str(exc), 4
        except PlannerError as exc:
            export_error, export_code = str(exc), 2
    if args.json:
        out = {
            "solver": result.solver, "status": result.status, "objective_s": result.objective_s,
            "best_bound_s": result.best_bound_s, "gap": result.gap, "wall_time_s": result.wall_time_s,
            "interrupted": result.interrupted,
            "stats": result.stats, "notes": result.notes, "infeasibility": result.infeasibility,
            "plan": plan_document(result.plan) if result.plan else None,
            "estimate": estimate_json(problem, result.plan, result.breakdown) if result.breakdown else None,
        }
        if args.export and result.plan is not None:
            out["export"] = {"target": args.export, "text": exported, "error": export_error}
        print(dump_json(out))
    else:
        print(proof_line(result))
        line = stats_line(result)
        if line:
            print(line)
        for note in result.notes:
            print(f"note: {note}")
        if result.infeasibility:
            print(f"infeasible: {result.infeasibility}")
        if result.plan is not None and result.breakdown is not None:
            print()
            print(render_estimate(problem, result.plan, result.breakdown))
        if exported is not None:
            print()
            print(exported, end="")
    if args.output and result.plan is not None:
        save_plan(result.plan, args.output, problem.files)
        if not args.json:
            print(f"\nplan written to {args.output}")
    if export_error is not None:
        print(f"error: --export {args.export}: {export_error}", file=sys.stderr)
    if result.interrupted:
        return 130
    if result.plan is None:
        return 3
    return export_code


def add_parser(sub) -> None:
    sol = sub.add_parser(
        "solve",
        help="find the fastest plan that fits, with a proof (status, bound, gap)",
        description="Search the plan space with a solver (default: CP-SAT, exact). Exit codes: 0 a plan, "
        "2 bad input, 3 no plan (infeasible, or none found in time), 4 --export cannot express the plan (the "
        "plan is still printed and saved), 130 interrupted (the best plan so far is printed and saved).",
    )
    sol.add_argument("task", help="task YAML, or the name of a shipped task (problems/tasks/)")
    sol.add_argument("--solver", default="cpsat", help="cpsat | exhaustive | megatron-rules | fsdp-only | greedy "
                     "(DLRM tasks: cpsat | exhaustive | greedy | madmax-mp | row-wise; inference tasks: the exact serving search)")
    sol.add_argument("-o", "--output", help="write the plan here (.json for JSON, else YAML); written atomically")
    sol.add_argument("--export", choices=EXPORT_TARGETS, help="also print the plan as this framework's configuration")
    sol.add_argument("--target-version", help="framework version for --export")
    sol.add_argument("--check-with", help="Megatron-LM checkout whose own parser checks the --export megatron")
    sol.add_argument("--pareto", action="store_true",
                     help="inference tasks: also print the Pareto front of output tokens/s per GPU against TPOT")
    sol.add_argument("--disaggregated", action="store_true",
                     help="inference tasks: search prefill/decode disaggregated deployments (a prefill pool and a "
                     "decode pool), shown beside the best colocated one")
    add_search_flags(sol)
    sol.set_defaults(func=run)
