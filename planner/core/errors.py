"""Typed errors with actionable messages. Statuses are results; these are failures."""

from __future__ import annotations


class PlannerError(Exception):
    """Base class for every error the planner raises on purpose."""


class InputError(PlannerError):
    """Bad input: a file that cannot be read, or a field that fails validation.

    The message names the file and the dotted path of every offending field.
    """


class PlanError(PlannerError):
    """A plan that is inconsistent with its problem (degrees that do not divide, etc.)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid plan:\n" + "\n".join(f"  - {p}" for p in problems))
