"""Serving plans on disk (the versioned file format of planner.core.plan_files)."""

from __future__ import annotations

from pathlib import Path

from planner.core.errors import InputError
from planner.core.files import shown
from planner.core.inputs import build
from planner.core.plan_files import read_plan_data
from planner.serving.plan import ServingPlan


def load_serving_plan(path: str | Path) -> ServingPlan:
    """Reads a serving plan (YAML or JSON; a path or a preset name from problems/plans/)."""
    data, path = read_plan_data(path)
    family = data.get("family")
    if family != "serving":
        kind = "a training plan (no family)" if "family" not in data else f"family {shown(family, 40)}"
        raise InputError(f"{path}: family: an inference task needs a serving plan (family: serving, tp, pp, dp); "
                         f"this file is {kind}")
    return build(ServingPlan, data, str(path))
