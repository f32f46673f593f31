"""Megatron-LM / Megatron-Core arguments (core 0.16+) and Megatron-Bridge overrides.

Megatron infers DP from the world size: world = TP x CP x PP x DP (stated in the header).
Non-uniform stages use --decoder-first/last-pipeline-num-layers when only the edge stages
differ, else --pipeline-model-parallel-layout (E = embedding, t = decoder layer, L = loss;
stages in forward order, all pipeline ranks of virtual chunk 0, then chunk 1, ...).
ZeRO: 0 = DDP, 1 = --use-distributed-optimizer, 3 = Megatron FSDP with
optim_grads_params sharding. ZeRO-2 and HSDP have no Megatron equivalent (error).
"""

from __future__ import annotations

from planner.export.base import Exported, ExportError, header, recompute_layers
from planner.plan import Plan
from planner.problem import Problem

MEGATRON_VERSIONS = ("0.16",)

MEGATRON_FLAGS = frozenset({
    "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--context-parallel-size",
    "--num-layers-per-virtual-pipeline-stage", "--num-virtual-stages-per-pipeline-rank",
    "--decoder-first-pipeline-num-layers", "--decoder-last-pipeline-num-layers",
    "--pipeline-model-parallel-layout", "--sequence-parallel", "--micro-batch-size", "--global-batch-size",
    "--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather",
    "--recompute-granularity", "--recompute-method", "--recompute-num-layers", "--bf16", "--fp16",
    "--fp8-format", "--tp-comm-overlap", "--use-megatron-fsdp", "--data-parallel-sharding-strategy",
    "--seq-length", "--num-layers",
})
"""Flag names this exporter emits (checked against a Megatron-LM checkout with --check-with)."""


def _pipeline_flags(problem: Problem, plan: Plan) -> list[str]:
    L = problem.model.num_layers
    layers = plan.layers_per_stage(L)
    p, v = plan.pp, plan.virtual_stages
    flags = []
    if p == 1:
        return flags
    uniform = len(set(layers)) == 1
    if uniform:
        if v > 1:
            flags += ["--num-layers-per-virtual-pipeline-stage", str(layers[0] // v)]
        return flags
    middle = layers[1:-1]
    if v == 1 and len(set(middle)) <= 1:
        flags += ["--decoder-first-pipeline-num-layers", str(layers[0]),
                  "--decoder-last-pipeline-num-layers", str(layers[-1])]
        return flags
    if any(n % v for n in layers):
        raise ExportError(f"stage layers {layers} are not multiples of the {v} virtual stages")
    stages = []
    for chunk in range(v):
        for i, n in enumerate(layers):
            text = ("E" if (chunk == 0 and i == 0) else "") + (f"t*{n // v}" if n // v > 1 else "t" * (n // v))
            if chunk == v - 1 and i == p - 1:
                text += "L"
            stages.append(text)
    flags += ["--pipeline-model-parallel-layout", '"' + "|".join(stages) + '"']
    return flags


def megatron_arguments(problem: Problem, plan: Plan) -> tuple[list[str], list[str]]:
    """(flags, approximation notes) for Megatron-LM's pretrain scripts."""
    if plan.zero_stage == 2:
        raise ExportError("ZeRO-2 has no Megatron-LM equivalent (distributed optimizer is ZeRO-1, "
                          "Megatron FSDP is ZeRO-3); re-solve with zero_stages [0, 1, 3]")
    if plan.zero_stage and plan.zero_shard_size not in (None, plan.dp):
        raise ExportError("HSDP (sharding within groups of "
                          f"{plan.zero_shard_size} of {plan.dp} data-parallel ranks) has no Megatron-LM equivalent")
    task = problem.task
    flags = [
        "--num-layers", str(problem.model.num_layers),
        "--seq-length", str(task.seq_len),
        "--tensor-model-parallel-size", str(plan.tp),
        "--pipeline-model-parallel-size", str(plan.pp),
        "--context-parallel-size", str(plan.cp),
    ]
    flags += _pipeline_flags(problem, plan)
    if plan.sp:
        flags.append("--sequence-parallel")
    if plan.tp_comm_overlap:
        flags.append("--tp-comm-overlap")
    flags += ["--micro-batch-size", str(plan.micro_batch_size), "--global-batch-size", str(task.num_sequences)]
    if plan.zero_stage == 1:
        flags.append("--use-distributed-optimizer")
    elif plan.zero_stage == 3:
        flags += ["--use-megatron-fsdp", "--data-parallel-sharding-strategy", "optim_grads_params"]
    if task.framework.overlap_grad_reduce and plan.dp > 1:
        flags.append("--overlap-grad-reduce")
    if task.framework.overlap_param_gather and plan.zero_stage in (1, 3) and plan.dp > 1:
        flags.append("--overlap-param-gather")
    notes = []
    count, notes = recompute_layers(plan, problem.model.num_layers)
    if plan.recompute == "selective":
        flags += ["--recompute-granularity", "selective"]
    elif plan.recompute == "full":
        flags += ["--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", str(count)]
    flags += {"bf16": ["--bf16"], "fp16": ["--fp16"], "fp8": ["--bf16", "--fp8-format", "hybrid"]}[task.precision]
    unknown = [f for f in flags if f.startswith("--") and f not in MEGATRON_FLAGS]
    assert not unknown, unknown
    return flags, notes


def export_megatron(problem: Problem, plan: Plan, version: str | None) -> Exported:
    version = version or MEGATRON_VERSIONS[-1]
    if version not in MEGATRON_VERSIONS:
        raise ExportError(f"Megatron-Core version {version!r} not supported; choose from {MEGATRON_VERSIONS}")
    flags, notes = megatron_arguments(problem, plan)
    world = plan.tp * plan.cp * plan.pp * plan.dp
    notes = [f"DP is implied by the world size: launch {world} ranks = TP {plan.tp} x CP {plan.cp} x PP {plan.pp} "
             f"x DP {plan.dp}", *notes]
    lines = []
    pairs = []
    i = 0
    while i < len(flags):
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            pairs.append(f"{flags[i]} {flags[i + 1]}")
            i += 2
        else:
            pairs.append(flags[i])
            i += 1
    lines.append("MEGATRON_PARALLEL_ARGS=(")
    lines += [f"    {p}" for p in pairs]
    lines.append(")")
    text = header(problem, plan, "Megatron-LM", f"core {version}", notes) + "\n" + "\n".join(lines) + "\n"
    return Exported("megatron", version, text, [n for n in notes if n.startswith("APPROXIMATION")])


def export_megatron_bridge(problem: Problem, plan: Plan, version: str | None) -> Exported:
    version = version or "0.2"
    megatron_arguments(problem, plan)  # same expressibility rules
    task = problem.task
    layers = plan.layers_per_stage(problem.model.num_layers)
    items = {
        "model.tensor_model_parallel_size": plan.tp,
        "model.pipeline_model_parallel_size": plan.pp,
        "model.virtual_pipeline_model_parallel_size": plan.virtual_stages if plan.virtual_stages > 1 else None,
        "model.context_parallel_size": plan.cp,
        "model.sequence_parallel": plan.sp,
        "model.tp_comm_overlap": plan.tp_comm_overlap or None,
        "train.micro_batch_size": plan.micro_batch_size,
        "train.global_batch_size": task.num_sequences,
        "ddp.use_distributed_optimizer": plan.zero_stage == 1,
        "ddp.overlap_grad_reduce": bool(task.framework.overlap_grad_reduce and plan.dp > 1),
        "ddp.overlap_param_gather": bool(task.framework.overlap_param_gather and plan.zero_stage == 1 and plan.dp > 1),
    }
    notes = []
    if plan.pp > 1 and len(set(layers)) > 1:
        if plan.virtual_stages > 1 or len(set(layers[1:-1])) > 1:
            raise ExportError("Megatron-Bridge overrides express non-uniform stages only as first/last stage "
                              f"layer counts; this plan has {layers} with {plan.virtual_stages} virtual stages "
                              "(use --to megatron, whose --pipeline-model-parallel-layout can)")
        items["model.num_layers_in_first_pipeline_stage"] = layers[0]
        items["model.num_layers_in_last_pipeline_stage"] = layers[-1]
    if plan.zero_stage == 3:
        items["ddp.use_megatron_fsdp"] = True
        items["ddp.data_parallel_sharding_strategy"] = "optim_grads_params"
    if plan.recompute == "selective":
        items["model.recompute_granularity"] = "selective"
    elif plan.recompute == "full":
        count, notes = recompute_layers(plan, problem.model.num_layers)
        items.update({"model.recompute_granularity": "full", "model.recompute_method": "block",
                      "model.recompute_num_layers": count})
    if task.precision == "fp8":
        items["model.fp8"] = "hybrid"
    items["model.bf16" if task.precision != "fp16" else "model.fp16"] = True
    overrides = [f"{k}={_value(v)}" for k, v in items.items() if v is not None]
    text = header(problem, plan, "Megatron-Bridge", version, notes) + "\n" + " \\\n".join(overrides) + "\n"
    return Exported("megatron-bridge", version, text, [n for n in notes if n.startswith("APPROXIMATION")])


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)

