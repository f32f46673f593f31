"""Peak memory per GPU of one pipeline stage.

static   weights (2 B/param; fp8 adds a 1 B cast copy) + gradients (grad dtype; plus 2 B when
         the framework keeps low-precision .grad tensors before accumulating) + optimizer
         (fp32 master 4 B + 4 B per moment). ZeRO-1 shards the optimizer over the shard
         group, ZeRO-2 also the gradients, ZeRO-3 also the weights (Rajbhandari et al. 2020).
         Megatron mixed precision: 2 + 4 + 12 = 18 B/param (Korthikanti et al., fig. 1).
activations  per-block bytes (planner.llm.cost.layer) x layers x micro-batches in flight:
         1F1B keeps min(p - i, m) micro-batches on stage i; interleaved keeps
         min(2(p - i - 1) + (v - 1)p + 1, m v) model chunks of L_i / v layers
         (Megatron-Core schedules; Korthikanti et al. sec. 4.2.3 gives p(1 + (p-1)/(pv)) for i=0).
         The first stage also keeps the embedding dropout mask per micro-batch in flight.
transient  one micro-batch's full block activations while a full-recompute block is re-run;
         MoE: the dispatcher's send and receive buffers of one block (2 x R x h x 2 B);
         logits (bf16) + fp32 softmax and its gradient on the last stage; two gathered
         layers (weights and gradients) under ZeRO-3 prefetch, or, where the framework keeps
         a pipeline stage unsharded between micro-batches (torchtitan's FSDP2 with PP), the
         whole stage's weights (2 B) and unsharded gradients.
overhead the framework's fixed bytes (CUDA context, NCCL, workspaces) plus an allocator
         fragmentation fraction of activations. Both are task settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.llm.cost import flops
from planner.llm.cost.blocks import Blocks, block_params, mtp_layers
from planner.llm.cost.layout import PlanVars
from planner.llm.problem import Problem


@dataclass(frozen=True)
class StageMemory:
    """Bytes per GPU on one stage."""

    weights_bytes: object
    grads_bytes: object
    optimizer_bytes: object
    activations_bytes: object
    transient_bytes: object
    overhead_bytes: object

    @property
    def total_bytes(self):
        return (
            self.weights_bytes
            + self.grads_bytes
            + self.optimizer_bytes
            + self.activations_bytes
            + self.transient_bytes
            + self.overhead_bytes
        )


def stage_params(problem: Problem, v: PlanVars, layers, is_first, is_last, moe_layers=0):
    """Parameters held by one GPU of a stage whose gradients reduce over DP x CP (TP-sharded,
    before ZeRO sharding): every parameter of a dense model; of an MoE model all but the
    routed experts (planner.llm.cost.blocks)."""
    model = problem.model
    t = np.asarray(v.tp, dtype=float)
    pp = np.asarray(v.pp)
    per_block = block_params(problem, v)
    moe = np.asarray(moe_layers, dtype=float)
    params = (np.asarray(layers, dtype=float) - moe) * per_block.dense + moe * per_block.moe_grid
    params = params + np.where(is_last, mtp_layers(problem) * per_block.mtp_grid, 0.0)
    params = params + np.where(is_first, flops.embedding_params(model) / t, 0.0)
    # The last stage holds the head; with tied embeddings and pp > 1 it holds a copy.
    head = flops.head_params(model) / t
    if model.tied_embeddings:
        head = head + np.where(pp > 1, model.vocab_size * model.hidden_size / t, 0.0)
    return params + np.where(is_last, head, 0.0)


def stage_expert_params(problem: Problem, v: PlanVars, is_last, moe_layers=0):
    """Routed-expert parameters held by one GPU of a stage (gradients reduce over EDP)."""
    moe = np.asarray(moe_layers, dtype=float) + np.where(is_last, float(mtp_layers(problem)), 0.0)
    return moe * block_params(problem, v).moe_expert


def in_flight_micro_batches(v: PlanVars, stage_index, num_micro_batches):
    """Micro-batches' worth of a stage's activations kept at the peak (see module doc)."""
    p = np.asarray(v.pp, dtype=float)
    vs = np.asarray(v.virtual_stages, dtype=float)
    m = np.asarray(num_micro_batches, dtype=float)
    i = np.asarray(stage_index, dtype=float)
    one_f_one_b = np.minimum(p - i, m)
    chunks = np.minimum(2 * (p - i - 1) + (vs - 1) * p + 1, m * vs)
    return np.where(vs > 1, chunks / vs, one_f_one_b)


def stage_memory(
    problem: Problem,
    v: PlanVars,
    blocks: Blocks,
    layers,
    recomputed_layers,
    stage_index,
    is_first,
    is_last,
    num_micro_batches,
    logits_bytes,
    moe_layers=0,
) -> StageMemory:
    model, task = problem.model, problem.task
    framework, optimizer = task.framework, task.optimizer
    zero = np.asarray(v.zero_stage)
    # Megatron-Core's distributed optimizer shards over the data-parallel x context-parallel
    # group, and routed experts over the expert data-parallel group.
    shard = np.asarray(v.shard_size, dtype=float) * np.asarray(v.cp, dtype=float)
    expert_shard = np.asarray(v.edp, dtype=float)
    t = np.asarray(v.tp, dtype=float)
    params = stage_params(problem, v, layers, is_first, is_last, moe_layers)
    experts = stage_expert_params(problem, v, is_last, moe_layers)

    def sharded(per_param, from_stage):
        return (params * per_param / np.where(zero >= from_stage, shard, 1.0)
                + experts * per_param / np.where(zero >= from_stage, expert_shard, 1.0))

    weight_bytes_per_param = 2.0 + (1.0 if task.precision == "fp8" else 0.0)
    grad_bytes_per_param = 4.0 if framework.grad_dtype == "fp32" else 2.0
    optimizer_bytes_per_param = (4.0 if optimizer.master_weights else 0.0) + 4.0 * optimizer.num_states
    weights = sharded(weight_bytes_per_param, 3)
    grads = sharded(grad_bytes_per_param, 2)
    if framework.low_precision_grads:
        grads = grads + (params + experts) * 2.0
    opt = sharded(optimizer_bytes_per_param, 1)

    recompute = np.asarray(v.recompute)
    layers = np.asarray(layers, dtype=float)
    moe = np.asarray(moe_layers, dtype=float)
    mtp = np.where(is_last, float(mtp_layers(problem)), 0.0)
    recomputed = np.asarray(recomputed_layers, dtype=float)
    selective = recompute == 1

    def kept(block):
        return np.where(selective, block.activation_selective_bytes, block.activation_none_bytes)

    # Fully recomputed blocks (MoE blocks in an MoE model) keep only their input.
    per_micro_batch = (layers - moe) * kept(blocks.dense)
    if blocks.moe is not None:
        per_micro_batch = per_micro_batch + moe * kept(blocks.moe)
    redone = blocks.dense if blocks.moe is None else blocks.moe
    per_micro_batch = per_micro_batch + recomputed * (redone.activation_full_bytes - kept(redone))
    # MTP modules keep their MoE block's activations and the head's input.
    if blocks.moe is not None:
        per_micro_batch = per_micro_batch + mtp * (blocks.moe.activation_none_bytes + 2.0 * blocks.tokens * model.hidden_size)
    # The embedding output is the first block's input (already counted); only its dropout
    # mask is extra (Korthikanti et al. sec. 4.3).
    sp = np.asarray(v.sp, dtype=bool)
    embedding_mask = (1.0 if model.dropout else 0.0) * blocks.tokens * model.hidden_size / np.where(sp, t, 1.0)
    per_micro_batch = per_micro_batch + np.where(is_first, embedding_mask, 0.0)
    in_flight = in_flight_micro_batches(v, stage_index, num_micro_batches)
    activations = per_micro_batch * in_flight

    transient = np.where(recomputed > 0, blocks.recomputed("activation_none_bytes"), 0.0)
    transient = transient + np.where(is_last, logits_bytes, 0.0)
    per_block = block_params(problem, v)
    largest_block = np.maximum(per_block.dense, per_block.moe_grid + per_block.moe_expert)
    gathered = 2.0 * largest_block * (2.0 + grad_bytes_per_param)
    if task.framework.facts.pp_keeps_unsharded:
        # FSDP with a pipeline (torchtitan): the whole stage stays gathered (2 B per parameter)
        # and its gradients accumulate unsharded from the first forward to the last backward.
        held = (params + experts) * (2.0 + grad_bytes_per_param)
        gathered = np.where(np.asarray(v.pp) > 1, np.maximum(held, gathered), gathered)
    transient = transient + np.where(zero >= 3, gathered, 0.0)
    if blocks.moe is not None:
        # The dispatcher's buffers for the block being run: the permuted tokens sent and the
        # tokens received, bf16 (an all-to-all cannot work in place).
        transient = transient + 2.0 * 2.0 * blocks.moe_routed_tokens * model.hidden_size

    overhead = framework.framework_overhead_bytes + framework.allocator_fragmentation * activations
    return StageMemory(
        weights_bytes=weights,
        grads_bytes=grads,
        optimizer_bytes=opt,
        activations_bytes=activations,
        transient_bytes=transient,
        overhead_bytes=overhead,
    )
