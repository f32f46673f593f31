"""Command line: `planner estimate`, `planner validate`, `planner calibrate`."""

from __future__ import annotations

import argparse
import json
import sys

from planner.cost.step import evaluate
from planner.errors import PlannerError
from planner.plan import Plan
from planner.problem import build, load_plan, load_problem
from planner.report import estimate_json, render_estimate


def _plan_from_args(args: argparse.Namespace, num_devices: int) -> Plan:
    if args.plan:
        plan = load_plan(args.plan)
        overrides = {k: getattr(args, k) for k in _PLAN_FLAGS if getattr(args, k) is not None}
        return build(Plan, plan.model_dump() | overrides, args.plan) if overrides else plan
    fields = {k: getattr(args, k) for k in _PLAN_FLAGS if getattr(args, k) is not None}
    if "dp" not in fields:
        fields["dp"] = max(num_devices // (fields.get("tp", 1) * fields.get("cp", 1) * fields.get("pp", 1)), 1)
    if fields.get("virtual_stages", 1) > 1:
        fields.setdefault("schedule", "interleaved")
    return build(Plan, fields, "command line")


_PLAN_FLAGS = {
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


def cmd_estimate(args: argparse.Namespace) -> int:
    problem = load_problem(args.task)
    plan = _plan_from_args(args, problem.cluster.num_devices)
    if args.sp:
        plan = plan.model_copy(update={"sp": True})
    if args.tp_comm_overlap:
        plan = plan.model_copy(update={"tp_comm_overlap": True})
    plan_hash = plan.provenance.problem_hash
    if plan_hash is not None and plan_hash != problem.hash:
        raise PlannerError(
            f"{args.plan}: this plan was made for problem {plan_hash}, but {args.task} is problem "
            f"{problem.hash}; re-solve, or remove provenance.problem_hash to price it anyway"
        )
    breakdown = evaluate(problem, plan)
    if args.json:
        print(json.dumps(estimate_json(problem, plan, breakdown), indent=2))
    else:
        print(render_estimate(problem, plan, breakdown))
    return 0 if breakdown.fits else 3


def _solve_options(args: argparse.Namespace):
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


def cmd_solve(args: argparse.Namespace) -> int:
    from planner.plan_io import plan_document, save_plan
    from planner.solve_report import proof_line, stats_line
    from solvers import SOLVERS

    problem = load_problem(args.task)
    if args.solver not in SOLVERS:
        raise PlannerError(f"unknown solver {args.solver!r}; choose from {', '.join(SOLVERS)}")
    result = SOLVERS[args.solver].solve(problem, _solve_options(args))
    if args.output and result.plan is not None:
        save_plan(result.plan, args.output)
    if args.json:
        out = {
            "solver": result.solver, "status": result.status, "objective_s": result.objective_s,
            "best_bound_s": result.best_bound_s, "gap": result.gap, "wall_time_s": result.wall_time_s,
            "stats": result.stats, "notes": result.notes, "infeasibility": result.infeasibility,
            "plan": plan_document(result.plan) if result.plan else None,
            "estimate": estimate_json(problem, result.plan, result.breakdown) if result.breakdown else None,
        }
        print(json.dumps(out, indent=2, default=str))
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
        if args.output and result.plan is not None:
            print(f"\nplan written to {args.output}")
    if args.export and result.plan is not None:
        args.to = args.export
        print()
        print(_export_text(problem, result.plan, args), end="")
    return 0 if result.plan is not None else 3


def cmd_compare(args: argparse.Namespace) -> int:
    from planner.cost.step import evaluate
    from planner.solve_report import compare_rows
    from solvers import SOLVERS, SolveResult

    problem = load_problem(args.task)
    options = _solve_options(args)
    names = [n.strip() for n in args.solvers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOLVERS]
    if unknown:
        raise PlannerError(f"unknown solver {unknown[0]!r}; choose from {', '.join(SOLVERS)}")
    rows = [(name, SOLVERS[name].solve(problem, options)) for name in names]
    for path in args.plan or []:
        plan = load_plan(path)
        b = evaluate(problem, plan)
        rows.append((f"plan {path}", SolveResult(solver="user", status="GIVEN", plan=plan,
                                                 objective_s=b.step_time_s, breakdown=b)))
    text, records = compare_rows(rows)
    if args.json:
        print(json.dumps({"problem_hash": problem.hash, "rows": records}, indent=2, default=str))
    else:
        print(f"problem  {problem.model.name} on {problem.cluster.num_devices} x {problem.cluster.device.name}; "
              f"{problem.task.num_sequences} x {problem.task.seq_len} tokens/step, {problem.task.precision}")
        print()
        print(text)
    return 0


def check_megatron_flags(text: str, checkout: str) -> list[str]:
    """Flags in `text` that a Megatron-LM checkout's argument parser does not define."""
    import re
    from pathlib import Path

    root = Path(checkout)
    sources = list(root.glob("megatron/training/arguments.py")) + list(root.glob("megatron/**/arguments.py"))
    if not sources:
        raise PlannerError(f"{checkout}: no megatron/training/arguments.py found (is this a Megatron-LM checkout?)")
    defined = set()
    for source in sources:
        defined |= set(re.findall(r"""['"](--[a-z0-9][a-z0-9-]*)['"]""", source.read_text(errors="replace")))
    used = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", text))
    return sorted(used - defined)


def _export_text(problem, plan, args) -> str:
    from planner.export import export

    result = export(problem, plan, args.to, args.target_version)
    if args.check_with:
        if args.to != "megatron":
            raise PlannerError("--check-with checks Megatron-LM arguments; use it with --to megatron")
        missing = check_megatron_flags(result.text, args.check_with)
        if missing:
            raise PlannerError(f"flags not defined by {args.check_with}: {', '.join(missing)}")
    for note in result.approximations:
        print(note, file=sys.stderr)
    return result.text


def cmd_export(args: argparse.Namespace) -> int:
    problem = load_problem(args.task)
    plan = load_plan(args.plan)
    plan_hash = plan.provenance.problem_hash
    if plan_hash is not None and plan_hash != problem.hash:
        raise PlannerError(f"{args.plan}: this plan was made for problem {plan_hash}, but {args.task} is "
                           f"problem {problem.hash}")
    from planner.plan import check_plan

    errors = check_plan(plan, problem)
    if errors:
        raise PlannerError(f"{args.plan}: invalid for {args.task}: " + "; ".join(errors))
    text = _export_text(problem, plan, args)
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(text)
        print(f"written to {args.output}")
    else:
        print(text, end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from planner.validate import DEFAULT_RUNS, render_validation, validate, validation_json

    results = validate(args.runs or DEFAULT_RUNS)
    if args.json:
        print(json.dumps(validation_json(results), indent=2))
    else:
        print(render_validation(results, verbose=args.verbose))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from planner.calibrate import DEFAULT_EFFICIENCY, calibrate, render_calibration

    result = calibrate(args.data or DEFAULT_EFFICIENCY)
    print(json.dumps(result, indent=2) if args.json else render_calibration(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planner", description="Parallelism planner for large-model training (cost model and solvers)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    est = sub.add_parser(
        "estimate",
        help="price one plan: step time, MFU, breakdown, memory per stage",
        description="Price one parallel plan for a task. Exit code 3 if a stage does not fit in memory.",
    )
    est.add_argument("task", help="task YAML (e.g. problems/tasks/llama3-70b-64xh100.yaml)")
    est.add_argument("--plan", help="plan YAML (e.g. problems/plans/llama3-70b-nemo.yaml); flags override it")
    est.add_argument("--tp", type=int)
    est.add_argument("--cp", type=int)
    est.add_argument("--pp", type=int)
    est.add_argument("--dp", type=int, help="default: devices / (tp*cp*pp)")
    est.add_argument("--vpp", dest="virtual_stages", type=int, help="virtual stages (interleaved)")
    est.add_argument("--mbs", dest="micro_batch_size", type=int, help="micro-batch size")
    est.add_argument("--zero", dest="zero_stage", type=int, choices=[0, 1, 2, 3])
    est.add_argument("--recompute", choices=["none", "selective", "full"])
    est.add_argument("--schedule", choices=["1f1b", "interleaved"])
    est.add_argument("--sp", action="store_true", help="sequence parallelism")
    est.add_argument("--tp-comm-overlap", action="store_true")
    est.add_argument("--json", action="store_true", help="machine-readable output")
    est.set_defaults(func=cmd_estimate)

    def search_flags(p: argparse.ArgumentParser) -> None:
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

    sol = sub.add_parser(
        "solve",
        help="find the fastest plan that fits, with a proof (status, bound, gap)",
        description="Search the plan space with a solver (default: CP-SAT, exact). Exit code 3: no plan.",
    )
    sol.add_argument("task", help="task YAML")
    sol.add_argument("--solver", default="cpsat", help="cpsat | exhaustive | megatron-rules | fsdp-only | greedy")
    sol.add_argument("-o", "--output", help="write the plan here (.yaml or .json)")
    sol.add_argument("--export", choices=["megatron", "megatron-bridge", "deepspeed", "torchtitan"],
                     help="also print the plan as this framework's configuration")
    sol.add_argument("--target-version", help="framework version for --export")
    sol.add_argument("--check-with", help="Megatron-LM checkout to check exported flags against")
    search_flags(sol)
    sol.set_defaults(func=cmd_solve)

    cmp_ = sub.add_parser(
        "compare",
        help="the solver beside the heuristics (and given plans): step time, MFU, memory, gap to best",
        description="Run several solvers on one task and price given plans; one row each.",
    )
    cmp_.add_argument("task", help="task YAML")
    cmp_.add_argument("--solvers", default="cpsat,megatron-rules,fsdp-only,greedy",
                      help="comma-separated (add exhaustive for small problems)")
    cmp_.add_argument("--plan", action="append", help="also price this plan file (repeatable)")
    search_flags(cmp_)
    cmp_.set_defaults(func=cmd_compare)

    exp = sub.add_parser(
        "export",
        help="write a plan as Megatron-LM / Megatron-Bridge / DeepSpeed / torchtitan configuration",
        description="Render a plan for a training framework, with a header naming the problem, the "
        "prediction and the planner version. Unsupported combinations are errors or printed approximations.",
    )
    exp.add_argument("plan", help="plan file (from planner solve -o, or by hand)")
    exp.add_argument("--task", required=True, help="the task YAML the plan solves (for the header and checks)")
    exp.add_argument("--to", required=True, choices=["megatron", "megatron-bridge", "deepspeed", "torchtitan"])
    exp.add_argument("--target-version", help="framework version (torchtitan: 0.2 TOML or 0.3 flags)")
    exp.add_argument("--check-with", help="path to a Megatron-LM checkout: check every flag exists there")
    exp.add_argument("-o", "--output", help="write here instead of standard output")
    exp.set_defaults(func=cmd_export)

    val = sub.add_parser(
        "validate",
        help="predict published measured runs and report the error (MAPE)",
        description="Predict every usable row of a measured-runs file and compare with the measurement.",
    )
    val.add_argument("--runs", help="measured-runs YAML (default: the copy shipped in planner/data)")
    val.add_argument("--json", action="store_true")
    val.add_argument("--verbose", "-v", action="store_true", help="list each row's assumptions")
    val.set_defaults(func=cmd_validate)

    cal = sub.add_parser(
        "calibrate",
        help="re-fit GEMM and collective efficiencies from published measurements",
        description="Fit the hardware-efficiency constants used by the device and cluster presets.",
    )
    cal.add_argument("--data", help="efficiency YAML (default: planner/data/efficiency.yaml)")
    cal.add_argument("--json", action="store_true")
    cal.set_defaults(func=cmd_calibrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PlannerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
