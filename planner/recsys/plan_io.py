"""Embedding-sharding plans on disk (the file format is planner.core.plan_files')."""

from __future__ import annotations

from pathlib import Path

from planner.core.errors import InputError
from planner.core.inputs import build
from planner.core.plan_files import read_plan_data
from planner.recsys.plan import ShardingPlan


def load_sharding_plan(path: str | Path) -> ShardingPlan:
    """Reads a DLRM plan (YAML or JSON; a path or a preset name from problems/plans/)."""
    data, path = read_plan_data(path)
    if data.get("family") != "dlrm":
        raise InputError(f"{path}: family: a DLRM task needs an embedding-sharding plan (family: dlrm, "
                         "dense, tables); this file is "
                         + ("an LLM plan" if "family" not in data else f"family {files_shown(data.get('family'))}"))
    return build(ShardingPlan, data, str(path))


def files_shown(value) -> str:
    from planner.core.files import shown

    return shown(value, 40)
