"""The Pareto front of a sweep: the scenarios no other scenario beats on every objective.

Every objective is minimised. A point is dominated when another is no worse on every objective
and strictly better on at least one; equal points do not dominate each other (both stay on the
front). Points with a missing objective (no plan, no price) are never on the front.
"""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether `a` is no worse than `b` everywhere and better somewhere (minimisation)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_flags(points: Sequence[Sequence[float] | None]) -> list[bool]:
    """For each point, whether it is on the front. Sorting by the objectives first means a point
    can only be dominated by one before it, so each is checked against the front so far
    (O(n x front) rather than O(n^2))."""
    order = sorted((i for i, p in enumerate(points) if p is not None), key=lambda i: tuple(points[i]))
    front: list[int] = []
    for i in order:
        if not any(dominates(points[j], points[i]) for j in front):
            front.append(i)
    flags = [False] * len(points)
    for i in front:
        flags[i] = True
    return flags
