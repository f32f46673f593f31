"""Megatron-Bridge (0.3) Hydra-style overrides of a recipe's ConfigContainer.

Keys are the ones that win in Bridge's runtime_config_update, which runs after the overrides:
- precision: `mixed_precision=<preset>`. The recipe's mixed_precision (a preset name such as
  "bf16_mixed" in every pre-training recipe) is applied over model.fp8/bf16/fp16, so those keys
  would be overwritten (an fp8 plan would run in bf16).
- overlap: when the recipe has a comm_overlap (the Llama-3 70B recipe does), its setup writes
  model.tp_comm_overlap and, with the distributed optimizer, ddp.overlap_grad_reduce /
  overlap_param_gather; so those are set through comm_overlap.* and also directly (for a recipe
  whose comm_overlap is None, where comm_overlap.* cannot be set: drop those lines).
- distributed optimizer: Bridge turns it on in both ddp and optimizer if either asks, so both
  are written.
- sequence length: model.seq_length and dataset.sequence_length (the field behind the
  dataset's seq_length property; Bridge requires the two equal).
Non-uniform stages use model.pipeline_model_parallel_layout (the Megatron layout string).

Mixture-of-experts models (planner/export/moe.py): the MoE architecture the plan was priced for
(model.num_moe_experts, moe_ffn_hidden_size, moe_router_topk, moe_layer_freq as a 0/1 list,
shared experts, router, capacity, mtp_num_layers) and the expert grid, dispatcher and kernels
(model.expert_model_parallel_size, expert_tensor_parallel_size, moe_token_dispatcher_type,
moe_grouped_gemm, ...); the dense shape and attention (MLA included) stay the recipe's. Bridge's
MoE recipes set more than the dense ones (DeepSeek-V3 at 0.3.1: a pipeline layout, VP, MTP, the
flex dispatcher, shared-expert overlap; Qwen3-235B: embedding and loss counted in the pipeline
split), so the export writes each of these explicitly, `null` where the plan has none:
model.virtual_pipeline_model_parallel_size, the layout (always, with PP > 1), no first/last
stage counts, account_for_embedding/loss_in_pipeline_split false (the cost model counts decoder
layers per stage), moe_expert_capacity_factor null = dropless, moe_shared_expert_overlap false.
The EP overlap is written as comm_overlap.overlap_moe_expert_parallel_comm / delay_wgrad_compute
and the same model.* keys: Bridge's CommOverlapConfig writes both into the model (false unless
asked) when the recipe has a comm_overlap.
"""

from __future__ import annotations

from planner.export.base import Exported, ExportError, header
from planner.export.megatron import (
    FP8_RECIPE,
    data_parallel_settings,
    launch_env,
    mtp_layers,
    pipeline_layout,
    recompute_count,
)
from planner.export.moe import moe_settings
from planner.llm.plan import Plan
from planner.llm.problem import Problem

BRIDGE_VERSIONS = ("0.3",)
NULL = "null"
"""An override to None (OmegaConf reads `null`)."""
MIXED_PRECISION = {"bf16": "bf16_mixed", "fp16": "fp16_mixed", "fp8": "bf16_with_fp8_current_scaling_mixed"}
"""Bridge 0.3 presets (megatron/bridge/training/mixed_precision.py); the fp8 one is tensorwise."""


def bridge_overrides(problem: Problem, plan: Plan) -> tuple[dict[str, object], list[str]]:
    """{override key: value} in the order they are written, and the header notes."""
    task = problem.task
    layers = plan.layers_per_stage(problem.model.num_layers)
    items: dict[str, object] = {
        "model.tensor_model_parallel_size": plan.tp,
        "model.pipeline_model_parallel_size": plan.pp,
        "model.virtual_pipeline_model_parallel_size": plan.virtual_stages if plan.virtual_stages > 1 else None,
        "model.context_parallel_size": plan.cp,
        "model.sequence_parallel": plan.sp,
        "model.seq_length": task.seq_len,
        "dataset.sequence_length": task.seq_len,
        "train.micro_batch_size": plan.micro_batch_size,
        "train.global_batch_size": plan.sequences(task),
    }
    moe = moe_settings(problem, plan)
    if moe is not None:  # explicit nulls: MoE recipes set VP, layouts and pipeline-split flags
        items["model.virtual_pipeline_model_parallel_size"] = plan.virtual_stages if plan.virtual_stages > 1 else NULL
        items["model.pipeline_model_parallel_layout"] = (
            pipeline_layout(layers, plan.virtual_stages, mtp_layers(problem), extra_last=True) if plan.pp > 1 else NULL)
        for key in ("num_layers_in_first_pipeline_stage", "num_layers_in_last_pipeline_stage"):
            items[f"model.{key}"] = NULL
        for key in ("account_for_embedding_in_pipeline_split", "account_for_loss_in_pipeline_split"):
            items[f"model.{key}"] = False
        for name, value in {**moe.model, **moe.runtime}.items():
            if name not in ("overlap_moe_expert_parallel_comm", "delay_wgrad_compute"):
                items[f"model.{name}"] = NULL if value is None else value
    elif plan.pp > 1 and len(set(layers)) > 1:
        items["model.pipeline_model_parallel_layout"] = pipeline_layout(layers, plan.virtual_stages)
    model = problem.model
    if model.sliding_window is not None:  # Transformer Engine's (left, right): left = keys before the query
        items["model.window_size"] = [model.sliding_window - 1, 0]
        items["model.window_attn_skip_freq"] = model.full_attention_every
    clamp = getattr(getattr(model, "moe", None), "activation_clamp", None)
    if clamp is not None:
        items["model.activation_func_clamp_value"] = clamp
    dp = data_parallel_settings(plan)
    distributed_optimizer = bool(dp.get("use_distributed_optimizer"))
    items["ddp.use_distributed_optimizer"] = distributed_optimizer
    items["optimizer.use_distributed_optimizer"] = distributed_optimizer
    items["ddp.use_megatron_fsdp"] = bool(dp.get("use_megatron_fsdp"))
    items["ddp.data_parallel_sharding_strategy"] = dp.get("data_parallel_sharding_strategy", "no_shard")
    items["ddp.num_distributed_optimizer_instances"] = dp.get("num_distributed_optimizer_instances", 1)
    if dp.get("use_megatron_fsdp"):
        items["checkpoint.ckpt_format"] = "fsdp_dtensor"
    grad_overlap = bool(task.framework.overlap_grad_reduce and plan.dp > 1)
    param_overlap = bool(task.framework.overlap_param_gather and plan.zero_stage and plan.dp > 1 and grad_overlap)
    for prefix in ("comm_overlap", "model"):
        items[f"{prefix}.tp_comm_overlap"] = plan.tp_comm_overlap
    for prefix in ("comm_overlap", "ddp"):
        items[f"{prefix}.overlap_grad_reduce"] = grad_overlap
        items[f"{prefix}.overlap_param_gather"] = param_overlap
    if moe is not None:
        for name in ("overlap_moe_expert_parallel_comm", "delay_wgrad_compute"):
            for prefix in ("comm_overlap", "model"):
                items[f"{prefix}.{name}"] = moe.runtime[name]
    notes = list(moe.notes) if moe is not None else []
    if plan.recompute == "selective":
        items["model.recompute_granularity"] = "selective"
        items["model.recompute_modules"] = plan.recompute_modules_list
    elif plan.recompute == "full":
        count, recompute_notes = recompute_count(problem, plan)
        notes += recompute_notes
        items.update({"model.recompute_granularity": "full", "model.recompute_method": "block",
                      "model.recompute_num_layers": count})
    items["mixed_precision"] = MIXED_PRECISION[task.precision]
    if task.precision == "fp8":
        notes.append(f"APPROXIMATION: fp8 as Bridge's preset {MIXED_PRECISION['fp8']} ({FP8_RECIPE} scaling, hybrid format) keeps "
                     "the first and last transformer layer in bf16 and gathers fp8 parameters; the plan was priced "
                     "with every layer in fp8")
    model = problem.model
    if model.rope_yarn_factor is not None:
        notes.append(f"APPROXIMATION: YaRN (factor {model.rope_yarn_factor:g}) is not set by these overrides: the "
                     "recipe's model provider must set it (model.position_embedding_type yarn and the model.yarn_* "
                     "fields; Megatron-Bridge's GPT-OSS bridge does, with factor 32), else the job runs plain RoPE")
    notes.append("comm_overlap.* apply to recipes that set comm_overlap; for one whose comm_overlap is None, drop "
                 "them (model.tp_comm_overlap and ddp.overlap_* then apply as written)")
    env = launch_env(plan)
    if env:
        name, value = next(iter(env.items()))
        notes.append(f"launch with {name}={value}" if value is not None else f"launch with {name} unset")
    return {k: v for k, v in items.items() if v is not None}, notes


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, str) and any(c in v for c in "|*"):
        return f"'{v}'"
    return str(v)


def export_megatron_bridge(problem: Problem, plan: Plan, version: str | None) -> Exported:
    version = BRIDGE_VERSIONS[-1] if version is None else version
    if version not in BRIDGE_VERSIONS:
        raise ExportError(f"Megatron-Bridge version {version!r} not supported; choose from {BRIDGE_VERSIONS}")
    items, notes = bridge_overrides(problem, plan)
    overrides = []
    for key, value in items.items():
        text = f"{key}={_value(value)}"
        overrides.append(f'"{text}"' if any(c in text for c in "|*'[") else text)
    text = header(problem, plan, "Megatron-Bridge", version, notes) + "\n" + " \\\n".join(overrides) + "\n"
    return Exported("megatron-bridge", version, text, [n for n in notes if n.startswith("APPROXIMATION")])
