"""`solve` and `compare` on a DLRM task (embedding sharding; solvers.recsys). The commands'
modules route here when the task's model is a DLRM."""

from __future__ import annotations

import argparse
import sys

from planner.cli.common import check_output, check_plan_matches, dump_json, invalid_plan
from planner.core.errors import InputError, PlannerError

DEFAULT_COMPARE = "cpsat,greedy,madmax-mp,row-wise"
"""`planner compare`'s solvers on a DLRM task when --solvers is left at its (LLM) default."""


def _options(args: argparse.Namespace):
    from planner.cli.common import COMMAND_START
    from solvers import SolveOptions

    return SolveOptions(time_limit_s=args.time_limit, deadline=COMMAND_START[0] + args.time_limit,
                        workers=args.workers, seed=args.seed, log=args.log)


def _refuse_llm_flags(args: argparse.Namespace) -> None:
    llm_only = {"max_vpp": ("--max-vpp", None), "max_mbs": ("--max-mbs", 16), "max_configs": ("--max-configs", 25),
                "axis_orders": ("--axis-orders", "tp-inner"), "no_hsdp": ("--no-hsdp", False),
                "tp_across_tiers": ("--tp-across-tiers", False)}
    given = [flag for key, (flag, default) in llm_only.items() if getattr(args, key, default) != default]
    if given:
        raise InputError(f"{given[0]}: an LLM search flag; it does not apply to a DLRM task ({args.task})")


def solve(args: argparse.Namespace, problem) -> int:
    from planner.core.plan_files import plan_document, save_plan
    from planner.recsys.loads import plan_loads
    from planner.report.recsys import recsys_estimate_json, render_recsys_estimate
    from planner.report.solve import proof_line
    from solvers.recsys import RECSYS_SOLVERS, solve_recsys

    _refuse_llm_flags(args)
    if args.solver not in RECSYS_SOLVERS:
        raise PlannerError(f"--solver: {args.solver[:40]!r} is not a DLRM solver; choose from "
                           f"{', '.join(RECSYS_SOLVERS)}")
    from planner.cli.export import RECSYS_TARGETS, recsys_export_text
    from planner.export.base import ExportError

    if args.export and args.export not in RECSYS_TARGETS:
        raise InputError(f"--export {args.export}: a DLRM plan exports to {' or '.join(RECSYS_TARGETS)}")
    if args.check_with or args.target_version:
        raise InputError("--check-with and --target-version apply to the LLM export targets")
    check_output(args.output, problem.files)
    (result,) = solve_recsys(problem, [args.solver], _options(args))
    loads = plan_loads(problem, result.plan) if result.plan is not None else None
    # As on an LLM task: the result is shown (and saved) whatever happens to the export.
    exported = export_error = None
    export_code = 0
    if args.export and result.plan is not None:
        try:
            exported = recsys_export_text(problem, result.plan, args.export)
        except ExportError as exc:
            export_error, export_code = str(exc), 4
        except PlannerError as exc:
            export_error, export_code = str(exc), 2
    if args.json:
        out = {
            "family": "dlrm", "solver": result.solver, "status": result.status, "objective_s": result.objective_s,
            "best_bound_s": result.best_bound_s, "gap": result.gap, "wall_time_s": result.wall_time_s,
            "stats": result.stats, "notes": result.notes, "infeasibility": result.infeasibility,
            "plan": plan_document(result.plan) if result.plan else None,
            "estimate": recsys_estimate_json(problem, result.plan, result.breakdown, loads) if loads is not None else None,
        }
        if args.export and result.plan is not None:
            out["export"] = {"target": args.export, "text": exported, "error": export_error}
        print(dump_json(out))
    else:
        print(proof_line(result))
        if result.stats:
            print("search: " + ", ".join(f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else
                                         f"{k.replace('_', ' ')} {v}" for k, v in result.stats.items()))
        for note in result.notes:
            print(f"note: {note}")
        if result.infeasibility:
            print(f"infeasible: {result.infeasibility}")
        if loads is not None:
            print()
            print(render_recsys_estimate(problem, result.plan, result.breakdown, loads))
        if exported is not None:
            print()
            print(exported, end="")
    if args.output and result.plan is not None:
        save_plan(result.plan, args.output, problem.files)
        if not args.json:
            print(f"\nplan written to {args.output}")
    if export_error is not None:
        print(f"error: --export {args.export}: {export_error}", file=sys.stderr)
    if result.plan is None:
        return 3
    return export_code


def compare(args: argparse.Namespace, problem, default_solvers: str) -> int:
    from planner.recsys.cost import evaluate
    from planner.recsys.plan import check_plan
    from planner.recsys.plan_io import load_sharding_plan
    from planner.report.recsys import problem_line, recsys_compare_rows
    from solvers import SolveResult
    from solvers.recsys import RECSYS_SOLVERS, solve_recsys

    _refuse_llm_flags(args)
    text = DEFAULT_COMPARE if args.solvers == default_solvers else args.solvers
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names and not args.plan:
        raise PlannerError("--solvers: no solver named; give at least one (e.g. cpsat,greedy) or a --plan")
    unknown = [n for n in names if n not in RECSYS_SOLVERS]
    if unknown:
        raise PlannerError(f"--solvers: {unknown[0][:40]!r} is not a DLRM solver; choose from {', '.join(RECSYS_SOLVERS)}")
    if len(set(names)) != len(names):
        raise PlannerError("--solvers: a solver is named twice")
    given = []
    for path in args.plan or []:
        plan = load_sharding_plan(path)
        check_plan_matches(plan, problem, path, args.task)
        errors = check_plan(plan, problem)
        if errors:
            raise invalid_plan(path, args.task, errors)
        given.append((path, plan))
    results = solve_recsys(problem, names, _options(args))
    rows = list(zip(names, results, strict=True))
    for path, plan in given:
        b = evaluate(problem, plan)
        rows.append((f"plan {path}", SolveResult(solver="user", status="GIVEN", plan=plan, objective_s=b.step_time_s,
                                                 breakdown=b)))
    table, records = recsys_compare_rows(rows)
    if args.json:
        print(dump_json({"family": "dlrm", "problem_hash": problem.hash, "rows": records}))
    else:
        print(problem_line(problem))
        print()
        print(table)
        for note in next((r.notes for label, r in rows if label == "torchrec"), []):
            print(f"torchrec: {note}")
    return 0 if any(r.breakdown is not None and r.breakdown.fits for _, r in rows) else 3
