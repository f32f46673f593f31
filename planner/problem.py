"""A problem = model + cluster + task, loaded from YAML with errors that name file and field.

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
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from planner.errors import InputError
from planner.hardware import Cluster, Device
from planner.model import MODEL_FAMILIES, ModelSpec
from planner.plan import Plan
from planner.task import TrainingTask

PROBLEMS_DIR = Path(__file__).resolve().parent.parent / "problems"
"""Shipped presets: devices/, clusters/, models/, tasks/, plans/."""

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    """Everything a plan is priced against."""

    model: ModelSpec
    cluster: Cluster
    task: TrainingTask
    source: str = "<memory>"

    @property
    def hash(self) -> str:
        payload = {
            "model": self.model.model_dump(mode="json"),
            "cluster": self.cluster.model_dump(mode="json"),
            "task": self.task.model_dump(mode="json"),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_yaml(path: Path) -> dict[str, Any]:
    """Reads one YAML mapping; unreadable or non-mapping files raise InputError naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def format_validation_error(source: str, exc: ValidationError, prefix: str = "") -> str:
    """One line per failing field: `file: dotted.field: message`."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-"))
        loc = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field (misspelt?)"
        lines.append(f"{source}: {loc}: {message}")
    return "\n".join(lines)


def build(cls: type[M], data: Any, source: str, prefix: str = "") -> M:
    """Validates `data` as `cls`, converting pydantic errors to InputError."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(source, exc, prefix)) from None


def _resolve(ref: Any, kind: str, base: Path | None, field: str, source: str) -> tuple[dict, str]:
    """A reference (preset name, relative path, or inline mapping) -> (mapping, its source).

    An inline mapping with a `preset` key starts from that preset and overrides its fields,
    e.g. `device: {preset: h100-sxm5-80gb, hbm_bytes: 40GB}`.
    """
    if isinstance(ref, dict) and "preset" in ref:
        overrides = dict(ref)
        name = overrides.pop("preset")
        data, _ = _resolve(name, kind, base, f"{field}.preset", source)
        return {**data, **overrides}, source
    if isinstance(ref, dict):
        return ref, source
    if not isinstance(ref, str):
        raise InputError(f"{source}: {field}: expected a preset name, a path or a mapping")
    candidates = []
    if base is not None:
        candidates.append((base / ref).resolve())
    candidates.append(PROBLEMS_DIR / kind / (ref if ref.endswith(".yaml") else f"{ref}.yaml"))
    for path in candidates:
        if path.is_file():
            return read_yaml(path), str(path)
    presets = sorted(p.stem for p in (PROBLEMS_DIR / kind).glob("*.yaml"))
    raise InputError(
        f"{source}: {field}: {ref!r} is neither a file nor a preset in problems/{kind}/ "
        f"(presets: {', '.join(presets)})"
    )


def load_device(ref: Any, base: Path | None = None, source: str = "<arg>", field: str = "device") -> Device:
    data, where = _resolve(ref, "devices", base, field, source)
    return build(Device, data, where, prefix=f"{field}." if where == source else "")


def load_model(ref: Any, base: Path | None = None, source: str = "<arg>", field: str = "model") -> ModelSpec:
    data, where = _resolve(ref, "models", base, field, source)
    prefix = f"{field}." if where == source else ""
    family = data.get("family", "dense")
    if family not in MODEL_FAMILIES:
        raise InputError(
            f"{where}: {prefix}family: unknown model family {family!r} "
            f"(supported: {', '.join(MODEL_FAMILIES)})"
        )
    return build(MODEL_FAMILIES[family], data, where, prefix)  # type: ignore[return-value]


def load_cluster(
    ref: Any,
    base: Path | None = None,
    source: str = "<arg>",
    field: str = "cluster",
    num_devices: int | None = None,
) -> Cluster:
    data, where = _resolve(ref, "clusters", base, field, source)
    prefix = f"{field}." if where == source else ""
    data = dict(data)
    here = Path(where).parent if where != source else base
    if "device" in data:
        data["device"] = load_device(data["device"], here, where, f"{prefix}device")
    if num_devices is not None:
        data["num_devices"] = num_devices
    return build(Cluster, data, where, prefix)


def load_problem(path: str | Path) -> Problem:
    """Loads a task YAML: `model`, `cluster`, optional `num_devices`, and a `training` block."""
    path = Path(path)
    data = read_yaml(path)
    source = str(path)
    allowed = {"model", "cluster", "num_devices", "training", "description"}
    extra = sorted(set(data) - allowed)
    if extra:
        raise InputError(f"{source}: {extra[0]}: unknown field (misspelt?); expected {sorted(allowed)}")
    for key in ("model", "cluster", "training"):
        if key not in data:
            raise InputError(f"{source}: {key}: field required")
    num_devices = data.get("num_devices")
    if num_devices is not None and (not isinstance(num_devices, int) or num_devices <= 0):
        raise InputError(f"{source}: num_devices: must be a positive integer, got {num_devices!r}")
    model = load_model(data["model"], path.parent, source, "model")
    cluster = load_cluster(data["cluster"], path.parent, source, "cluster", num_devices)
    task = build(TrainingTask, data["training"], source, prefix="training.")
    return Problem(model=model, cluster=cluster, task=task, source=source)


def load_plan(path: str | Path) -> Plan:
    """Loads a plan YAML or JSON (see planner.plan_io)."""
    from planner.plan_io import load_plan as _load

    return _load(path)
