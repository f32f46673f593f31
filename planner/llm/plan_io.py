"""LLM plans on disk (the file format is planner.core.plan_files')."""

from __future__ import annotations

from pathlib import Path

from planner.core.errors import InputError
from planner.core.inputs import build
from planner.core.plan_files import FORMAT_VERSION, plan_document, plan_text, save_plan  # noqa: F401
from planner.core.plan_files import read_plan_data
from planner.llm.plan import Plan


def load_plan(path: str | Path) -> Plan:
    """Reads a plan written by `save_plan` or by hand (YAML or JSON; a path or a preset name
    from problems/plans/)."""
    data, path = read_plan_data(path)
    if data.get("family") == "dlrm":
        raise InputError(f"{path}: family: this is an embedding-sharding (DLRM) plan; give it with a DLRM task")
    if data.get("family") == "serving":
        kind = "a disaggregated serving plan" if "prefill" in data or "decode" in data else "a serving plan"
        raise InputError(f"{path}: family: this is {kind}; give it with an inference task (a training task takes "
                         "a training plan: tp, pp, dp, ...)")
    return build(Plan, data, str(path))
