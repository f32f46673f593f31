"""Megatron-LM / Megatron-Core arguments (core 0.16), as its pretrain scripts take them.

Megatron infers DP from the world size: world = TP x CP x PP x DP (stated in the header).
Non-uniform stages use --decoder-first/last-pipeline-num-layers when only the edge stages
differ, else --pipeline-model-parallel-layout (E = embedding, t = decoder layer, L = loss;
stages in forward order, all pipeline ranks of virtual chunk 0, then chunk 1, ...).

ZeRO (Megatron shards over the DP x CP group, as the cost model does):
  0  plain DDP
  1  --use-distributed-optimizer
  2  Megatron FSDP, --data-parallel-sharding-strategy optim_grads
  3  Megatron FSDP, --data-parallel-sharding-strategy optim_grads_params
Megatron FSDP needs --ckpt-format fsdp_dtensor. HSDP (shard within groups, replicate across) is
--num-distributed-optimizer-instances = DP / shard size, for the distributed optimizer and for
Megatron FSDP alike (the outer groups replicate: --outer-dp-sharding-strategy no_shard, the
default).

Launch environment: validate_args requires CUDA_DEVICE_MAX_CONNECTIONS=1 with TP or CP > 1
(before Blackwell) and refuses it with Megatron FSDP, so the export sets or unsets it.
The fp8 recipe is written explicitly: per-tensor current scaling (tensorwise), the recipe of
the other exporters; Megatron's default is delayed scaling.

Mixture-of-experts models (planner/export/moe.py builds the settings): the MoE architecture
(--num-experts, --moe-ffn-hidden-size, --moe-router-topk, --moe-layer-freq, shared experts,
router, capacity, --mtp-num-layers) and multi-latent attention (--multi-latent-attention and
its ranks and head widths) go with the model flags; the expert grid (--expert-model-parallel-size,
--expert-tensor-parallel-size: Megatron folds ETP x EP x EDP onto the ranks of a pipeline stage),
the dispatcher, grouped GEMMs and the EP overlap with the parallel flags. MTP modules sit on the
last pipeline stage (the layout's `m`, before the loss), where the cost model prices them.
With the EP overlap the launch sets CUDA_DEVICE_MAX_CONNECTIONS=8 (32 with the flex dispatcher,
also without the overlap when TP = CP = 1), as Bridge's performance launcher does on Hopper
(v0.2.2 scripts/performance/perf_plugins.py l.207-236; the overlap needs more than one
connection, Megatron's MoE README l.437; with TP or CP > 1 Megatron then only warns). Full
recompute in an MoE model: see moe.py (Megatron recomputes dense layers too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.export.base import Exported, ExportError, chunk_layers, header, recompute_layers
from planner.export.moe import is_moe, layer_freq, moe_recompute_layers, moe_settings
from planner.llm.plan import Plan
from planner.llm.problem import Problem

MEGATRON_VERSIONS = ("0.16",)
FP8_RECIPE = "tensorwise"

MEGATRON_FLAGS = frozenset({
    "--num-layers", "--hidden-size", "--ffn-hidden-size", "--num-attention-heads", "--group-query-attention",
    "--num-query-groups", "--kv-channels", "--seq-length", "--max-position-embeddings", "--position-embedding-type",
    "--window-size", "--window-attn-skip-freq",
    "--swiglu", "--untie-embeddings-and-output-weights", "--disable-bias-linear", "--attention-dropout",
    "--hidden-dropout",
    "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--context-parallel-size",
    "--num-layers-per-virtual-pipeline-stage", "--decoder-first-pipeline-num-layers",
    "--decoder-last-pipeline-num-layers", "--pipeline-model-parallel-layout", "--sequence-parallel",
    "--tp-comm-overlap", "--micro-batch-size", "--global-batch-size", "--use-distributed-optimizer",
    "--use-megatron-fsdp", "--data-parallel-sharding-strategy", "--num-distributed-optimizer-instances",
    "--ckpt-format", "--overlap-grad-reduce", "--overlap-param-gather", "--recompute-granularity",
    "--recompute-modules", "--recompute-method", "--recompute-num-layers", "--bf16", "--fp16", "--fp8-format",
    "--fp8-recipe",
    # mixture of experts and multi-latent attention
    "--num-experts", "--moe-ffn-hidden-size", "--moe-router-topk", "--moe-layer-freq",
    "--moe-shared-expert-intermediate-size", "--moe-router-score-function", "--moe-router-pre-softmax",
    "--moe-router-num-groups", "--moe-router-group-topk", "--moe-router-load-balancing-type",
    "--moe-router-enable-expert-bias", "--moe-expert-capacity-factor", "--mtp-num-layers",
    "--expert-model-parallel-size", "--expert-tensor-parallel-size", "--moe-token-dispatcher-type",
    "--moe-flex-dispatcher-backend", "--moe-grouped-gemm", "--moe-router-dtype", "--moe-shared-expert-overlap",
    "--overlap-moe-expert-parallel-comm", "--delay-wgrad-compute", "--multi-latent-attention", "--q-lora-rank",
    "--kv-lora-rank", "--qk-head-dim", "--qk-pos-emb-head-dim", "--v-head-dim",
})
"""Flag names this exporter emits (all defined by Megatron core_v0.16.1: tests/test_export_megatron.py)."""


@dataclass
class MegatronArgs:
    """Megatron-LM arguments for one plan: model shape, parallel layout, launch environment."""

    model: list[str]
    parallel: list[str]
    env: dict[str, str | None]
    """Launch environment; None = must be unset."""
    notes: list[str] = field(default_factory=list)


def pipeline_layout(layers: list[int], virtual_stages: int, mtp_layers: int = 0, extra_last: bool = False) -> str:
    """Megatron's pipeline layout string for `layers` per stage and `virtual_stages` chunks each
    (`mtp_layers` MTP modules in the last chunk, before the loss; `extra_last`: see chunk_layers)."""
    sizes = chunk_layers(layers, virtual_stages, extra_last)
    stages = []
    for k, n in enumerate(sizes):
        text = ("E" if k == 0 else "") + (f"t*{n}" if n > 1 else "t" * n)
        stages.append(text + ("m" * mtp_layers + "L" if k == len(sizes) - 1 else ""))
    return "|".join(stages)


def recompute_count(problem: Problem, plan: Plan) -> tuple[int | None, list[str]]:
    """--recompute-num-layers (block method) and its notes; MoE models: moe.moe_recompute_layers."""
    if is_moe(problem):
        return moe_recompute_layers(problem, plan)
    return recompute_layers(plan, problem.model.num_layers)


def mtp_layers(problem: Problem) -> int:
    return problem.model.mtp_layers if is_moe(problem) else 0


def _pipeline_flags(problem: Problem, plan: Plan) -> list[str]:
    layers = plan.layers_per_stage(problem.model.num_layers)
    v = plan.virtual_stages
    if plan.pp == 1:
        return []
    if len(set(layers)) == 1:
        return ["--num-layers-per-virtual-pipeline-stage", str(layers[0] // v)] if v > 1 else []
    if v == 1 and len(set(layers[1:-1])) <= 1:
        return ["--decoder-first-pipeline-num-layers", str(layers[0]),
                "--decoder-last-pipeline-num-layers", str(layers[-1])]
    return ["--pipeline-model-parallel-layout", pipeline_layout(layers, v, mtp_layers(problem), is_moe(problem))]


def data_parallel_settings(plan: Plan) -> dict[str, object]:
    """The ZeRO stage and HSDP as Megatron DDP settings (names of DistributedDataParallelConfig)."""
    settings: dict[str, object] = {}
    if plan.zero_stage == 1:
        settings["use_distributed_optimizer"] = True
    elif plan.zero_stage in (2, 3):
        settings["use_megatron_fsdp"] = True
        settings["data_parallel_sharding_strategy"] = "optim_grads" if plan.zero_stage == 2 else "optim_grads_params"
    if plan.zero_stage and plan.zero_shard_size not in (None, plan.dp):
        settings["num_distributed_optimizer_instances"] = plan.dp // plan.zero_shard_size
    return settings


def launch_env(plan: Plan) -> dict[str, str | None]:
    """CUDA_DEVICE_MAX_CONNECTIONS as Megatron's validate_args requires it (and the EP overlap)."""
    if plan.zero_stage in (2, 3):
        return {"CUDA_DEVICE_MAX_CONNECTIONS": None}
    if plan.ep_comm_overlap:
        return {"CUDA_DEVICE_MAX_CONNECTIONS": "32" if plan.dispatcher == "flex" else "8"}
    if plan.tp > 1 or plan.cp > 1:
        return {"CUDA_DEVICE_MAX_CONNECTIONS": "1"}
    if plan.dispatcher == "flex" and plan.ep > 1:
        return {"CUDA_DEVICE_MAX_CONNECTIONS": "32"}
    return {}


def config_flags(fields: dict[str, object]) -> list[str]:
    """TransformerConfig fields as Megatron-LM flags (None and False are Megatron's defaults: left out)."""
    flags = []
    for name, value in fields.items():
        if value is None or value is False:
            continue
        flag = {"num_moe_experts": "--num-experts"}.get(name, "--" + name.replace("_", "-"))
        if value is True:
            flags.append(flag)
        elif name == "moe_layer_freq":
            flags += [flag, layer_freq(value) if isinstance(value, list) else str(value)]
        else:
            flags += [flag, str(value)]
    return flags


def _attention_flags(problem: Problem) -> list[str]:
    m = problem.model
    mla = getattr(m, "mla", None)
    if mla is not None:
        return ["--multi-latent-attention", *(["--q-lora-rank", str(mla.q_lora_rank)] if mla.q_lora_rank else []),
                "--kv-lora-rank", str(mla.kv_lora_rank), "--qk-head-dim", str(mla.qk_nope_head_dim),
                "--qk-pos-emb-head-dim", str(mla.qk_rope_head_dim), "--v-head-dim", str(mla.v_head_dim)]
    flags = []
    if m.kv_heads != m.num_heads:
        flags += ["--group-query-attention", "--num-query-groups", str(m.kv_heads)]
    if m.dim_per_head != m.hidden_size // m.num_heads:
        flags += ["--kv-channels", str(m.dim_per_head)]
    return flags


def _model_flags(problem: Problem, plan: Plan) -> list[str]:
    m, task = problem.model, problem.task
    flags = ["--num-layers", str(m.num_layers), "--hidden-size", str(m.hidden_size)]
    if m.ffn_hidden_size is not None:  # None: an MoE model without dense layers
        flags += ["--ffn-hidden-size", str(m.ffn_hidden_size)]
    flags += ["--num-attention-heads", str(m.num_heads), *_attention_flags(problem)]
    flags += ["--seq-length", str(task.seq_len), "--max-position-embeddings", str(m.max_seq_len),
              "--position-embedding-type", {"rope": "rope", "learned": "learned_absolute", "none": "none"}[
                  m.position_embedding]]
    if m.sliding_window is not None:
        # Transformer Engine's (left, right) window: left = keys before the query (it sees itself too).
        flags += ["--window-size", f"{m.sliding_window - 1},0"]
        if m.full_attention_every is not None:
            flags += ["--window-attn-skip-freq", str(m.full_attention_every)]
    if m.gated_mlp:
        flags.append("--swiglu")
    if not m.tied_embeddings:
        flags.append("--untie-embeddings-and-output-weights")
    if not m.linear_bias:
        flags.append("--disable-bias-linear")
    if not m.dropout:
        flags += ["--attention-dropout", "0", "--hidden-dropout", "0"]
    moe = moe_settings(problem, plan)
    if moe is not None:
        flags += config_flags(moe.model)
    return flags


def megatron_arguments(problem: Problem, plan: Plan) -> MegatronArgs:
    """Model, parallel and launch settings for Megatron-LM's pretrain scripts."""
    task = problem.task
    flags = [
        "--tensor-model-parallel-size", str(plan.tp),
        "--pipeline-model-parallel-size", str(plan.pp),
        "--context-parallel-size", str(plan.cp),
    ]
    flags += _pipeline_flags(problem, plan)
    if plan.sp:
        flags.append("--sequence-parallel")
    if plan.tp_comm_overlap:
        flags.append("--tp-comm-overlap")
    moe = moe_settings(problem, plan)
    if moe is not None:
        flags += config_flags(moe.runtime)
    flags += ["--micro-batch-size", str(plan.micro_batch_size), "--global-batch-size", str(plan.sequences(task))]
    dp = data_parallel_settings(plan)
    if dp.get("use_distributed_optimizer"):
        flags.append("--use-distributed-optimizer")
    if dp.get("use_megatron_fsdp"):
        flags += ["--use-megatron-fsdp", "--data-parallel-sharding-strategy", str(dp["data_parallel_sharding_strategy"]),
                  "--ckpt-format", "fsdp_dtensor"]
    if "num_distributed_optimizer_instances" in dp:
        flags += ["--num-distributed-optimizer-instances", str(dp["num_distributed_optimizer_instances"])]
    notes = []
    if moe is not None:
        notes += moe.notes
        if problem.model.moe.router.load_balance == "aux_loss":
            notes.append("load-balancing loss: set --moe-aux-loss-coeff (Megatron's default, 0, turns it off)")
        clamp = problem.model.moe.activation_clamp
        if clamp is not None:
            notes.append(f"APPROXIMATION: Megatron-LM's arguments (core_v0.16.1) have no flag for the experts' activation "
                         f"clamp ({clamp:g}; TransformerConfig.activation_func_clamp_value, which Megatron-Bridge's "
                         "GPT-OSS provider sets): this command runs the gated activation unclamped; the plan was "
                         "priced with the clamp's eager passes")
    if problem.model.rope_yarn_factor is not None:
        notes.append(f"APPROXIMATION: Megatron-LM's arguments (core_v0.16.1) give YaRN to multi-latent attention only "
                     f"(--rope-type): this command runs plain RoPE where {problem.model.name} scales it by YaRN "
                     f"(factor {problem.model.rope_yarn_factor:g}; TransformerConfig position_embedding_type "
                     "'yarn', which Megatron-Bridge's GPT-OSS provider sets); the plan was priced with YaRN's "
                     "unfused rotary")
    grad_overlap = bool(task.framework.overlap_grad_reduce and plan.dp > 1)
    if grad_overlap:
        flags.append("--overlap-grad-reduce")
    if task.framework.overlap_param_gather and plan.zero_stage and plan.dp > 1:
        if grad_overlap:
            flags.append("--overlap-param-gather")
        else:
            notes.append("APPROXIMATION: Megatron overlaps the parameter all-gather only together with the gradient "
                         "reduction (--overlap-grad-reduce), which the task turns off; the all-gather is exposed")
    count, recompute_notes = recompute_count(problem, plan)
    notes += recompute_notes
    if plan.recompute == "selective":
        flags += ["--recompute-granularity", "selective", "--recompute-modules", *plan.recompute_modules_list]
    elif plan.recompute == "full":
        flags += ["--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", str(count)]
    flags += {"bf16": ["--bf16"], "fp16": ["--fp16"],
              "fp8": ["--bf16", "--fp8-format", "hybrid", "--fp8-recipe", FP8_RECIPE]}[task.precision]
    model = _model_flags(problem, plan)
    unknown = [f for f in model + flags if f.startswith("--") and f not in MEGATRON_FLAGS]
    assert not unknown, unknown
    env = launch_env(plan)
    if env.get("CUDA_DEVICE_MAX_CONNECTIONS", "") is None and (plan.tp > 1 or plan.cp > 1):
        notes.append("Megatron FSDP with TP or CP > 1: Megatron warns that TP/CP prefer CUDA_DEVICE_MAX_CONNECTIONS=1 "
                     "and FSDP refuses it; it is left unset")
    return MegatronArgs(model, flags, env, notes)


def _bash_array(name: str, flags: list[str]) -> list[str]:
    lines, i = [f"{name}=("], 0
    while i < len(flags):
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            values = []  # a flag and its values (nargs "+", e.g. --recompute-modules) on one line
            while i + 1 < len(flags) and not flags[i + 1].startswith("--"):
                value = flags[i + 1]
                values.append(f'"{value}"' if any(c in value for c in "|*[]()") else value)
                i += 1
            lines.append(f"    {flags[i - len(values)]} " + " ".join(values))
            i += 1
        else:
            lines.append(f"    {flags[i]}")
            i += 1
    return lines + [")"]


def export_megatron(problem: Problem, plan: Plan, version: str | None) -> Exported:
    version = MEGATRON_VERSIONS[-1] if version is None else version
    if version not in MEGATRON_VERSIONS:
        raise ExportError(f"Megatron-Core version {version!r} not supported; choose from {MEGATRON_VERSIONS}")
    args = megatron_arguments(problem, plan)
    world = plan.tp * plan.cp * plan.pp * plan.dp
    notes = [f"DP is implied by the world size: launch {world} ranks = TP {plan.tp} x CP {plan.cp} x PP {plan.pp} "
             f"x DP {plan.dp}",
             *([f"experts: each pipeline stage's {world // plan.pp} ranks = ETP {plan.etp} x EP {plan.ep} x expert DP "
                f"{world // (plan.pp * plan.etp * plan.ep)}"] if is_moe(problem) else []),
             "model shape and the plan; add data, tokenizer, optimizer and normalization settings", *args.notes]
    lines = [f"export {k}={v}" if v is not None else f"unset {k}" for k, v in args.env.items()]
    lines += _bash_array("MEGATRON_MODEL_ARGS", args.model) + _bash_array("MEGATRON_PARALLEL_ARGS", args.parallel)
    text = header(problem, plan, "Megatron-LM", f"core {version}", notes) + "\n" + "\n".join(lines) + "\n"
    return Exported("megatron", version, text, [n for n in notes if n.startswith("APPROXIMATION")])
