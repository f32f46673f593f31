"""`planner estimate`: price one plan (breakdown, MFU/HFU, memory per stage, warnings)."""

from __future__ import annotations

import argparse

from planner.cli.common import (
    DEGREE,
    PLAN_FLAGS,
    check_plan_matches,
    check_plan_valid,
    dump_json,
    integer,
    invalid_plan,
    is_recsys,
    is_serving,
    recompute_modules,
    load_task,
    plan_from_args,
)
from planner.llm.cost.step import evaluate
from planner.report.estimate import estimate_json, render_estimate


def run(args: argparse.Namespace) -> int:
    problem = load_task(args.task)
    if is_serving(problem):
        return run_serving(args, problem)
    serving_only = [flag for key, flag in SERVING_ONLY_FLAGS.items() if getattr(args, key) not in (None, False)]
    if serving_only:
        from planner.core.errors import InputError

        raise InputError(f"{' '.join(serving_only)}: serving plan flags apply to inference tasks; {args.task} is a "
                         f"{'DLRM' if is_recsys(problem) else 'training'} task")
    if is_recsys(problem):
        return run_recsys(args, problem)
    plan, source = plan_from_args(args, problem.cluster.num_devices)
    check_plan_matches(plan, problem, args.plan, args.task)
    check_plan_valid(plan, problem, source, args.task)
    breakdown = evaluate(problem, plan)
    if args.json:
        print(dump_json(estimate_json(problem, plan, breakdown)))
    else:
        print(render_estimate(problem, plan, breakdown))
    return 0 if breakdown.fits else 3


def run_recsys(args: argparse.Namespace, problem) -> int:
    """A DLRM task: price the embedding-sharding plan of --plan (no plan flags)."""
    from planner.core.errors import InputError
    from planner.recsys.cost import evaluate as evaluate_recsys
    from planner.recsys.loads import plan_loads
    from planner.recsys.plan import check_plan
    from planner.recsys.plan_io import load_sharding_plan
    from planner.report.recsys import recsys_estimate_json, render_recsys_estimate

    flags = [flag for key, flag in PLAN_FLAGS.items() if getattr(args, key) not in (None, False)]
    if flags:
        raise InputError(f"{' '.join(flags)}: LLM plan flags do not apply to a DLRM task ({args.task}); give an "
                         "embedding-sharding plan with --plan")
    if not args.plan:
        raise InputError(f"--plan: a DLRM task ({args.task}) needs an embedding-sharding plan file "
                         "(e.g. problems/plans/madmax-dlrm-a-mp128.yaml)")
    plan = load_sharding_plan(args.plan)
    check_plan_matches(plan, problem, args.plan, args.task)
    errors = check_plan(plan, problem)
    if errors:
        raise invalid_plan(args.plan, args.task, errors)
    loads = plan_loads(problem, plan)
    breakdown = evaluate_recsys(problem, plan, loads)
    if args.json:
        print(dump_json(recsys_estimate_json(problem, plan, breakdown, loads)))
    else:
        print(render_recsys_estimate(problem, plan, breakdown, loads))
    return 0 if breakdown.fits else 3


def run_serving(args: argparse.Namespace, problem) -> int:
    """An inference task: price the serving plan of --plan (TP, PP, DP flags override it)."""
    from planner.core.errors import InputError
    from planner.core.inputs import build
    from planner.report.serving import render_serving_estimate, serving_estimate_json
    from planner.serving.cost import evaluate as evaluate_serving
    from planner.serving.plan import ServingPlan, check_plan

    overrides = {key: getattr(args, key) for key in SERVING_FLAGS if getattr(args, key) is not None}
    overrides |= {key: getattr(args, key) for key in SERVING_ONLY_FLAGS if getattr(args, key) not in (None, False)}
    other = [flag for key, flag in PLAN_FLAGS.items() if key not in SERVING_FLAGS and getattr(args, key) not in (None, False)]
    if other:
        raise InputError(f"{' '.join(other)}: training plan flags do not apply to an inference task ({args.task}); "
                         "a serving plan has --tp, --pp, --dp, --ep and --dp-attention")
    named = " ".join({**PLAN_FLAGS, **SERVING_ONLY_FLAGS}[k] for k in overrides)
    if args.plan:
        from planner.cli import serving_disagg

        plan = serving_disagg.load_plan(args.plan)
        if not isinstance(plan, ServingPlan):
            if overrides:
                raise InputError(f"{named}: a disaggregated plan ({args.plan}) sets tp, pp and dp per pool; edit its "
                                 "prefill and decode blocks instead of passing plan flags")
            check_plan_matches(plan, problem, args.plan, args.task)
            return serving_disagg.estimate(args, problem, plan)
        source = f"{args.plan} with {named}" if overrides else args.plan
        if overrides:
            plan = build(ServingPlan, plan.model_dump() | overrides, source)
    else:
        source = f"the plan flags ({named})" if named else "the default plan (no flags)"
        if "dp" not in overrides:
            per_replica = overrides.get("tp", 1) * overrides.get("pp", 1)
            overrides["dp"] = max(problem.cluster.num_devices // per_replica, 1)
        plan = build(ServingPlan, {"family": "serving", **overrides}, source)
    check_plan_matches(plan, problem, args.plan, args.task)
    errors = check_plan(plan, problem)
    if errors:
        raise invalid_plan(source, args.task, errors)
    estimate = evaluate_serving(problem, plan)
    if args.json:
        print(dump_json(serving_estimate_json(problem, plan, estimate)))
    else:
        print(render_serving_estimate(problem, plan, estimate))
    return 0 if estimate.fits else 3


SERVING_FLAGS = ("tp", "pp", "dp")
"""Plan flags a serving plan takes."""
SERVING_ONLY_FLAGS = {"ep": "--ep", "dp_attention": "--dp-attention"}
"""Flags only a serving plan takes (mixture-of-experts models): refused on training and DLRM tasks."""


def add_parser(sub) -> None:
    est = sub.add_parser(
        "estimate",
        help="price one plan: step time, MFU, breakdown, memory per stage",
        description="Price one parallel plan for a task. Exit codes: 0 fits, 3 a stage does not fit in memory, "
        "2 bad input.",
    )
    est.add_argument("task", help="task YAML (e.g. problems/tasks/llama3-70b-64xh100.yaml) or a shipped task's name")
    est.add_argument("--plan", help="plan YAML (e.g. problems/plans/llama3-70b-nemo.yaml); flags override it")
    est.add_argument("--tp", type=DEGREE, help="tensor-parallel degree")
    est.add_argument("--cp", type=DEGREE, help="context-parallel degree")
    est.add_argument("--pp", type=DEGREE, help="pipeline stages")
    est.add_argument("--dp", type=DEGREE, help="default: devices / (tp*cp*pp)")
    est.add_argument("--vpp", dest="virtual_stages", type=integer(1, 2**16), help="virtual stages (interleaved)")
    est.add_argument("--mbs", dest="micro_batch_size", type=integer(1, 2**40), help="micro-batch size")
    est.add_argument("--gbs", dest="global_batch_size", type=integer(1, 2**40),
                     help="global batch (sequences) the plan runs at: one the task allows (default: the task's; "
                     "for a range, its largest)")
    est.add_argument("--zero", dest="zero_stage", type=integer(0, 3), help="ZeRO stage 0-3")
    est.add_argument("--recompute", choices=["none", "selective", "full"])
    est.add_argument("--recompute-modules", type=recompute_modules,
                     help="with --recompute selective: the parts re-run, comma-separated, of core_attn, layernorm, "
                     "moe_act, mla_up_proj, mlp (Megatron-Core --recompute-modules; default core_attn)")
    est.add_argument("--schedule", choices=["1f1b", "interleaved"])
    est.add_argument("--sp", action="store_true", help="sequence parallelism")
    est.add_argument("--tp-comm-overlap", action="store_true")
    est.add_argument("--ep", type=DEGREE, help="inference tasks (MoE models): expert-parallel degree")
    est.add_argument("--dp-attention", action="store_true",
                     help="inference tasks (MLA models): attention data-parallel inside the TP group")
    est.add_argument("--json", action="store_true", help="machine-readable output")
    est.set_defaults(func=run)
