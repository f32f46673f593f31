"""Plans on disk: versioned YAML or JSON carrying the hash of the problem they solve."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from planner import __version__
from planner.errors import InputError
from planner.plan import Plan
from planner.problem import build, read_yaml

FORMAT_VERSION = 1


def plan_document(plan: Plan) -> dict:
    """The plan as a plain mapping with the format and planner versions first."""
    data = plan.model_dump(mode="json", exclude_none=True)
    return {"format_version": FORMAT_VERSION, "planner_version": __version__, **data}


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Writes YAML, or JSON when the file name ends in .json."""
    path = Path(path)
    document = plan_document(plan)
    if path.suffix == ".json":
        path.write_text(json.dumps(document, indent=2) + "\n")
    else:
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def load_plan(path: str | Path) -> Plan:
    """Reads a plan written by `save_plan` or by hand (YAML or JSON)."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise InputError(f"{path}: cannot read file ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object")
    else:
        data = read_yaml(path)
    version = data.pop("format_version", FORMAT_VERSION)
    data.pop("planner_version", None)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"{path}: format_version: {version!r} is newer than this planner reads ({FORMAT_VERSION}); upgrade planner"
        )
    return build(Plan, data, str(path))
