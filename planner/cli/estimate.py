"""`planner estimate`: price one plan (breakdown, MFU/HFU, memory per stage, warnings)."""

from __future__ import annotations

import argparse
import json

from planner.cli.common import plan_from_args
from planner.cost.step import evaluate
from planner.errors import PlannerError
from planner.problem import load_problem
from planner.report import estimate_json, render_estimate


def run(args: argparse.Namespace) -> int:
    problem = load_problem(args.task)
    plan = plan_from_args(args, problem.cluster.num_devices)
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


def add_parser(sub) -> None:
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
    est.set_defaults(func=run)
