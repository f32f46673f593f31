"""Disaggregated serving on the command line: `planner solve --disaggregated` (the prefill/decode
pool search of solvers.serving_disagg, beside the best colocated deployment), `planner estimate
--plan` on a plan with `prefill` and `decode` pools, and the row `compare --disaggregated` adds."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.cli.common import COMMAND_START, check_output, dump_json, invalid_plan
from planner.cli.serving_commands import proof_line
from planner.core.errors import InputError
from planner.core.units import format_seconds


def load_plan(path: str | Path):
    """A serving plan file: a colocated ServingPlan, or a DisaggregatedPlan when it has
    `prefill` / `decode` pools."""
    from planner.core.files import shown
    from planner.core.inputs import build
    from planner.core.plan_files import read_plan_data
    from planner.serving.disagg import DisaggregatedPlan, is_disaggregated_data
    from planner.serving.plan_io import load_serving_plan

    data, resolved = read_plan_data(path)
    if not is_disaggregated_data(data):
        return load_serving_plan(path)
    if "family" not in data:
        raise InputError(f"{resolved}: family: field required (a disaggregated serving plan has family: serving at "
                         "the top level)")
    if data.get("family") != "serving":
        raise InputError(f"{resolved}: family: a disaggregated serving plan has family: serving, got "
                         f"{shown(data.get('family'), 40)}")
    for pool in ("prefill", "decode"):
        # A pool's provenance would be dropped unread (a problem hash there is never checked):
        # the plan's provenance is the top-level one.
        if isinstance(data.get(pool), dict) and "provenance" in data[pool]:
            raise InputError(f"{resolved}: {pool}.provenance: unknown field: a pool carries no provenance; put it "
                             "at the top level of the plan (provenance: {...} beside prefill and decode)")
    return build(DisaggregatedPlan, data, str(resolved))


def checked(plan, problem, source: str, task: str):
    """The disaggregated plan, checked against the problem (clear errors naming the pool and field)."""
    from planner.serving.disagg import check_disaggregated

    errors = check_disaggregated(plan, problem)
    if errors:
        raise invalid_plan(source, task, errors)
    return plan


def estimate(args: argparse.Namespace, problem, plan) -> int:
    from planner.report.serving_disagg import disaggregated_estimate_json, render_disaggregated_estimate
    from planner.serving.disagg import evaluate_disaggregated

    checked(plan, problem, args.plan, args.task)
    e = evaluate_disaggregated(problem, plan)
    if args.json:
        print(dump_json(disaggregated_estimate_json(problem, plan, e)))
    else:
        print(render_disaggregated_estimate(problem, plan, e))
    return 0 if e.fits else 3


def _front(problem, front) -> tuple[str, list[dict]]:
    from planner.report.estimate import table

    target = problem.task.targets.tpot_s
    rows, records = [], []
    for p in front:
        e = p.estimate
        met = target is None or e.tpot_s <= target
        rows.append([p.plan.summary(), format_seconds(e.tpot_s), format_seconds(e.ttft_max_s),
                     f"{e.output_tokens_per_s_per_gpu:,.1f}", "-" if target is None else ("yes" if met else "no")])
        records.append({"plan": p.plan.model_dump(mode="json", exclude={"provenance"}), "tpot_s": e.tpot_s,
                        "ttft_max_s": e.ttft_max_s, "output_tokens_per_s_per_gpu": e.output_tokens_per_s_per_gpu,
                        "tpot_target_met": None if target is None else met})
    text = table(rows, ["plan", "TPOT", "TTFT", "tok/s/GPU", "meets TPOT"]) if rows else "(empty)"
    return text, records


def solve(args: argparse.Namespace, problem) -> int:
    """`planner solve --disaggregated` on an inference task."""
    from planner.core.plan_files import plan_document, save_plan
    from planner.core.provenance import Provenance
    from planner.report.serving_disagg import disaggregated_estimate_json, render_disaggregated_estimate
    from solvers.serving import solve_serving
    from solvers.serving_disagg import solve_disaggregated

    if args.export:
        raise InputError(f"--export {args.export}: solve --export writes training and DLRM configurations; save the "
                         f"disaggregated plan with -o PLAN, then planner export PLAN --task {problem.source} --to "
                         "sglang|vllm")
    if args.check_with or args.target_version:
        raise InputError("--check-with and --target-version apply to solve --export, which writes training and DLRM "
                         "configurations; a disaggregated plan exports with planner export PLAN --task TASK --to "
                         "sglang|vllm")
    check_output(args.output, problem.files)
    deadline = COMMAND_START[0] + args.time_limit
    result = solve_disaggregated(problem, deadline, pareto=args.pareto)
    colocated = solve_serving(problem, deadline)
    plan = None
    if result.plan is not None:
        plan = result.plan.model_copy(update={"provenance": Provenance(
            solver=result.solver, status=result.status.lower(),
            objective_tokens_per_s_per_gpu=result.objective_tokens_per_s_per_gpu,
            best_bound_tokens_per_s_per_gpu=result.best_bound_tokens_per_s_per_gpu, gap=result.gap,
            wall_time_s=result.wall_time_s, problem_hash=problem.hash)})
    versus = None
    if colocated.best is not None and result.best is not None:
        versus = result.objective_tokens_per_s_per_gpu / colocated.objective_tokens_per_s_per_gpu - 1
    front_text, front_records = _front(problem, result.pareto) if args.pareto else ("", [])
    if args.json:
        out = {
            "family": "serving", "disaggregated": True, "solver": result.solver, "status": result.status,
            "objective_tokens_per_s_per_gpu": result.objective_tokens_per_s_per_gpu,
            "best_bound_tokens_per_s_per_gpu": result.best_bound_tokens_per_s_per_gpu, "gap": result.gap,
            "wall_time_s": result.wall_time_s, "space": {"splits": result.layouts, "priced": result.evaluated},
            "notes": result.notes, "infeasibility": result.infeasibility,
            "plan": plan_document(plan) if plan is not None else None,
            "estimate": disaggregated_estimate_json(problem, plan, result.best.estimate) if plan is not None else None,
            "colocated": {"status": colocated.status,
                          "objective_tokens_per_s_per_gpu": colocated.objective_tokens_per_s_per_gpu,
                          "plan": colocated.plan.model_dump(mode="json", exclude={"provenance"})
                          if colocated.plan is not None else None},
            "vs_colocated": versus,
        }
        if args.pareto:
            out["pareto"] = front_records
        print(dump_json(out))
    else:
        print(proof_line(result))
        for note in result.notes:
            print(f"note: {note}")
        if result.infeasibility:
            print(f"infeasible: {result.infeasibility}")
        if colocated.best is not None:
            line = (f"colocated ({colocated.solver}, {colocated.status}): {colocated.plan.summary()}, "
                    f"{colocated.objective_tokens_per_s_per_gpu:,.1f} output tokens/s per GPU")
            if versus is not None:
                line += f"; disaggregated is {100 * versus:+.1f}%"
            print(line)
        else:
            print(f"colocated ({colocated.solver}): {colocated.status}"
                  + (f" ({colocated.infeasibility})" if colocated.infeasibility else ""))
        if plan is not None:
            print()
            print(render_disaggregated_estimate(problem, plan, result.best.estimate))
        if args.pareto:
            print()
            print(f"Pareto front: output tokens/s per GPU against TPOT ({len(result.pareto)} points; each split's "
                  "best prefill pool with every decode configuration searched, the TPOT target ignored)")
            print(front_text)
    if args.output and plan is not None:
        save_plan(plan, args.output, problem.files)
        if not args.json:
            print(f"\nplan written to {args.output}")
    return 0 if plan is not None else 3


def compare_row(problem, deadline: float):
    """The row `planner compare --disaggregated` adds: (label, status, plan, estimate, note)."""
    from solvers.serving_disagg import solve_disaggregated

    result = solve_disaggregated(problem, deadline)
    # Why there is no plan (infeasible), or that the time limit cut the search short.
    note = result.infeasibility or "; ".join(n for n in result.notes if n.startswith("the time limit"))
    return (result.solver, result.status, result.plan, result.best.estimate if result.best else None, note)
