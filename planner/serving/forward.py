"""One forward pass of one pipeline stage on one GPU: the weight GEMMs, attention, the
memory-bound ops, the LM head and the TP collectives, for a pass that carries decode tokens
(one per sequence, attending to its KV cache) and prompt tokens (prefill, attending causally).

Weight GEMMs (M tokens x K -> N, the TP shard of each matrix): a roofline of the repository's
two kernel models, t = max(GEMM time, HBM time), with
    GEMM time = planner.core.kernels.gemm_time_s(2 M K N FLOPs, one call)   (plateau + per-call cost)
    HBM time  = planner.core.kernels.memory_bound_time_s(K N w + M (K a + 2 N))
w the bytes per weight (planner.serving.task.WEIGHT_BYTES), a those per GEMM input (1 for fp8 and
fp4 GEMMs, 2 else), outputs in bf16. At decode sizes (M = a few sequences) the weights stream
from HBM once per pass and the GEMM is memory-bound; a prefill pass (M = thousands of tokens) is
compute-bound. Four GEMMs per layer: fused QKV, output projection, fused up(+gate), down.

Attention: decode tokens read their sequence's K and V (2 x kv heads on this GPU x head dim x
KV bytes per token of context) at the HBM fraction -- once per KV head with a grouped kernel,
once per query head with a per-query-head kernel (planner.serving.task.Engine.decode_attention).
Prompt tokens run fused (flash) attention on the causal half: 2 x (query-key pairs) x (q + v
widths) FLOPs at the attention fraction of the bf16 peak (planner.core.kernels). Every new
token's K and V are written to the cache.

Memory-bound ops per token, the training model's conventions (planner.llm.cost.layer): two norms
(4 B x h each: read and write bf16), two residual adds (6 B x h), RoPE (4 B per q and k element),
the activation function (6 B, gated, or 4 B per FFN element), and in fp8/fp4 the cast of each
GEMM input (3 B per element). No sequence parallelism: every TP rank holds the whole hidden state.

TP: two all-reduces of M x h x 2 B per layer (after the output projection and after the down
projection; Megatron-style TP as vLLM, SGLang and TensorRT-LLM run it), priced by
planner.core.collectives over the network tiers the TP group spans: at decode sizes the latency
term dominates. The LM head (bf16: fp8 and fp4 checkpoints keep it unquantized) runs on the
sequences that produce a token, and its vocabulary-parallel logits are all-gathered (bf16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from planner.core import kernels
from planner.core.collectives import collective_time_by_tier, members_per_tier
from planner.serving.problem import ServingProblem

ACTIVATION_BYTES = 2.0
"""Activations, all-reduces and logits travel in bf16."""

PARTS = ("gemm", "attention", "elementwise", "lm_head", "tp_comm", "ep_comm")
"""The parts of a pass's time, in report order; they sum to the pass time (`ep_comm`, the
expert-parallel dispatch and combine of an MoE model, is 0 for a dense one)."""


@dataclass(frozen=True)
class PassLoad:
    """What one pass carries on one stage (per micro-batch)."""

    decode_seqs: float = 0.0
    """Sequences generating one token each."""
    decode_context_tokens: float = 0.0
    """Mean context (tokens already cached) of those sequences."""
    prefill_tokens: float = 0.0
    """Prompt tokens in the pass."""
    prefill_pairs: float = 0.0
    """Causal query-key pairs of the prompt tokens (a prompt of n tokens alone: n^2 / 2)."""
    logit_seqs: float = 0.0
    """Sequences whose last token goes through the LM head in this pass."""

    @property
    def tokens(self) -> float:
        return self.decode_seqs + self.prefill_tokens


@dataclass
class PassCost:
    """Time of one pass on one GPU by part (seconds), with the TP collectives per network tier."""

    gemm: float = 0.0
    attention: float = 0.0
    elementwise: float = 0.0
    lm_head: float = 0.0
    tp_comm: float = 0.0
    ep_comm: float = 0.0
    tp_by_tier: list[float] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return self.gemm + self.attention + self.elementwise + self.lm_head + self.tp_comm + self.ep_comm

    def parts(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PARTS}

    def scaled(self, factor: float) -> PassCost:
        return PassCost(*(getattr(self, n) * factor for n in PARTS), [x * factor for x in self.tp_by_tier])

    def plus(self, other: PassCost) -> PassCost:
        tiers = [a + b for a, b in zip(self.tp_by_tier or [0.0] * len(other.tp_by_tier),
                                       other.tp_by_tier or [0.0] * len(self.tp_by_tier), strict=True)]
        return PassCost(*(getattr(self, n) + getattr(other, n) for n in PARTS), tiers)


def kv_heads_per_gpu(problem: ServingProblem, tp: int) -> int:
    """KV heads on one TP rank: split when TP divides them, else one replicated per rank."""
    return max(problem.model.kv_heads // tp, 1)


def gemm_shapes(problem: ServingProblem, tp: int) -> list[tuple[float, float]]:
    """(K, N) of the four weight GEMMs of a layer on one TP rank."""
    model = problem.model
    h, hd = model.hidden_size, model.dim_per_head
    qkv = model.attention_width / tp + 2 * kv_heads_per_gpu(problem, tp) * hd
    ffn = model.ffn_hidden_size / tp
    return [(h, qkv), (model.attention_output_width / tp, h), (h, (2 if model.gated_mlp else 1) * ffn), (ffn, h)]


def _gemm_s(problem: ServingProblem, tokens: float, k: float, n: float, precision: str, weight_bytes: float,
            input_bytes: float) -> float:
    device = problem.cluster.device
    compute = kernels.gemm_time_s(2.0 * tokens * k * n, 1, device, precision)
    memory = kernels.memory_bound_time_s(k * n * weight_bytes + tokens * (k * input_bytes + n * ACTIVATION_BYTES),
                                         device)
    return float(np.maximum(compute, memory))


def tp_members(problem: ServingProblem, tp: int) -> list:
    """Members of a TP group inside one domain of each tier (TP is the innermost axis)."""
    return members_per_tier(problem.cluster, [tp], [1])


def pass_cost(problem: ServingProblem, tp: int, layers: int, first: bool, last: bool, load: PassLoad) -> PassCost:
    """One pass of `load` through a stage of `layers` layers (with the embedding when `first`,
    the final norm and LM head when `last`) on one GPU of a TP group of `tp`."""
    model, task, cluster = problem.model, problem.task, problem.cluster
    device = cluster.device
    h, hd = model.hidden_size, model.dim_per_head
    tokens = load.tokens
    precision = task.gemm_precision
    low_precision = precision in ("fp8", "fp4")
    input_bytes = 1.0 if low_precision else ACTIVATION_BYTES
    kvh = kv_heads_per_gpu(problem, tp)

    gemm = sum(_gemm_s(problem, tokens, k, n, precision, task.weight_bytes, input_bytes)
               for k, n in gemm_shapes(problem, tp)) if tokens > 0 else 0.0

    # Attention: decode tokens stream their KV cache; prompt tokens run flash attention.
    kv_per_token = 2.0 * kvh * hd * task.kv_bytes
    reads = 1.0
    if task.engine.decode_attention == "per_query_head":
        reads = (model.num_heads / tp) / kvh  # query heads sharing one KV head on this GPU
    kv_traffic = load.decode_seqs * load.decode_context_tokens * kv_per_token * reads + tokens * kv_per_token
    attention = float(kernels.memory_bound_time_s(kv_traffic, device))
    if load.prefill_pairs > 0:
        flops = 2.0 * load.prefill_pairs * (model.attention_width + model.attention_output_width) / tp
        attention += float(kernels.flash_attention_time_s(flops, device)[0])

    # Memory-bound ops per token of a layer.
    f_tp = model.ffn_hidden_size / tp
    per_token = 2 * 4.0 * h + 2 * 6.0 * h + (6.0 if model.gated_mlp else 4.0) * f_tp
    if model.position_embedding == "rope":
        per_token += 4.0 * (model.attention_width / tp + kvh * hd)
    if low_precision:
        per_token += 3.0 * (2 * h + model.attention_output_width / tp + f_tp)
    elementwise = float(kernels.memory_bound_time_s(tokens * per_token, device))

    members = tp_members(problem, tp)
    ar = collective_time_by_tier("all_reduce", tokens * h * ACTIVATION_BYTES, members, cluster)
    tp_by_tier = [2.0 * float(x) * layers for x in ar]

    cost = PassCost(gemm=gemm * layers, attention=attention * layers, elementwise=elementwise * layers,
                    tp_by_tier=tp_by_tier)
    if first:
        cost.elementwise += float(kernels.memory_bound_time_s(tokens * h * ACTIVATION_BYTES * 2, device))
    if last:
        cost.elementwise += float(kernels.memory_bound_time_s(tokens * 4.0 * h, device))  # final norm
        if load.logit_seqs > 0:
            vocab_tp = math.ceil(model.vocab_size / tp)
            cost.lm_head = _gemm_s(problem, load.logit_seqs, h, vocab_tp, "bf16", ACTIVATION_BYTES, ACTIVATION_BYTES)
            gather = collective_time_by_tier("all_gather", load.logit_seqs * model.vocab_size * ACTIVATION_BYTES,
                                             members, cluster)
            cost.tp_by_tier = [a + float(b) for a, b in zip(cost.tp_by_tier, gather, strict=True)]
    cost.tp_comm = sum(cost.tp_by_tier)
    return cost
