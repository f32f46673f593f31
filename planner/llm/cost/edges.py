"""The edge layers of the pipeline: input embedding (first stage), final norm, LM head and
loss (last stage). Per micro-batch, per GPU.

Megatron shards the vocabulary over TP (vocab-parallel embedding and head): the embedding
lookup produces a partial T x h output reduced over TP (reduce-scatter with SP); the head
is a T x h x V/t GEMM followed by a cross-entropy whose softmax statistics are all-reduced
(three T-sized fp32 all-reduces: max, sum, target logit).

The head GEMM runs in bf16 even in fp8 training (Transformer Engine casts only the blocks'
linear layers). The vocab-parallel cross-entropy is a chain of unfused fp32 kernels over the
T x V/t logits (Megatron-LM core/tensor_parallel/cross_entropy.py): cast to fp32 (2+4 B),
max (4), subtract (8), exp (8), sum (4), normalise (8) = 38 B per logit forward; backward
subtracts the one-hot, scales and casts back (8 + 8 + 6 = 22 B). The embedding backward
builds a dense V/t x h gradient (zero-fill and scatter-add, 4 B) and adds it into the fp32
main gradient (4 + 4 B) every micro-batch: 12 B per embedding parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.core import kernels
from planner.core.collectives import collective_time_s
from planner.llm.cost.flops import head_flops_per_token
from planner.llm.cost.layout import PlanVars, group_members
from planner.llm.problem import Problem


@dataclass(frozen=True)
class EdgeCost:
    """Seconds per micro-batch; compute and exposed TP communication kept apart."""

    embedding_fwd_s: object
    embedding_bwd_s: object
    embedding_tp_s: object
    head_fwd_s: object
    head_bwd_s: object
    head_tp_s: object
    logits_bytes: object  # transient on the last stage: bf16 logits + fp32 softmax + fp32 grad


def edge_cost(problem: Problem, v: PlanVars, tokens) -> EdgeCost:
    model, task, cluster = problem.model, problem.task, problem.cluster
    device = cluster.device
    h, vocab = model.hidden_size, model.vocab_size
    t = np.asarray(v.tp, dtype=float)
    sp = np.asarray(v.sp, dtype=bool)
    tp_members = group_members(cluster, v, ("tp",))
    act_bytes = tokens * h * 2.0

    lookups = 2.0 if model.position_embedding == "learned" else 1.0
    emb_fwd = kernels.memory_bound_time_s(4.0 * tokens * h * lookups, device)
    emb_bwd = emb_fwd + kernels.memory_bound_time_s(12.0 * vocab * h / t, device)
    emb_tp = np.where(
        sp,
        collective_time_s("reduce_scatter", act_bytes, tp_members, cluster)
        + collective_time_s("all_gather", act_bytes, tp_members, cluster),
        collective_time_s("all_reduce", act_bytes, tp_members, cluster),
    )

    head_flops = tokens * head_flops_per_token(model) / t
    logits = tokens * vocab / t
    norm = kernels.memory_bound_time_s(8.0 * tokens * h / np.where(sp, t, 1.0), device)
    head_precision = "fp16" if task.precision == "fp16" else "bf16"
    head_fwd = kernels.gemm_time_s(head_flops, 1, device, head_precision) + norm
    head_fwd = head_fwd + kernels.memory_bound_time_s(38.0 * logits, device)
    head_bwd = kernels.gemm_time_s(2 * head_flops, 2, device, head_precision) + 2 * norm
    head_bwd = head_bwd + kernels.memory_bound_time_s(22.0 * logits, device)
    loss_stats = 3 * collective_time_s("all_reduce", tokens * 4.0, tp_members, cluster)
    head_tp = emb_tp + loss_stats
    return EdgeCost(
        embedding_fwd_s=emb_fwd,
        embedding_bwd_s=emb_bwd,
        embedding_tp_s=emb_tp,
        head_fwd_s=head_fwd,
        head_bwd_s=head_bwd,
        head_tp_s=head_tp,
        logits_bytes=logits * (2.0 + 4.0 + 4.0),
    )
