"""An LLM training problem = model + cluster + task, loaded from YAML with errors that name file
and field (the shared readers are in planner.core.inputs).

YAML files may reference others: `model: llama3-70b` is a preset in problems/models/, and
`model: ../models/mine.yaml` a path relative to the referring file; either may be replaced
by an inline mapping. The problem hash (sha256 of the canonical JSON of all three parts)
ties plans to the problem they were made for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.core.errors import InputError
from planner.core.files import shown
from planner.core.hardware import Cluster
from planner.core.inputs import (  # noqa: F401 (re-exported: the LLM family's callers use them from here)
    MAX_DEVICES,
    MAX_REFERENCE_CHARS,
    PROBLEMS_DIR,
    _kind,
    build,
    find_input,
    format_validation_error,
    load_cluster,
    load_device,
    read_task,
    read_yaml,
    resolve,
)
from planner.llm.model import MODEL_FAMILIES, ModelSpec
from planner.llm.plan import Plan
from planner.llm.task import TrainingTask


@dataclass(frozen=True)
class Problem:
    """Everything a plan is priced against."""

    model: ModelSpec
    cluster: Cluster
    task: TrainingTask
    source: str = "<memory>"
    files: tuple[str, ...] = ()
    """Every file read to build it (the task and the presets or paths it refers to)."""

    def __post_init__(self) -> None:
        precision = self.task.precision
        if self.cluster.device.peak_flops.bf16 is None:
            raise InputError(
                f"{self.source}: cluster.device.peak_flops.bf16: device {shown(self.cluster.device.name)} has no "
                "bf16 peak, which prices attention and the non-GEMM kernels of every precision; give it"
            )
        if getattr(self.cluster.device.peak_flops, precision) is None:
            raise InputError(
                f"{self.source}: training.precision: {precision} needs a {precision} peak, but device "
                f"{shown(self.cluster.device.name)} has none (peak_flops.{precision} is null); use bf16, or a "
                f"device with {precision} tensor cores (e.g. h100-sxm5-80gb)"
            )

    @property
    def hash(self) -> str:
        payload = {
            "model": self.model.model_dump(mode="json"),
            "cluster": self.cluster.model_dump(mode="json"),
            "task": self.task.model_dump(mode="json"),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_model(ref: Any, base: Path | None = None, source: str = "<arg>", field: str = "model",
               seen: list[str] | None = None) -> ModelSpec:
    data, where = resolve(ref, "models", base, field, source, seen)
    prefix = f"{field}." if where == source else ""
    family = data.get("family", "dense")
    if not isinstance(family, str) or family not in MODEL_FAMILIES:
        raise InputError(
            f"{where}: {prefix}family: unknown model family {shown(family)} "
            f"(supported: {', '.join(MODEL_FAMILIES)})"
        )
    return build(MODEL_FAMILIES[family], data, where, prefix)  # type: ignore[return-value]


def load_problem(path: str | Path) -> Problem:
    """Loads a task YAML (a path, or a preset name from problems/tasks/): `model`, `cluster`,
    optional `num_devices`, and a `training` block."""
    path = find_input(path, "tasks")
    data = read_task(path)
    source = str(path)
    if "training" not in data:
        raise InputError(f"{source}: training: field required (this is an inference task: planner.serving reads it)")
    seen = [source]
    num_devices = data.get("num_devices")
    model = load_model(data["model"], path.parent, source, "model", seen)
    cluster = load_cluster(data["cluster"], path.parent, source, "cluster", num_devices, seen)
    task = build(TrainingTask, data["training"], source, prefix="training.")
    return Problem(model=model, cluster=cluster, task=task, source=source, files=tuple(dict.fromkeys(seen)))


def load_plan(path: str | Path) -> Plan:
    """Loads a plan YAML or JSON (see planner.llm.plan_io)."""
    from planner.llm.plan_io import load_plan as _load

    return _load(path)
