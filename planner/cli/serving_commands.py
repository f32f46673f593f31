"""`planner solve` and `planner compare` on an inference task: the exact serving search
(solvers.serving), its Pareto front of throughput per GPU against TPOT, and the issue's baselines."""

from __future__ import annotations

import argparse
import time

from planner.cli.common import COMMAND_START, check_output, check_plan_matches, dump_json, invalid_plan
from planner.core.errors import InputError
from planner.core.units import format_seconds

SERVING_SOLVERS = ("serving-exhaustive",)
"""The serving family's solver names (`cpsat`, the command's default, picks it too)."""


def _check_solver(name: str, flag: str) -> None:
    if name not in ("cpsat", *SERVING_SOLVERS):
        raise InputError(f"{flag}: {name[:40]!r} is not a serving solver; an inference task is searched exactly by "
                         f"{', '.join(SERVING_SOLVERS)} (the default)")


def _deadline(args: argparse.Namespace) -> float:
    return COMMAND_START[0] + args.time_limit


def proof_line(result) -> str:
    """The serving searches' proof: status, objective, bound, gap, wall time."""
    parts = [f"solver {result.solver}: {result.status}"]
    if result.objective_tokens_per_s_per_gpu is not None:
        parts.append(f"objective {result.objective_tokens_per_s_per_gpu:,.1f} output tokens/s per GPU")
    if result.best_bound_tokens_per_s_per_gpu is not None:
        parts.append(f"best bound {result.best_bound_tokens_per_s_per_gpu:,.1f}")
    if result.gap is not None:
        parts.append(f"gap {100 * result.gap:.2f}%")
    parts.append(f"wall {result.wall_time_s:.2f} s")
    return ", ".join(parts)


def _space_line(result, problem, pareto: bool = False) -> str:
    axes = "tp x pp x dp"
    if problem.model.family == "moe":
        axes += " x ep" + (" x dp_attention" if problem.model.latent_attention else "")
    rest = result.space_size - result.evaluated
    tail = ""
    if rest > 0 and result.status in ("OPTIMAL", "INFEASIBLE"):
        tail = ", the rest bounded below the optimum" if result.status == "OPTIMAL" else ", the rest miss a target"
        if pareto:
            tail += " or dominated on the front"
    return (f"search: {result.layouts} layouts ({axes}), {result.space_size:,} configurations with "
            f"max_num_seqs, {result.evaluated:,} priced by the cost model{tail}")


def _stamped(problem, result):
    from planner.core.provenance import Provenance

    return result.plan.model_copy(update={"provenance": Provenance(
        solver=result.solver, status=result.status.lower(),
        objective_tokens_per_s_per_gpu=result.objective_tokens_per_s_per_gpu,
        best_bound_tokens_per_s_per_gpu=result.best_bound_tokens_per_s_per_gpu, gap=result.gap,
        wall_time_s=result.wall_time_s, problem_hash=problem.hash)})


def _pareto_rows(problem, front) -> tuple[str, list[dict]]:
    from planner.report.estimate import table

    target = problem.task.targets.tpot_s
    rows, records = [], []
    for p in front:
        e = p.estimate
        met = target is None or e.tpot_s <= target
        rows.append([p.plan.summary(), f"{e.batch_per_replica:,}", format_seconds(e.tpot_s),
                     format_seconds(e.ttft_max_s), f"{e.output_tokens_per_s_per_gpu:,.1f}",
                     "-" if target is None else ("yes" if met else "no")])
        records.append({"plan": p.plan.model_dump(mode="json", exclude={"provenance"}),
                        "batch_per_replica": e.batch_per_replica, "tpot_s": e.tpot_s, "ttft_max_s": e.ttft_max_s,
                        "output_tokens_per_s_per_gpu": e.output_tokens_per_s_per_gpu,
                        "tpot_target_met": None if target is None else met})
    text = table(rows, ["plan", "seqs/replica", "TPOT", "TTFT", "tok/s/GPU", "meets TPOT"]) if rows else "(empty)"
    return text, records


def solve(args: argparse.Namespace, problem) -> int:
    from planner.core.plan_files import plan_document, save_plan
    from planner.report.serving import render_serving_estimate, serving_estimate_json
    from solvers.serving import solve_serving

    _check_solver(args.solver, "--solver")
    if args.export:
        raise InputError(f"--export {args.export}: solve --export writes training and DLRM configurations; a serving "
                         f"plan exports with planner export (e.g. planner export {problem.source} --to vllm, which "
                         "solves and exports; or -o PLAN here, then planner export PLAN --task TASK --to "
                         "vllm|sglang|trtllm)")
    if args.check_with or args.target_version:
        raise InputError("--check-with and --target-version apply to solve --export, which writes training and DLRM "
                         "configurations; serving plans export with planner export")
    check_output(args.output, problem.files)
    result = solve_serving(problem, _deadline(args), pareto=args.pareto)
    plan = _stamped(problem, result) if result.plan is not None else None
    front_text, front_records = _pareto_rows(problem, result.pareto) if args.pareto else ("", [])
    if args.json:
        out = {
            "family": "serving", "solver": result.solver, "status": result.status,
            "objective_tokens_per_s_per_gpu": result.objective_tokens_per_s_per_gpu,
            "best_bound_tokens_per_s_per_gpu": result.best_bound_tokens_per_s_per_gpu, "gap": result.gap,
            "wall_time_s": result.wall_time_s, "interrupted": result.interrupted,
            "space": {"layouts": result.layouts, "configurations": result.space_size, "priced": result.evaluated},
            "notes": result.notes, "infeasibility": result.infeasibility,
            "plan": plan_document(plan) if plan is not None else None,
            "estimate": serving_estimate_json(problem, plan, result.best.estimate) if plan is not None else None,
        }
        if args.pareto:
            out["pareto"] = front_records
        print(dump_json(out))
    else:
        print(proof_line(result))
        print(_space_line(result, problem, args.pareto))
        for note in result.notes:
            print(f"note: {note}")
        if result.infeasibility:
            print(f"infeasible: {result.infeasibility}")
        if plan is not None:
            print()
            print(render_serving_estimate(problem, plan, result.best.estimate))
        if args.pareto:
            ttft = problem.task.targets.ttft_s
            print()
            print(f"Pareto front: output tokens/s per GPU against TPOT ({len(result.pareto)} points; configurations "
                  "that fit" + (f" and meet the {format_seconds(ttft)} TTFT target" if ttft is not None else "")
                  + ", the TPOT target ignored)")
            print(front_text)
    if args.output and plan is not None:
        save_plan(plan, args.output, problem.files)
        if not args.json:
            print(f"\nplan written to {args.output}")
    if result.interrupted:
        return 130
    return 0 if plan is not None else 3


def compare(args: argparse.Namespace, problem, default_solvers: str) -> int:
    from planner.report.estimate import table
    from planner.report.serving import problem_line
    from planner.serving.cost import evaluate
    from planner.serving.plan import ServingPlan, check_plan
    from solvers.serving import baseline_plans, solve_serving, violations

    if args.solvers != default_solvers:
        for name in (n.strip() for n in args.solvers.split(",") if n.strip()):
            _check_solver(name, "--solvers")
    given = []
    from planner.cli.serving_disagg import load_plan
    from planner.serving.disagg import check_disaggregated, evaluate_disaggregated

    for path in args.plan or []:
        plan = load_plan(path)  # a colocated serving plan, or one with prefill and decode pools
        check_plan_matches(plan, problem, path, args.task)
        errors = check_plan(plan, problem) if isinstance(plan, ServingPlan) else check_disaggregated(plan, problem)
        if errors:
            raise invalid_plan(path, args.task, errors)
        given.append((f"plan {path}", plan))
    started = time.perf_counter()
    result = solve_serving(problem, _deadline(args))
    rows: list[tuple[str, str, object, object, str]] = [
        (result.solver, result.status, result.plan, result.best.estimate if result.best else None,
         result.infeasibility or "; ".join(result.notes))]
    if getattr(args, "disaggregated", False):
        from planner.cli.serving_disagg import compare_row

        rows.append(compare_row(problem, _deadline(args)))
    for label, plan, why in baseline_plans(problem):
        rows.append((label, "BASELINE", plan, evaluate(problem, plan) if plan is not None else None, why))
    for label, plan in given:
        priced = evaluate(problem, plan) if isinstance(plan, ServingPlan) else evaluate_disaggregated(problem, plan)
        rows.append((label, "GIVEN", plan, priced, ""))
    feasible = [e for _, _, _, e, _ in rows if e is not None and not violations(problem, e)]
    best = max((e.output_tokens_per_s_per_gpu for e in feasible), default=None)
    text_rows, records = [], []
    for label, status, plan, e, why in rows:
        broken = violations(problem, e) if e is not None else []
        vs = (f"{100 * (e.output_tokens_per_s_per_gpu / best - 1):+.1f}%" if e is not None and best and not broken
              else "-")
        text_rows.append([label, status, plan.summary() if plan is not None else "-",
                          f"{e.batch_per_replica:,}" if e else "-",
                          f"{e.output_tokens_per_s_per_gpu:,.1f}" if e else "-",
                          format_seconds(e.tpot_s) if e else "-", format_seconds(e.ttft_max_s) if e else "-",
                          "yes" if e is not None and not broken else ("misses " + ", ".join(broken) if e else "no plan"),
                          vs])
        records.append({"method": label, "status": status,
                        "plan": plan.model_dump(mode="json", exclude={"provenance"}) if plan is not None else None,
                        "batch_per_replica": e.batch_per_replica if e else None,
                        "output_tokens_per_s_per_gpu": e.output_tokens_per_s_per_gpu if e else None,
                        "tpot_s": e.tpot_s if e else None, "ttft_max_s": e.ttft_max_s if e else None,
                        "feasible": e is not None and not broken, "violations": broken,
                        "vs_best": (e.output_tokens_per_s_per_gpu / best - 1) if e is not None and best and not broken
                        else None, "note": why or None})
    text = table(text_rows, ["method", "status", "plan", "seqs/replica", "tok/s/GPU", "TPOT", "TTFT", "feasible",
                             "vs best"])
    if args.json:
        print(dump_json({"family": "serving", "problem_hash": problem.hash, "interrupted": result.interrupted,
                         "wall_time_s": time.perf_counter() - started, "rows": records}))
    else:
        print(problem_line(problem))
        print()
        print(text)
        for label, _, _, _, why in rows:
            if why:
                print(f"{label}: {why}")
    if result.interrupted:
        return 130
    return 0 if feasible else 3
