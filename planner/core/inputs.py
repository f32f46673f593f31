"""Reading the planner's input files, for every workload family: YAML mappings, validation
errors that name the file and the field, references to shipped presets (problems/) or to files
relative to the referring one, devices and clusters.

`model: llama3-70b` is a preset in problems/models/, `model: ../models/mine.yaml` a path relative
to the referring file; either may be replaced by an inline mapping, and an inline mapping with a
`preset` key starts from that preset and overrides its fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from planner.core import files
from planner.core.errors import InputError
from planner.core.files import shown
from planner.core.hardware import Cluster, Device


def _presets_dir() -> Path:
    """planner/presets in an installed package (pyproject maps it to problems/), else the
    repository's problems/ (a source checkout or an editable install)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "presets"
    return installed if installed.is_dir() else package.parent / "problems"


PROBLEMS_DIR = _presets_dir()
"""Shipped presets: devices/, clusters/, models/, tasks/, plans/."""

M = TypeVar("M", bound=BaseModel)

def read_yaml(path: Path) -> dict[str, Any]:
    """Reads one YAML mapping (planner.core.files: UTF-8, no duplicate keys or aliases, finite
    numbers); anything else raises InputError naming the file."""
    data = files.read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return "nothing (an empty file)" if value is None else f"a {type(value).__name__}"


def format_validation_error(source: str, exc: ValidationError, prefix: str = "") -> str:
    """One line per failing field: `file: dotted.field: message`."""
    lines = []
    for err in exc.errors():
        parts = [str(part) for part in err["loc"] if not str(part).startswith(("function-", "union:"))]
        loc = ".".join(part if len(part) <= 80 and part.isprintable() else shown(part, 80) for part in parts)
        loc = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (misspelt?)"
        lines.append(f"{source}: {loc}: {message}" if loc else f"{source}: {message}")
    return "\n".join(lines)


def build(cls: type[M], data: Any, source: str, prefix: str = "") -> M:
    """Validates `data` as `cls`, converting pydantic errors to InputError."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(source, exc, prefix)) from None


MAX_REFERENCE_CHARS = 1024
"""Longest preset name or path accepted in a reference."""


def resolve(ref: Any, kind: str, base: Path | None, field: str, source: str,
             seen: list[str] | None = None) -> tuple[dict, str]:
    """A reference (preset name, relative path, or inline mapping) -> (mapping, its source).

    An inline mapping with a `preset` key starts from that preset and overrides its fields,
    e.g. `device: {preset: h100-sxm5-80gb, hbm_bytes: 40GB}`.
    """
    if isinstance(ref, dict) and "preset" in ref:
        overrides = dict(ref)
        name = overrides.pop("preset")
        data, _ = resolve(name, kind, base, f"{field}.preset", source, seen)
        return {**data, **overrides}, source
    if isinstance(ref, dict):
        return ref, source
    if not isinstance(ref, str):
        raise InputError(f"{source}: {field}: expected a preset name, a path or a mapping, got {_kind(ref)}")
    if not ref or len(ref) > MAX_REFERENCE_CHARS or not ref.isprintable():
        raise InputError(f"{source}: {field}: {shown(ref)} is not a preset name or a path "
                         f"(at most {MAX_REFERENCE_CHARS} printable characters)")
    candidates = []
    if base is not None:
        candidates.append(base / ref)
    if "/" not in ref and ref not in (".", ".."):
        candidates.append(PROBLEMS_DIR / kind / (ref if ref.endswith(".yaml") else f"{ref}.yaml"))
    for path in candidates:
        try:
            found = path.is_file()
        except (OSError, ValueError):
            found = False
        if found:
            if seen is not None:
                seen.append(str(path))
            return read_yaml(path), str(path)
    presets = sorted(p.stem for p in (PROBLEMS_DIR / kind).glob("*.yaml"))
    raise InputError(
        f"{source}: {field}: {shown(ref)} is neither a file nor a preset in problems/{kind}/ "
        f"(presets: {', '.join(presets)})"
    )


def load_device(ref: Any, base: Path | None = None, source: str = "<arg>", field: str = "device",
                seen: list[str] | None = None) -> Device:
    data, where = resolve(ref, "devices", base, field, source, seen)
    return build(Device, data, where, prefix=f"{field}." if where == source else "")


def load_cluster(
    ref: Any,
    base: Path | None = None,
    source: str = "<arg>",
    field: str = "cluster",
    num_devices: int | None = None,
    seen: list[str] | None = None,
) -> Cluster:
    data, where = resolve(ref, "clusters", base, field, source, seen)
    prefix = f"{field}." if where == source else ""
    data = dict(data)
    here = Path(where).parent if where != source else base
    if "device" in data:
        data["device"] = load_device(data["device"], here, where, f"{prefix}device", seen)
    if num_devices is not None:
        # The cluster as such first (its own faults name its file), then the task's device count
        # against its tiers (a fault names the task's num_devices and the domain it must fill).
        alone = build(Cluster, {**data, "num_devices": 1}, where, prefix)
        _check_num_devices(alone, num_devices, source)
        data["num_devices"] = num_devices
    return build(Cluster, data, where, prefix)


def _check_num_devices(cluster: Cluster, num_devices: int, source: str) -> None:
    """`num_devices` (the task's) against the tiers of `cluster`: each tier without a size spans
    the cluster, so it must be made of whole domains of the tier inside it; the outermost must
    hold them all (Cluster._check_tiers' rules, stated for the task)."""
    previous, inner = 1, None
    for tier in cluster.tiers:
        size = tier.size if tier.size is not None else max(num_devices, previous)
        if size % previous:
            if tier.size is None:
                raise InputError(
                    f"{source}: num_devices: {num_devices:,} devices do not fill whole domains of the "
                    f"{inner.name} tier of cluster {cluster.name} ({previous:,} devices each: a host or NVLink "
                    f"domain); use a multiple of {previous:,}"
                )
            raise InputError(
                f"{source}: num_devices: {num_devices:,} devices make the {inner.name} tier of cluster "
                f"{cluster.name} {previous:,} devices wide, which does not divide the {tier.size:,} devices of its "
                f"{tier.name} tier; use a divisor of {tier.size:,}"
            )
        previous, inner = size, tier
    if previous < num_devices:
        raise InputError(
            f"{source}: num_devices: {num_devices:,} devices, but the outermost tier ({inner.name}) of cluster "
            f"{cluster.name} holds {previous:,}; use at most {previous:,} or a cluster whose outermost tier is "
            "larger (size null spans any number)"
        )


MAX_DEVICES = 2**24
"""Largest cluster the planner accepts (16.7 M devices)."""


def find_input(path: str | Path, kind: str) -> Path:
    """`path` itself, or the shipped preset of that name in problems/<kind>/ (e.g. a task name)."""
    path = Path(path)
    text = str(path)
    if "/" in text or text in ("", ".", "..") or len(text) > MAX_REFERENCE_CHARS or not text.isprintable():
        return path
    try:
        if path.exists():
            return path
        preset = PROBLEMS_DIR / kind / (text if text.endswith((".yaml", ".json")) else f"{text}.yaml")
        return preset if preset.is_file() else path
    except (OSError, ValueError):
        return path


WORKLOADS = ("training", "inference")
"""The workload blocks a task may have (exactly one): `training` (the LLM and DLRM families) or
`inference` (planner.serving)."""


def read_task(path: Path) -> dict[str, Any]:
    """The mapping of a task file, its top-level keys checked (every family's task has `model`,
    `cluster`, optional `num_devices` and `description`, and one workload block: `training` or
    `inference`)."""
    data = read_yaml(path)
    source = str(path)
    allowed = {"model", "cluster", "num_devices", "description", *WORKLOADS}
    extra = sorted(set(data) - allowed)
    if extra:
        raise InputError(f"{source}: {shown(extra[0])[1:-1]}: unknown field (misspelt?); expected {sorted(allowed)}")
    for key in ("model", "cluster"):
        if key not in data:
            raise InputError(f"{source}: {key}: field required")
    workloads = [key for key in WORKLOADS if key in data]
    if not workloads:
        raise InputError(f"{source}: training: field required (or inference: a serving task)")
    if len(workloads) > 1:
        raise InputError(f"{source}: inference: a task has one workload block, training or inference, not both")
    num_devices = data.get("num_devices")
    if num_devices is not None and (
        isinstance(num_devices, bool) or not isinstance(num_devices, int) or not 0 < num_devices <= MAX_DEVICES
    ):
        raise InputError(f"{source}: num_devices: must be an integer from 1 to {MAX_DEVICES:,}, "
                         f"got {shown(num_devices, 40)}")
    workload = workloads[0]
    if not isinstance(data[workload], dict):
        raise InputError(f"{source}: {workload}: expected a mapping, got {_kind(data[workload])}")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise InputError(f"{source}: description: expected text, got {_kind(description)}")
    return data


def task_model_family(path: Path, data: dict[str, Any]) -> str | None:
    """The `family` of a task's model (None where the reference cannot be read: the family's
    loader then reports it)."""
    try:
        model, _ = resolve(data["model"], "models", path.parent, "model", str(path))
    except InputError:
        return None
    family = model.get("family", "dense")
    return family if isinstance(family, str) else None
