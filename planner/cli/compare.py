"""`planner compare`: the solver beside the heuristics and given plans, one row each.

Exit codes: 0 at least one row has a plan that fits; 3 none does; 2 bad input (a plan made for
another problem, or invalid for this one); 130 interrupted (the rows finished so far are shown).
"""

from __future__ import annotations

import argparse

from planner.cli.common import (
    add_search_flags,
    check_plan_matches,
    check_plan_valid,
    check_searchable,
    dump_json,
    is_recsys,
    is_serving,
    load_task,
    solve_options,
)
from planner.core.errors import PlannerError
from planner.llm.problem import load_plan

DEFAULT_SOLVERS = "cpsat,megatron-rules,fsdp-only,greedy"


def run(args: argparse.Namespace) -> int:
    from planner.llm.cost.step import evaluate
    from planner.report.solve import compare_rows
    from solvers import SOLVERS, SolveResult, run_solvers

    problem = load_task(args.task)
    if args.disaggregated and not is_serving(problem):
        raise PlannerError(f"--disaggregated: prefill/decode disaggregation is for inference tasks; {args.task} is a "
                           f"{'DLRM' if is_recsys(problem) else 'training'} task")
    if is_serving(problem):
        from planner.cli import serving_commands

        return serving_commands.compare(args, problem, DEFAULT_SOLVERS)
    if is_recsys(problem):
        from planner.cli import recsys_commands

        return recsys_commands.compare(args, problem, DEFAULT_SOLVERS)
    check_searchable(problem)
    options = solve_options(args)
    names = [n.strip() for n in args.solvers.split(",") if n.strip()]
    if not names and not args.plan:
        raise PlannerError("--solvers: no solver named; give at least one (e.g. cpsat,greedy) or a --plan")
    unknown = [n for n in names if n not in SOLVERS]
    if unknown:
        raise PlannerError(f"--solvers: unknown solver {unknown[0][:40]!r}; choose from {', '.join(SOLVERS)}")
    if len(set(names)) != len(names):
        raise PlannerError("--solvers: a solver is named twice")
    given = []
    for path in args.plan or []:
        plan = load_plan(path)
        check_plan_matches(plan, problem, path, args.task)
        check_plan_valid(plan, problem, path, args.task)
        given.append((path, plan))
    rows = run_solvers(problem, names, options)
    for path, plan in given:
        b = evaluate(problem, plan)
        rows.append((f"plan {path}", SolveResult(solver="user", status="GIVEN", plan=plan,
                                                 objective_s=b.step_time_s, breakdown=b)))
    text, records = compare_rows(rows)
    interrupted = any(r.interrupted for _, r in rows)
    if args.json:
        print(dump_json({"problem_hash": problem.hash, "interrupted": interrupted, "rows": records}))
    else:
        print(f"problem  {problem.model.name} on {problem.cluster.num_devices} x {problem.cluster.device.name}; "
              f"{problem.task.batch_text} x {problem.task.seq_len} tokens/step, {problem.task.precision}")
        print()
        print(text)
    if interrupted:
        return 130
    return 0 if any(r.breakdown is not None and r.breakdown.fits for _, r in rows) else 3


def add_parser(sub) -> None:
    cmp_ = sub.add_parser(
        "compare",
        help="the solver beside the heuristics (and given plans): step time, MFU, memory, gap to best",
        description="Run several solvers on one task and price given plans; one row each. Exit codes: 0 some "
        "row fits, 3 none fits, 2 bad input, 130 interrupted.",
    )
    cmp_.add_argument("task", help="task YAML, or the name of a shipped task (problems/tasks/)")
    cmp_.add_argument("--solvers", default=DEFAULT_SOLVERS,
                      help="comma-separated (add exhaustive for small problems); DLRM tasks default to "
                      "cpsat,greedy,madmax-mp,row-wise")
    cmp_.add_argument("--plan", action="append", help="also price this plan file (repeatable)")
    cmp_.add_argument("--disaggregated", action="store_true",
                      help="inference tasks: add the best prefill/decode disaggregated deployment as a row")
    add_search_flags(cmp_)
    cmp_.set_defaults(func=run)
