"""Memory of one GPU of a serving replica, and the largest batch that fits.

Per GPU of stage s (L_s layers, TP degree t, H_kv KV heads per rank = max(g / t, 1)):
    weights    L_s (attention + MLP weights / t) w + 2 L_s h x 2 B (norms, bf16)
               + the vocabulary-parallel embedding (first stage) and LM head (last stage),
               V h / t x 2 B each (kept in bf16 by fp8 and fp4 checkpoints; a tied head is the
               embedding when both are on one stage)
    KV cache   B x (KV tokens per sequence) x L_s x 2 H_kv d x KV bytes
               GQA: 2 x layers x kv_heads x head_dim x dtype bytes per token of the whole model
               (Llama-3 70B in bf16: 2 x 80 x 8 x 128 x 2 B = 327,680 B = 320 KiB)
    workspace  the activations of the largest pass: M tokens x 2 B x (3h + QKV/t + (3 or 2) f/t)
               (input, residual and normed hidden state; Q, K, V; the MLP's intermediates)
               plus the fp32 logits of the sequences sampled, S x V x 4 B
    overhead   the engine's fixed overhead (CUDA context, NCCL and GEMM workspaces, graphs)
Usable: HBM x gpu_memory_utilization. KV tokens per sequence: with static batching every
sequence holds its whole context (prompt + output) at the end of the batch, rounded up to whole
KV blocks; with continuous batching a slot holds, on average over its life, the time-weighted
mean context of the request mix plus half a block of paging slack.

Mixture-of-experts models (planner.serving.moe): the weights of a stage by layer kind (routed
experts E / ep whole per GPU with ep > 1, 1/tp of each with ep = 1; attention split over the
attention group: tp, or 1 with dp_attention), the KV cache per token and layer of one rank
(MLA: kv_lora_rank + qk_rope_head_dim elements, the same on every TP rank -- TP attention holds
every sequence of the replica on each of its tp ranks, dp_attention ceil(B / tp) per rank), and
the workspace of planner.serving.moe.workspace_elements_per_token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.llm.cost import flops
from planner.serving import moe
from planner.serving.forward import ACTIVATION_BYTES, kv_heads_per_gpu
from planner.serving.plan import ServingPlan
from planner.serving.problem import ServingProblem

LOGIT_BYTES = 4.0
"""fp32 logits per vocabulary entry of a sampled sequence."""


def kv_cache_bytes_per_token(problem: ServingProblem) -> float:
    """KV-cache bytes one token occupies over the whole model (all layers and KV heads):
    2 (K and V) x layers x kv_heads x head_dim x dtype bytes."""
    model = problem.model
    if model.family == "moe":
        return moe.kv_cache_bytes_per_token(model, problem.task.kv_bytes)
    return 2.0 * model.num_layers * model.kv_heads * model.dim_per_head * problem.task.kv_bytes


def kv_cache_bytes_per_token_gpu(problem: ServingProblem, tp: int, layers: int, dp_attention: bool = False) -> float:
    """KV-cache bytes one token occupies on one GPU of a stage of `layers` layers (MLA: the
    whole latent on every rank of the attention group)."""
    if problem.model.family == "moe":
        ta = moe.attention_tp(tp, dp_attention)
        return layers * moe.kv_elements_per_token_layer(problem.model, ta) * problem.task.kv_bytes
    return 2.0 * layers * kv_heads_per_gpu(problem, tp) * problem.model.dim_per_head * problem.task.kv_bytes


def stage_layers(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage: as even as possible, the extra layers on the first stages."""
    base, extra = divmod(num_layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def stage_kinds(num_layers: int, pp: int) -> list[tuple[int, int, bool, bool]]:
    """The distinct stages as (first stage index of the kind, layers, first?, last?): at most
    four kinds however many stages there are (the first, the last, and the middle stages with
    one more or one fewer layer), so that a deep pipeline is priced in constant time."""
    kinds: dict[tuple[int, bool, bool], int] = {}
    for index, layers in _sparse_stages(num_layers, pp):
        kinds.setdefault((layers, index == 0, index == pp - 1), index)
    return [(index, layers, first, last) for (layers, first, last), index in kinds.items()]


def stage_shapes(problem: ServingProblem, pp: int) -> list[tuple[int, int, int, bool, bool]]:
    """The distinct stages as (first index of the kind, layers, MoE layers, first?, last?): the
    dense model's `stage_kinds` with no MoE layer; for a mixture-of-experts model every stage's
    MoE layers counted (which layers are MoE depends on their position) and the stages grouped
    by all four."""
    model = problem.model
    if model.family != "moe":
        return [(index, layers, 0, first, last) for index, layers, first, last in stage_kinds(model.num_layers, pp)]
    kinds: dict[tuple[int, int, bool, bool], int] = {}
    for index, (layers, moe_layers) in enumerate(zip(stage_layers(model.num_layers, pp),
                                                     moe.stage_moe_layers(model, pp), strict=True)):
        kinds.setdefault((layers, moe_layers, index == 0, index == pp - 1), index)
    return [(index, layers, moe_layers, first, last) for (layers, moe_layers, first, last), index in kinds.items()]


def _sparse_stages(num_layers: int, pp: int) -> list[tuple[int, int]]:
    """(index, layers) of the stages that can differ: the first two, the last two, and the
    boundary between the stages with one extra layer and those without."""
    base, extra = divmod(num_layers, pp)
    indices = sorted({0, 1, extra - 1, extra, pp - 2, pp - 1} & set(range(pp)))
    return [(i, base + (1 if i < extra else 0)) for i in indices]


def mean_context_tokens(problem: ServingProblem) -> float:
    """Time-weighted mean context of a decoding slot under continuous batching: a request of
    i prompt and o output tokens decodes at contexts i+1..i+o, so it adds o i + o (o+1) / 2 token-
    steps over o steps; the mix weights requests by their share."""
    mix = problem.task.requests.mix()
    steps = sum(w * o for _, o, w in mix)
    return sum(w * (o * i + o * (o + 1) / 2.0) for i, o, w in mix) / steps


def kv_tokens_per_sequence(problem: ServingProblem) -> float:
    """KV tokens one sequence of the batch holds for sizing (see the module doc)."""
    task = problem.task
    block = task.engine.kv_block_tokens
    if task.engine.batching == "static":
        return float(math.ceil(task.requests.max_context_tokens / block) * block)
    return mean_context_tokens(problem) + (block - 1) / 2.0


def weight_bytes_per_gpu(problem: ServingProblem, tp: int, layers: int, first: bool, last: bool) -> float:
    """Weights held by one GPU of a stage (see the module doc)."""
    model, task = problem.model, problem.task
    h, hd = model.hidden_size, model.dim_per_head
    if model.family == "moe":
        raise ValueError("weight_bytes_per_gpu prices dense stages; an MoE stage is moe_weight_bytes_per_gpu")
    kvh = kv_heads_per_gpu(problem, tp)
    attention = h * model.attention_width / tp + 2 * h * kvh * hd + model.attention_output_width / tp * h
    mlp = flops.mlp_params(model) / tp
    if model.linear_bias:
        attention += model.attention_width / tp + 2 * kvh * hd + h
    total = layers * ((attention + mlp) * task.weight_bytes + 2 * flops.norm_params(model) * ACTIVATION_BYTES)
    return _vocab_bytes(problem, tp, first, last, total)


def moe_weight_bytes_per_gpu(problem: ServingProblem, plan: ServingPlan, layers: int, moe_layers: int, first: bool,
                             last: bool) -> float:
    """Weights held by one GPU of a stage of a mixture-of-experts model (module doc)."""
    total = moe.layer_weight_bytes(problem.model, plan.tp, plan.ep, plan.dp_attention, moe_layers,
                                  layers - moe_layers, problem.task.weight_bytes, ACTIVATION_BYTES)
    return _vocab_bytes(problem, plan.tp, first, last, total)


def _vocab_bytes(problem: ServingProblem, tp: int, first: bool, last: bool, total: float) -> float:
    """`total` plus the vocabulary-parallel embedding (first stage), LM head and final norm (last)."""
    model = problem.model
    h = model.hidden_size
    vocab = model.vocab_size * h / tp * ACTIVATION_BYTES
    if first:
        total += vocab
        if model.position_embedding == "learned":
            total += model.max_seq_len * h * ACTIVATION_BYTES
    if last:
        total += flops.norm_params(model) * ACTIVATION_BYTES
        if not (model.tied_embeddings and first):
            total += vocab
    return total


def workspace_bytes_per_token(problem: ServingProblem, tp: int, dp_attention: bool = False) -> float:
    """Activation bytes of one token of a pass on one GPU (see the module doc)."""
    model = problem.model
    h, hd = model.hidden_size, model.dim_per_head
    if model.family == "moe":
        return ACTIVATION_BYTES * moe.workspace_elements_per_token(model, tp, dp_attention)
    qkv = model.attention_width / tp + 2 * kv_heads_per_gpu(problem, tp) * hd
    ffn = (3 if model.gated_mlp else 2) * model.ffn_hidden_size / tp
    return ACTIVATION_BYTES * (3 * h + qkv + ffn)


@dataclass(frozen=True)
class StageMemory:
    """One GPU of one stage at a given batch (bytes)."""

    stage: int
    layers: int
    weights_bytes: float
    kv_cache_bytes: float
    workspace_bytes: float
    overhead_bytes: float
    capacity_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_cache_bytes + self.workspace_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes


def pass_tokens(problem: ServingProblem, plan: ServingPlan, micro_batch: int) -> float:
    """Tokens of the largest pass of a micro-batch: the token budget with continuous batching;
    the micro-batch's whole prompts with static batching."""
    task = problem.task
    if task.engine.batching == "static":
        return micro_batch * max(i for i, _, _ in task.requests.mix())
    return max(plan.max_num_batched_tokens, micro_batch)


def stage_memory(problem: ServingProblem, plan: ServingPlan, batch: int) -> list[StageMemory]:
    """Memory of one GPU of each kind of stage (`stage_kinds`: every stage is like one of them)
    with `batch` sequences on the replica (ceil(batch/pp) per micro-batch)."""
    task, device = problem.task, problem.cluster.device
    micro = math.ceil(batch / plan.pp)
    capacity = device.hbm_bytes * task.engine.gpu_memory_utilization
    per_seq_tokens = kv_tokens_per_sequence(problem)
    is_moe = problem.model.family == "moe"
    # Sequences whose KV cache one GPU holds: the replica's, or with dp_attention the largest
    # rank's share.
    held = math.ceil(batch / plan.tp) if plan.dp_attention else batch
    result = []
    for index, layers, moe_layers, first, last in stage_shapes(problem, plan.pp):
        workspace = pass_tokens(problem, plan, micro) * workspace_bytes_per_token(problem, plan.tp, plan.dp_attention)
        if last:
            workspace += micro * problem.model.vocab_size * LOGIT_BYTES
        weights = (moe_weight_bytes_per_gpu(problem, plan, layers, moe_layers, first, last) if is_moe
                   else weight_bytes_per_gpu(problem, plan.tp, layers, first, last))
        result.append(StageMemory(
            stage=index, layers=layers, weights_bytes=weights,
            kv_cache_bytes=held * per_seq_tokens * kv_cache_bytes_per_token_gpu(problem, plan.tp, layers,
                                                                                plan.dp_attention),
            workspace_bytes=workspace, overhead_bytes=task.engine.framework_overhead_bytes,
            capacity_bytes=capacity,
        ))
    return result


def fits(problem: ServingProblem, plan: ServingPlan, batch: int) -> bool:
    return all(s.fits for s in stage_memory(problem, plan, batch))


MAX_BATCH = 2**24
"""Largest batch per replica searched."""


def max_batch(problem: ServingProblem, plan: ServingPlan) -> int:
    """The largest batch (sequences per replica; 0 when not even one fits) whose every stage
    fits; memory grows monotonically with the batch, so a bisection finds it."""
    if not fits(problem, plan, 1):
        return 0
    low, high = 1, 2
    while high <= MAX_BATCH and fits(problem, plan, high):
        low, high = high, high * 2
    high = min(high, MAX_BATCH + 1)
    while high - low > 1:
        mid = (low + high) // 2
        if fits(problem, plan, mid):
            low = mid
        else:
            high = mid
    return low
