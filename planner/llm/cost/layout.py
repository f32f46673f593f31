"""Plan variables as arrays, and where each axis's process group sits in the network.

`PlanVars` holds the decisions of one plan (Python scalars) or of many candidate plans
(numpy arrays of equal length); every cost function takes it and broadcasts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.core.collectives import members_per_tier
from planner.core.hardware import Cluster
from planner.llm.plan import Plan

RECOMPUTE_CODES = {"none": 0, "selective": 1, "full": 2}
DISPATCHER_CODES = {"alltoall": 0, "allgather": 1, "flex": 2}
AXES = ("tp", "cp", "dp", "pp")


@dataclass(frozen=True)
class PlanVars:
    """Decision variables; each field a scalar or an array over candidates."""

    tp: object
    cp: object
    pp: object
    dp: object
    virtual_stages: object
    micro_batch_size: object
    sp: object
    tp_comm_overlap: object
    zero_stage: object
    shard_size: object
    recompute: object  # RECOMPUTE_CODES
    strides: dict  # axis -> stride (product of degrees of axes inside it)
    ep: object = 1
    etp: object = 1
    dispatcher: object = 0  # DISPATCHER_CODES
    ep_comm_overlap: object = 0
    num_sequences: object = 0  # the plan's own global batch (sequences); 0 = the task's
    recompute_modules: frozenset = frozenset({"core_attn"})  # what selective recompute re-runs; one set
    # for all candidates (a scalar to the array helpers: np.ndim of a frozenset is 0)

    @classmethod
    def from_plan(cls, plan: Plan) -> PlanVars:
        return cls(
            tp=plan.tp,
            cp=plan.cp,
            pp=plan.pp,
            dp=plan.dp,
            virtual_stages=plan.virtual_stages,
            micro_batch_size=plan.micro_batch_size,
            sp=int(plan.sp),
            tp_comm_overlap=int(plan.tp_comm_overlap),
            zero_stage=plan.zero_stage,
            shard_size=plan.shard_size,
            recompute=RECOMPUTE_CODES[plan.recompute],
            strides=strides_for(plan.axis_order, {a: plan.degree(a) for a in AXES}),
            ep=plan.ep,
            etp=plan.etp,
            dispatcher=DISPATCHER_CODES[plan.dispatcher],
            ep_comm_overlap=int(plan.ep_comm_overlap),
            num_sequences=plan.global_batch_size or 0,
            recompute_modules=frozenset(plan.selective_modules),
        )

    def sequences(self, task):
        """Global batch in sequences: the plan's own (num_sequences), else the task's."""
        own = np.asarray(self.num_sequences, dtype=float)
        return np.where(own > 0, own, float(task.num_sequences))

    @property
    def edp(self):
        """Expert data-parallel degree: tp*cp*dp / (etp*ep)."""
        return (np.asarray(self.tp) * np.asarray(self.cp) * np.asarray(self.dp)
                // (np.asarray(self.etp) * np.asarray(self.ep)))


def strides_for(axis_order, degrees: dict) -> dict:
    """Stride of each axis = product of the degrees of the axes listed before it."""
    stride = 1
    result = {}
    for axis in axis_order:
        result[axis] = stride
        stride = stride * np.asarray(degrees[axis])
    return result


def group_members(cluster: Cluster, v: PlanVars, axes: tuple[str, ...]) -> list:
    """Members per tier domain of the group spanned by `axes` (see collectives)."""
    degrees = [getattr(v, a) for a in axes]
    strides = [v.strides[a] for a in axes]
    return members_per_tier(cluster, degrees, strides)


def pp_hop_crosses(cluster: Cluster, v: PlanVars) -> list:
    """For each tier i, whether some pipeline hop leaves a domain of tier i-1.

    Consecutive stages are `stride_pp` ranks apart; a hop stays inside a tier-(i-1) domain
    only if the whole pipeline (stride * pp ranks) fits in it.
    """
    crosses = [True]
    for index in range(1, len(cluster.tiers)):
        inner = cluster.tier_size(index - 1)
        crosses.append(np.asarray(v.strides["pp"]) * np.asarray(v.pp) > inner)
    return crosses
