"""DeepSpeed JSON: batch triangle, precision, ZeRO stage (HSDP as hpZ for ZeRO-3).

train_batch_size = train_micro_batch_size_per_gpu x gradient_accumulation_steps x DP.
DeepSpeed's JSON has no TP, CP or PP degrees: TP/CP are set by the model code (e.g.
Megatron-DeepSpeed) and PP by PipelineModule(num_stages=...). Those plans are exported with
that requirement printed in the header; non-uniform stages and per-stage recompute counts are
errors (DeepSpeed partitions stages itself), and so is PP with ZeRO-2/3, which DeepSpeed's
PipelineEngine refuses ("ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism").
fp8 comes from Transformer Engine in the model code: the header names the recipe (per-tensor
current scaling, hybrid format, as in the other exports).

Mixture-of-experts models are refused: DeepSpeed's JSON has no expert parallelism. DeepSpeed-MoE
lives in the model code (deepspeed.moe.layer.MoE(ep_size=..., capacity_factor=...), expert groups
from deepspeed.utils.groups), dispatches with capacity-based gating and one GEMM per local expert,
and has no expert tensor parallelism, grouped GEMMs, dropless routing or EP overlap, so a config
file cannot carry the plan the cost model priced.
"""

from __future__ import annotations

import json

from planner.export.base import Exported, ExportError, accumulation_steps, header
from planner.llm.plan import Plan
from planner.llm.problem import Problem


def deepspeed_config(problem: Problem, plan: Plan) -> tuple[dict, list[str]]:
    task = problem.task
    notes = []
    if problem.model.family == "moe":
        raise ExportError(f"{problem.model.name} is a mixture-of-experts model: DeepSpeed's config has no expert "
                          "parallelism (DeepSpeed-MoE is set up in the model code, with capacity-based gating and "
                          "no ETP, grouped GEMMs or EP overlap); export to megatron, megatron-bridge or torchtitan")
    layers = plan.layers_per_stage(problem.model.num_layers)
    if len(set(layers)) > 1:
        raise ExportError(f"non-uniform pipeline stages {layers} cannot be expressed in a DeepSpeed config")
    if plan.recompute == "full" and plan.recompute_num_layers is not None and len(set(plan.recompute_num_layers)) > 1:
        raise ExportError("per-stage recompute counts cannot be expressed in a DeepSpeed config")
    if plan.virtual_stages > 1:
        raise ExportError("interleaved pipeline schedules are not available in DeepSpeed's pipeline engine")
    if plan.pp > 1 and plan.zero_stage >= 2:
        raise ExportError(f"PP {plan.pp} with ZeRO-{plan.zero_stage}: DeepSpeed's PipelineEngine refuses it ('ZeRO-2 "
                          "and ZeRO-3 are incompatible with pipeline parallelism'); re-solve with zero_stages [0, 1], "
                          "or export to megatron")
    config: dict = {
        "train_batch_size": plan.sequences(task),
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": accumulation_steps(problem, plan),
        "zero_optimization": {"stage": plan.zero_stage, "overlap_comm": task.framework.overlap_grad_reduce,
                              "contiguous_gradients": True, "reduce_scatter": True},
    }
    if plan.zero_stage == 3 and plan.zero_shard_size not in (None, plan.dp):
        config["zero_optimization"]["zero_hpz_partition_size"] = plan.zero_shard_size
        notes.append(f"HSDP as ZeRO++ hpZ: weights gathered within groups of {plan.zero_shard_size}")
    elif plan.zero_stage and plan.zero_shard_size not in (None, plan.dp):
        raise ExportError("HSDP with ZeRO-1/2 has no DeepSpeed equivalent (hpZ needs ZeRO-3)")
    if task.precision in ("bf16", "fp8"):
        config["bf16"] = {"enabled": True}
    else:
        config["fp16"] = {"enabled": True}
    if task.precision == "fp8":
        notes.append("APPROXIMATION: fp8 GEMMs come from Transformer Engine in the model code (te.fp8_autocast with "
                     "recipe Float8CurrentScaling(fp8_format=Format.HYBRID)); the config says bf16")
    if plan.recompute == "selective" and plan.recompute_modules_list != ["core_attn"]:
        notes.append(f"APPROXIMATION: Megatron-Core's selective recompute of {', '.join(plan.recompute_modules_list)} "
                     "has no DeepSpeed equivalent: the block checkpointing below re-runs whole blocks (slower, "
                     "never more memory)")
    if plan.recompute != "none":
        config["activation_checkpointing"] = {"partition_activations": plan.sp, "contiguous_memory_optimization": False}
        mode = "full" if plan.recompute == "selective" and plan.recompute_modules_list != ["core_attn"] else plan.recompute
        notes.append(f"activation checkpointing ({mode}) is applied by the model code "
                     "(deepspeed.checkpointing.checkpoint around each block)")
    if plan.tp > 1 or plan.cp > 1:
        notes.append(f"TP {plan.tp} / CP {plan.cp}: set in the model code (e.g. Megatron-DeepSpeed "
                     f"--tensor-model-parallel-size {plan.tp}); the DP size here is {plan.dp}")
    if plan.pp > 1:
        notes.append(f"PP {plan.pp}: PipelineModule(num_stages={plan.pp}); DeepSpeed runs 1F1B")
    return config, notes


DEEPSPEED_VERSIONS = ("0.19",)
"""DeepSpeed versions whose config schema the export is checked against (0.19.8)."""


def export_deepspeed(problem: Problem, plan: Plan, version: str | None) -> Exported:
    version = DEEPSPEED_VERSIONS[-1] if version is None else version
    if version not in DEEPSPEED_VERSIONS:
        raise ExportError(f"DeepSpeed version {version!r} not supported; choose from {DEEPSPEED_VERSIONS}")
    config, notes = deepspeed_config(problem, plan)
    head = header(problem, plan, "DeepSpeed", version, notes, comment="//")
    # JSON has no comments: the header goes in a "_comment" list DeepSpeed ignores.
    document = {"_comment": [line[3:] for line in head.splitlines()], **config}
    text = json.dumps(document, indent=2) + "\n"
    return Exported("deepspeed", version, text, [n for n in notes if n.startswith("APPROXIMATION")])
