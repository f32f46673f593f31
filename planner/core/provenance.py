"""Where a plan came from: the solver, its status and proof, and the problem it was made for.

Shared by every workload family's plans (a plan is input and output alike).
"""

from __future__ import annotations

from pydantic import Field

from planner.core.schema import Name, Spec


class Provenance(Spec):
    """Who produced a plan and how good it is known to be."""

    solver: Name = "user"
    status: Name = "given"
    objective_s: float | None = Field(default=None, ge=0)
    best_bound_s: float | None = Field(default=None, ge=0)
    objective_tokens_per_s_per_gpu: float | None = Field(
        default=None, ge=0, description="A serving plan's objective (output tokens/s per GPU, maximised).")
    best_bound_tokens_per_s_per_gpu: float | None = Field(
        default=None, ge=0, description="The serving search's proven upper bound on that objective.")
    gap: float | None = Field(default=None, ge=0, le=1)
    wall_time_s: float | None = Field(default=None, ge=0)
    problem_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{1,64}$",
                                     description="Hex digest of the problem (the `hash` of the problem it was made for).")
