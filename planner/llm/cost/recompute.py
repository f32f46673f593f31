"""Module-level selective recompute (Plan.recompute_modules, Megatron-Core `--recompute-modules`):
what each module frees from a block's stored activations and what it re-runs in the backward.
`core_attn` (Megatron's default) is priced with the attention core in planner.llm.cost.layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from planner.core import kernels
from planner.llm.cost.moe_params import mla_up_projection_params

if TYPE_CHECKING:
    from planner.llm.cost.layer import Context, Half
    from planner.llm.cost.layout import PlanVars
    from planner.llm.problem import Problem

BF16_BYTES = 2
"""Bytes of a bf16 element (the Q, K and V the attention core reads; planner.llm.cost.layer
imports it from here)."""


def module_recompute(problem: Problem, v: PlanVars, x: Context, ffn: Half, latent, tp_exp_fwd, pairs):
    """(seconds, bytes freed) of the recompute modules other than core_attn, per block and
    micro-batch (Megatron-Core transformer_config.py core_v0.16.0 `recompute_modules`).

    layernorm: the outputs of the norms that are modules of their own are dropped and those norms
    re-run (output-discarding checkpointing). In Megatron-Core's Transformer Engine layer specs
    (gpt_layer_specs.py core_v0.16.0) the input norm is fused into the QKV projection except with
    MLA, and the pre-MLP norm into fc1 except in MoE layers; TransformerLayer checkpoints only
    norms that are not an IdentityOp (transformer_layer.py l.379-390), so a fused norm is kept and
    not re-run. moe_act: the experts' activation output is dropped and the activation re-run. mlp: the
    dense MLP keeps only its input and re-runs whole, with its share of the exposed forward TP
    collectives. mla_up_proj: MLA's per-head Q, K and V are dropped and the up-projections and
    RoPE re-run from the kept latents."""
    model, task, device = problem.model, problem.task, problem.cluster.device
    facts = task.framework.facts
    modules = v.recompute_modules
    dense_ffn = not ffn.is_moe
    seconds, freed = 0.0, 0.0
    hidden = x.tokens * model.hidden_size / x.hidden_div
    mlp = "mlp" in modules and dense_ffn
    if "layernorm" in modules:
        norms = (1.0 if latent else 0.0) + (1.0 if ffn.is_moe else 0.0)  # the unfused ones
        seconds = seconds + kernels.memory_bound_time_s(norms * facts.norm_bytes * hidden, device)
        freed = freed + norms * x.gemm_input_bytes * hidden
    if "moe_act" in modules and ffn.is_moe:
        seconds = seconds + ffn.act_recompute_s
        freed = freed + ffn.act_out_bytes
    if mlp:
        tp_share = np.asarray(ffn.tp_pairs, dtype=float) / pairs
        seconds = seconds + ffn.mlp_recompute_s + tp_share * tp_exp_fwd
        freed = freed + ffn.mlp_inner_bytes
    if "mla_up_proj" in modules and latent:
        up = mla_up_projection_params(model)
        calls = 2  # the query's (up- or direct) projection and the key/value up-projection
        qw, kvw, vw = model.attention_width, model.kv_width, model.value_width
        seconds = seconds + kernels.gemm_time_s(2.0 * x.tokens * up / x.t, calls, device, task.precision)
        seconds = seconds + kernels.memory_bound_time_s(facts.rope_bytes * x.tokens * (qw + kvw) / x.t, device)
        freed = freed + BF16_BYTES * x.tokens * (qw + kvw + vw) / x.t
    return seconds, freed
