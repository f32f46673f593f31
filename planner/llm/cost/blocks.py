"""The block kinds of a model and what each holds: dense blocks, MoE blocks, MTP modules.

A stage holds `layers` blocks of which `moe_layers` are MoE blocks (the rest dense). In MoE
models full recompute applies to MoE blocks (a stage recomputes at most its MoE blocks). The last
stage also holds the model's multi-token-prediction modules (DeepSeek-V3: one), each an MoE
block, a 2h -> h projection and a second pass through the shared LM head.

Parameters per GPU of a block, split by the group that reduces (and ZeRO-shards) them:
    grid    attention, norms, dense MLP, shared experts (TP-sharded), router (replicated):
            gradients reduced over DP x CP, as in a dense model
    expert  (E / ep) routed experts of width f / etp: gradients reduced over EDP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.llm.cost import flops, moe_params
from planner.llm.cost.layer import LayerCost, layer_cost
from planner.llm.cost.layout import PlanVars
from planner.llm.problem import Problem


@dataclass(frozen=True)
class Blocks:
    """The priced block kinds of one plan (or candidate arrays)."""

    dense: LayerCost
    moe: LayerCost | None
    moe_routed_tokens: object = 0.0  # R: tokens the busiest GPU's experts process per micro-batch

    @property
    def tokens(self):
        return self.dense.tokens

    def total(self, attr: str, dense_count, moe_count):
        """dense_count x the dense block's `attr` + moe_count x the MoE block's."""
        value = np.asarray(dense_count, dtype=float) * getattr(self.dense, attr)
        if self.moe is None:
            return value
        return value + np.asarray(moe_count, dtype=float) * getattr(self.moe, attr)

    def per_layer(self, attr: str, dense_count, moe_count):
        """The mean over a stage's blocks of `attr` (the dense block's for a dense model; the
        MoE block's for an empty stage of an MoE model)."""
        if self.moe is None:
            return getattr(self.dense, attr)
        dense_count = np.asarray(dense_count, dtype=float)
        moe_count = np.asarray(moe_count, dtype=float)
        count = dense_count + moe_count
        mean = self.total(attr, dense_count, moe_count) / np.where(count > 0, count, 1.0)
        return np.where(count > 0, mean, getattr(self.moe, attr))

    def recomputed(self, attr: str):
        """A fully recomputed block's `attr`: the dense block's in a dense model, the MoE
        block's in an MoE model (full recompute applies to its MoE blocks only; dense blocks
        keep their activations)."""
        return getattr(self.dense if self.moe is None else self.moe, attr)

    def largest(self, attr: str):
        """The larger of the kinds' `attr` (the model's blocks, wherever they sit)."""
        if self.moe is None:
            return getattr(self.dense, attr)
        return np.maximum(getattr(self.dense, attr), getattr(self.moe, attr))


def block_costs(problem: Problem, v: PlanVars) -> Blocks:
    dense = layer_cost(problem, v)
    if problem.model.family != "moe":
        return Blocks(dense=dense, moe=None)
    from planner.llm.cost.layer import context
    from planner.llm.cost.moe import moe_layer_cost, routed_tokens

    return Blocks(dense=dense, moe=moe_layer_cost(problem, v), moe_routed_tokens=routed_tokens(problem, v, context(problem, v)))


def mtp_layers(problem: Problem) -> int:
    return getattr(problem.model, "mtp_layers", 0)


@dataclass(frozen=True)
class BlockParams:
    """Parameters per GPU of one block of each kind (see the module doc)."""

    dense: object
    moe_grid: object
    moe_expert: object
    mtp_grid: object  # one MTP module, its grid part (its MoE block's experts are moe_expert)


def block_params(problem: Problem, v: PlanVars) -> BlockParams:
    model = problem.model
    t = np.asarray(v.tp, dtype=float)
    if model.family != "moe":
        return BlockParams(dense=flops.layer_params(model) / t, moe_grid=0.0, moe_expert=0.0, mtp_grid=0.0)
    dense = moe_params.dense_layer_params(model) / t if model.ffn_hidden_size else 0.0
    grid = (moe_params.attention_params(model) + moe_params.norm_params(model)
            + moe_params.shared_expert_params(model)) / t + moe_params.router_params(model)
    ep = np.asarray(v.ep, dtype=float)
    etp = np.asarray(v.etp, dtype=float)
    expert = model.moe.num_experts / ep * moe_params.expert_params(model) / etp
    h = model.hidden_size
    return BlockParams(dense=dense, moe_grid=grid, moe_expert=expert, mtp_grid=grid + 2 * h * h / t + 2 * h)


def layer_mix(model, plan_layers: list[int], virtual_stages: int) -> list[int]:
    """MoE blocks on each stage of a concrete partition.

    Interleaved, stage i holds one chunk in each of the v rounds; the rounds run in order and,
    inside one, the stages do. A stage of n layers has chunks of n // v layers, the later
    n % v rounds one more (Megatron's DeepSeek-V3 layout "Et|(tt|)*30mL" gives stage 0 one
    layer in its first chunk and two in the others).
    """
    if getattr(model, "family", "dense") != "moe":
        return [0] * len(plan_layers)
    kinds = model.moe_layers
    v = virtual_stages
    sizes = [[n // v + (1 if r >= v - n % v else 0) for r in range(v)] for n in plan_layers]
    counts = [0] * len(plan_layers)
    position = 0
    for r in range(v):
        for i, stage in enumerate(sizes):
            counts[i] += sum(kinds[position:position + stage[r]])
            position += stage[r]
    return counts
