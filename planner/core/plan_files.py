"""Plans on disk, for every workload family: versioned YAML or JSON carrying the hash of the
problem they solve.

The file holds the plan and its provenance (solver, status, objective, bound, gap, problem
hash) but not the solver's wall time, so the same problem, seed and worker count give a
byte-identical file; the wall time is printed by `solve` and in its `--json` output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from planner import __version__
from planner.core import files
from planner.core.errors import InputError
from planner.core.inputs import find_input

FORMAT_VERSION = 1


def plan_document(plan: BaseModel) -> dict:
    """The plan as a plain mapping with the format and planner versions first (no timings)."""
    data = plan.model_dump(mode="json", exclude_none=True, exclude={"provenance": {"wall_time_s"}})
    return {"format_version": FORMAT_VERSION, "planner_version": __version__, **data}


def plan_text(plan: BaseModel, path: str | Path) -> str:
    """The file content `save_plan` writes: JSON when the name ends in .json, else YAML."""
    document = plan_document(plan)
    if Path(path).suffix.lower() == ".json":
        return json.dumps(document, indent=2, allow_nan=False) + "\n"
    return yaml.safe_dump(document, sort_keys=False)


def save_plan(plan: BaseModel, path: str | Path, inputs: list[str | Path] = ()) -> Path:
    """Writes the plan atomically (planner.core.files.write_atomic); never over one of `inputs`."""
    return files.write_atomic(path, plan_text(plan, path), inputs)


def read_plan_data(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The plan fields of a plan file (YAML or JSON; a path or a preset name from problems/plans/),
    its format and planner versions checked and removed, and the file's path."""
    path = find_input(path, "plans")
    data = files.read_json(path) if path.suffix.lower() == ".json" else files.read_yaml(path)
    if not isinstance(data, dict):
        kind = "nothing (an empty file)" if data is None else f"a {type(data).__name__}"
        raise InputError(f"{path}: expected a mapping of plan fields at the top level, got {kind}")
    data = dict(data)
    version = data.pop("format_version", FORMAT_VERSION)
    planner_version = data.pop("planner_version", None)
    if planner_version is not None and not isinstance(planner_version, str):
        raise InputError(f"{path}: planner_version: expected text")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"{path}: format_version: expected a positive integer, got {files.shown(version, 40)}")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path}: format_version: {version} is newer than this planner reads ({FORMAT_VERSION}); upgrade planner"
        )
    return data, path
