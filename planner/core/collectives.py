"""Alpha-beta collectives over a hierarchy of network tiers.

One tier, n participants, buffer of S bytes (the full, gathered size):
    t = latency_s + S * factor(n) / (bandwidth * efficiency)
with the NCCL bus-bandwidth factors (nccl-tests doc/PERFORMANCE.md): all-reduce 2(n-1)/n;
all-gather, reduce-scatter, all-to-all (n-1)/n; point-to-point 1. n = 1 costs nothing.

A group spanning tiers runs hierarchically (reduce-scatter inside, collective across,
all-gather inside; MAD-Max sec. IV-B): tier i carries n_i / n_{i-1} participants and
S / n_{i-1} bytes, where n_i is the number of group members inside one domain of tier i.
The slowest tier's per-GPU share thus decides large-group cost.

An all-to-all cannot be aggregated that way: every byte goes to its own destination. A member
sends S/n bytes to each of the n members (S its whole send buffer); the n_i - n_{i-1} peers
reachable only through tier i get S (n_i - n_{i-1}) / n bytes over that tier, and the tiers
(NVLink, the NIC) move their shares at the same time, so the collective takes the slowest
tier's time (`all_to_all_time_by_tier`, `all_to_all_time_s`).

Group membership per tier follows the plan's axis order: an axis of degree d whose stride
(product of the degrees inside it) is k has clip(size_i / k, 1, d) members in a tier-i domain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from planner.core.hardware import Cluster

FACTORS = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "p2p": lambda n: np.ones_like(n, dtype=float),
}


def members_per_tier(cluster: Cluster, degrees: Sequence, strides: Sequence) -> list:
    """Members of a group (the product of the given axes) inside one domain of each tier.

    Args:
        degrees: degree of each axis in the group (scalars or arrays).
        strides: stride of each axis: the product of degrees of axes inside it.
    """
    result = []
    for index in range(len(cluster.tiers)):
        size = cluster.tier_size(index)
        inside = 1.0
        for degree, stride in zip(degrees, strides, strict=True):
            inside = inside * np.clip(size / np.asarray(stride, dtype=float), 1.0, degree)
        result.append(inside)
    result[-1] = np.prod([np.asarray(d, dtype=float) for d in degrees], axis=0)
    return result


def collective_time_by_tier(kind: str, num_bytes, members: Sequence, cluster: Cluster) -> list:
    """Hierarchical collective time per tier (seconds); `members` from `members_per_tier`.

    Each entry is 0 where the group has a single member in that tier's step.
    """
    if kind == "all_to_all":
        raise ValueError("an all-to-all does not aggregate hierarchically: use all_to_all_time_by_tier")
    factor = FACTORS[kind]
    parts = []
    inner = 1.0
    for tier, count in zip(cluster.tiers, members, strict=True):
        count = np.asarray(count, dtype=float)
        n = np.maximum(count / inner, 1.0)
        size = np.asarray(num_bytes, dtype=float) / inner
        time = tier.latency_s + size * factor(n) / (tier.bandwidth_bytes_per_s * tier.efficiency)
        parts.append(np.where(n > 1.0, time, 0.0))
        inner = np.maximum(count, inner)
    return parts


def collective_time_s(kind: str, num_bytes, members: Sequence, cluster: Cluster):
    """Total hierarchical collective time (sum over tiers); 0 for a group of one."""
    return sum(collective_time_by_tier(kind, num_bytes, members, cluster))


def all_to_all_time_by_tier(num_bytes, members: Sequence, cluster: Cluster) -> list:
    """Per tier, the time to move one member's share of an all-to-all over that tier (seconds).

    `num_bytes` is what one member sends in all (S/n to each member, itself included);
    `members` from `members_per_tier`. See the module doc; the collective takes the maximum.
    """
    total = np.maximum(np.asarray(members[-1], dtype=float), 1.0)
    parts = []
    inner = 1.0
    for tier, count in zip(cluster.tiers, members, strict=True):
        count = np.maximum(np.asarray(count, dtype=float), inner)
        share = np.asarray(num_bytes, dtype=float) * (count - inner) / total
        time = tier.latency_s + share / (tier.bandwidth_bytes_per_s * tier.efficiency)
        parts.append(np.where(count > inner, time, 0.0))
        inner = count
    return parts


def all_to_all_time_s(num_bytes, members: Sequence, cluster: Cluster):
    """An all-to-all: its slowest tier (the tiers run at once); 0 for a group of one."""
    return np.maximum.reduce([np.asarray(x, dtype=float) for x in all_to_all_time_by_tier(num_bytes, members, cluster)])


def p2p_time_s(num_bytes, crosses_tier: Sequence, cluster: Cluster):
    """Point-to-point send between neighbours; uses the outermost tier the hop crosses.

    `crosses_tier[i]` is truthy when neighbours lie in different domains of tier i-1, i.e.
    the hop needs tier i. The innermost tier is used when nothing is crossed.
    """
    time = 0.0
    chosen = np.zeros_like(np.asarray(num_bytes, dtype=float), dtype=bool)
    for index in range(len(cluster.tiers) - 1, -1, -1):
        tier = cluster.tiers[index]
        use = np.logical_and(np.asarray(crosses_tier[index], dtype=bool), ~chosen) if index else ~chosen
        t = tier.latency_s + np.asarray(num_bytes, dtype=float) / (tier.bandwidth_bytes_per_s * tier.efficiency)
        time = np.where(use, t, time)
        chosen = chosen | use
    return time
