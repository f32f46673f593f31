"""A sweep file: a base training task and a grid of axes; their cartesian product is the scenarios.

```yaml
description: Llama-3 70B on H100 / H200 / B200
task: llama3-70b-64xh100          # base task: a shipped name, a path (relative to this file) or a mapping
provider: hyperstack              # price list (planner/data/device_costs.yaml), unless axes.provider
axes:                             # every axis is optional; each a non-empty list of distinct values
  num_devices: [64, 128]          # the task's GPU count
  cluster: [dgx-h100, dgx-b200]   # replace the task's cluster (presets or paths)
  device: [h200-sxm-141gb]        # replace the cluster's device (presets or paths)
  hbm_scale: [1, 2]               # device memory capacity x this
  nvlink_domain_size: [8, 72]     # GPUs in one domain of the innermost tier (tiers[0])
  nvlink_bandwidth_scale: [1, 2]  # bandwidth of the innermost tier x this
  ib_bandwidth_scale: [1, 2]      # bandwidth of every outer (scale-out) tier x this
  global_batch_size: [128, 256]   # sequences per step
  provider: [hyperstack, lambda]  # price lists: cost only, the same solve
```

Each scenario is a complete task document (model, cluster and training inline), built from the
validated presets and checked as `planner solve` checks a task file; a combination that is not a
valid task (e.g. 64 GPUs in 72-GPU NVLink domains) is a scenario with status INVALID and the
reason, not an error of the sweep.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from planner.core.errors import InputError
from planner.core.files import shown
from planner.core.inputs import (
    build,
    find_input,
    load_cluster,
    load_device,
    read_task,
    read_yaml,
    resolve,
    task_model_family,
)
from planner.core.schema import Name, Note, Spec
from planner.llm.candidates import alignment
from planner.llm.problem import Problem, load_model
from planner.llm.task import TrainingTask

MAX_SCENARIOS = 10_000
"""Largest grid a sweep file may declare (--max-scenarios lowers it)."""

MAX_AXIS_VALUES = 1_000
"""Most values one axis may list."""

ScaleList = list[float]

AXIS_ORDER = ("cluster", "device", "num_devices", "nvlink_domain_size", "nvlink_bandwidth_scale",
              "ib_bandwidth_scale", "hbm_scale", "global_batch_size", "provider")
"""Every axis. Scenarios vary them in the sweep file's order (the last one fastest); the axes are
applied to the task in this order (a cluster, then its device, then the scales)."""


def _distinct(values: list) -> list:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{shown(value, 60)} is listed twice")
        seen.add(value)
    return values


def _scales(values: list[float]) -> list[float]:
    for value in values:
        if not 0.001 <= value <= 1000:
            raise ValueError(f"a scale must be from 0.001 to 1000, got {value}")
    return _distinct(values)


class Axes(Spec):
    """The grid. Each axis is a non-empty list of distinct values; an absent axis keeps the task's."""

    num_devices: list[int] | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                          description="GPU counts (the task's num_devices).")
    cluster: list[Name] | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                       description="Cluster presets (problems/clusters/) or paths.")
    device: list[Name] | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                      description="Device presets (problems/devices/) or paths, replacing the cluster's.")
    hbm_scale: ScaleList | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                        description="Device memory capacity x this.")
    nvlink_domain_size: list[int] | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                                 description="GPUs per domain of the innermost tier.")
    nvlink_bandwidth_scale: ScaleList | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                                     description="Innermost tier bandwidth x this.")
    ib_bandwidth_scale: ScaleList | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                                 description="Every outer tier's bandwidth x this.")
    global_batch_size: list[int] | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                                description="Sequences per step.")
    provider: list[Name] | None = Field(default=None, min_length=1, max_length=MAX_AXIS_VALUES,
                                        description="Price lists of planner/data/device_costs.yaml.")

    @field_validator("num_devices", "nvlink_domain_size")
    @classmethod
    def _counts(cls, values: list[int] | None) -> list[int] | None:
        if values is not None:
            for value in values:
                if not 0 < value <= 2**24:
                    raise ValueError(f"must be from 1 to {2**24:,}, got {value}")
            _distinct(values)
        return values

    @field_validator("global_batch_size")
    @classmethod
    def _batches(cls, values: list[int] | None) -> list[int] | None:
        if values is not None:
            for value in values:
                if not 0 < value <= 2**40:
                    raise ValueError(f"must be from 1 to {2**40:,} sequences, got {value}")
            _distinct(values)
        return values

    @field_validator("hbm_scale", "nvlink_bandwidth_scale", "ib_bandwidth_scale")
    @classmethod
    def _scale_values(cls, values: list[float] | None) -> list[float] | None:
        return None if values is None else _scales(values)

    @field_validator("cluster", "device", "provider")
    @classmethod
    def _names(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _distinct(values)


class SweepSpec(Spec):
    """The sweep file."""

    description: Note = ""
    task: Any = Field(description="Base training task: a shipped name, a path (relative to the sweep file) or "
                      "a task mapping.")
    provider: Name | None = Field(default=None, description="Price list when axes.provider is absent.")
    axes: Axes


    @field_validator("task")
    @classmethod
    def _task(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        if not isinstance(value, str) or not value or len(value) > 1024 or not value.isprintable():
            raise ValueError(f"expected a task name, a path or a mapping, got {shown(value, 60)} "
                             f"({type(value).__name__})")
        return value


@dataclass(frozen=True)
class Scenario:
    """One point of the grid: its axis values and its task document (or why it is not a task)."""

    index: int
    name: str
    axes: dict[str, Any]
    provider: str
    document: dict[str, Any] | None = None
    invalid: str | None = None
    problem: Problem | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: its spec, the base problem and the scenarios, in grid order."""

    source: str
    spec: SweepSpec
    base: Problem
    scenarios: list[Scenario]
    files: tuple[str, ...]


def grid_size(axes: Axes) -> int:
    size = 1
    for name in AXIS_ORDER:
        values = getattr(axes, name)
        size *= len(values) if values else 1
    return size


def load_sweep(path: str | Path, max_scenarios: int = MAX_SCENARIOS, provider_names: tuple[str, ...] = ()) -> Sweep:
    """Reads and checks a sweep file (a path, or a shipped name in problems/sweeps/) and expands it.

    Raises InputError (naming the file and field) for a bad file; a grid point that is not a valid
    task is a Scenario with `invalid` set.
    """
    path = find_input(path, "sweeps")
    source = str(path)
    raw = read_yaml(path)
    spec = build(SweepSpec, raw, source)
    size = grid_size(spec.axes)
    if size > max_scenarios:
        counts = " x ".join(f"{len(getattr(spec.axes, n))} {n}" for n in AXIS_ORDER if getattr(spec.axes, n))
        raise InputError(f"{source}: axes: {counts} = {size:,} scenarios, more than the {max_scenarios:,} allowed "
                         "(--max-scenarios); drop values or split the sweep")
    if spec.axes.provider is None and spec.provider is None:
        raise InputError(f"{source}: provider: field required (the price list, one of {', '.join(provider_names)}), "
                         "or give axes.provider")
    if spec.axes.provider is not None and spec.provider is not None:
        raise InputError(f"{source}: provider: give either provider or axes.provider, not both")
    for where, name in [("provider", spec.provider)] + [(f"axes.provider[{i}]", p)
                                                        for i, p in enumerate(spec.axes.provider or [])]:
        if name is not None and provider_names and name not in provider_names:
            raise InputError(f"{source}: {where}: unknown price list {shown(name, 60)} "
                             f"(planner/data/device_costs.yaml lists {', '.join(provider_names)})")
    base_doc, base, files = _base_task(spec, path)
    try:
        alignment(base.model)  # an MoE layer pattern the searches cannot cut: bad input, as for `solve`
    except InputError as exc:
        raise InputError(f"{base.source}: {exc}") from None
    values = _axis_values(spec, path, files)
    names = [n for n in raw["axes"] if n in values]  # the file's order: the last axis varies fastest
    scenarios = []
    for index, combo in enumerate(itertools.product(*(values[n] for n in names))):
        picked = dict(zip(names, combo))
        axes = {n: _shown_value(n, picked[n]) for n in names}
        provider = picked.get("provider", spec.provider)
        name = " ".join(_label(n, axes[n]) for n in names) or "base"
        try:
            document = _document(base_doc, base, picked)
            problem = problem_from_document(document, f"{source} [{name}]")
        except InputError as exc:
            scenarios.append(Scenario(index, name, axes, provider, invalid=str(exc)))
            continue
        scenarios.append(Scenario(index, name, axes, provider, document=document, problem=problem))
    return Sweep(source=source, spec=spec, base=base, scenarios=scenarios, files=tuple(dict.fromkeys(files)))


def problem_from_document(document: dict[str, Any], source: str) -> Problem:
    """A Problem from an inline task document, checked as planner.llm.problem.load_problem checks a
    task file (the same loaders; writing `document` to a YAML file and loading it gives the same
    problem and hash)."""
    model = load_model(document["model"], None, source, "model")
    cluster = load_cluster(document["cluster"], None, source, "cluster", document.get("num_devices"))
    task = build(TrainingTask, document["training"], source, prefix="training.")
    return Problem(model=model, cluster=cluster, task=task, source=source)


def _base_task(spec: SweepSpec, path: Path) -> tuple[dict[str, Any], Problem, list[str]]:
    """(the base task's raw mapping, its problem, the files read)."""
    source = str(path)
    if isinstance(spec.task, dict):
        task_path = path
        data = spec.task
        where = source
        _check_inline_task(data, source)
    else:
        _, found = resolve(spec.task, "tasks", path.parent, "task", source)
        task_path = Path(found)
        data = read_task(task_path)
        where = found
    if "inference" in data:
        raise InputError(f"{source}: task: {_named(spec, where)} is an inference task; planner sweep searches "
                         "training tasks")
    if "training" not in data:
        raise InputError(f"{source}: task.training: field required")
    if task_model_family(task_path, data) == "dlrm":
        raise InputError(f"{source}: task: {_named(spec, where)} is a DLRM task; planner sweep searches LLM "
                         "training tasks")
    seen = [source, str(task_path)] if task_path != path else [source]
    prefix = "task." if isinstance(spec.task, dict) else ""
    model = load_model(data.get("model"), task_path.parent, where, f"{prefix}model", seen)
    cluster = load_cluster(data.get("cluster"), task_path.parent, where, f"{prefix}cluster", data.get("num_devices"),
                           seen)
    task = build(TrainingTask, data["training"], where, prefix=f"{prefix}training.")
    problem = Problem(model=model, cluster=cluster, task=task, source=where, files=tuple(seen))
    return data, problem, seen


def _named(spec: SweepSpec, where: str) -> str:
    return "the inline task" if isinstance(spec.task, dict) else where


TASK_KEYS = ("model", "cluster", "num_devices", "description", "training")
"""The keys of an inline training task (as planner.core.inputs.read_task checks a task file's)."""


def _check_inline_task(data: dict[str, Any], source: str) -> None:
    for key in data:
        if key not in TASK_KEYS and key != "inference":
            raise InputError(f"{source}: task.{shown(key, 60)[1:-1]}: unknown field (misspelt?); expected "
                             f"{list(TASK_KEYS)}")
    for key in ("model", "cluster"):
        if key not in data:
            raise InputError(f"{source}: task.{key}: field required")
    num_devices = data.get("num_devices")
    if num_devices is not None and (isinstance(num_devices, bool) or not isinstance(num_devices, int)
                                    or not 0 < num_devices <= 2**24):
        raise InputError(f"{source}: task.num_devices: must be an integer from 1 to {2**24:,}, "
                         f"got {shown(num_devices, 40)}")
    if "training" in data and not isinstance(data["training"], dict):
        raise InputError(f"{source}: task.training: expected a mapping")


def _axis_values(spec: SweepSpec, path: Path, files: list[str]) -> dict[str, list]:
    """Each axis's values, presets loaded (a bad preset is an error naming the axis and index)."""
    source = str(path)
    out: dict[str, list] = {}
    for name in AXIS_ORDER:
        values = getattr(spec.axes, name)
        if values is None:
            continue
        if name == "cluster":
            out[name] = [(v, load_cluster(v, path.parent, source, f"axes.cluster[{i}]", None, files))
                         for i, v in enumerate(values)]
        elif name == "device":
            out[name] = [(v, load_device(v, path.parent, source, f"axes.device[{i}]", files))
                         for i, v in enumerate(values)]
        else:
            out[name] = list(values)
    return out


def _shown_value(name: str, value: Any) -> Any:
    return value[0] if name in ("cluster", "device") else value


_LABELS = {
    "num_devices": "{}gpu", "nvlink_domain_size": "nvl{}", "nvlink_bandwidth_scale": "nvlbw{}x",
    "ib_bandwidth_scale": "ib{}x", "hbm_scale": "hbm{}x", "global_batch_size": "gbs{}",
}


def _label(name: str, value: Any) -> str:
    if name in ("cluster", "device"):
        return Path(value).stem if value.endswith(".yaml") else value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _LABELS.get(name, "{}").format(value)


def _document(base_doc: dict[str, Any], base: Problem, picked: dict[str, Any]) -> dict[str, Any]:
    """The scenario's task: the base problem's parts dumped inline, the axes applied."""
    cluster = picked["cluster"][1] if "cluster" in picked else base.cluster
    cluster_doc = cluster.model_dump(mode="json")
    if "device" in picked:
        cluster_doc["device"] = picked["device"][1].model_dump(mode="json")
    device = cluster_doc["device"]
    if "hbm_scale" in picked:
        device["hbm_bytes"] = device["hbm_bytes"] * picked["hbm_scale"]
    tiers = cluster_doc["tiers"]
    if "nvlink_domain_size" in picked:
        tiers[0]["size"] = picked["nvlink_domain_size"]
    if "nvlink_bandwidth_scale" in picked:
        tiers[0]["bandwidth_bytes_per_s"] *= picked["nvlink_bandwidth_scale"]
    if "ib_bandwidth_scale" in picked:
        if len(tiers) < 2:
            raise InputError(f"ib_bandwidth_scale: cluster {cluster.name} has one network tier ({tiers[0]['name']}), "
                             "no scale-out tier to scale")
        for tier in tiers[1:]:
            tier["bandwidth_bytes_per_s"] *= picked["ib_bandwidth_scale"]
    if "num_devices" in picked:
        num_devices = picked["num_devices"]
    elif base_doc.get("num_devices") is not None:
        num_devices = base_doc["num_devices"]
    else:
        num_devices = cluster.num_devices
    training = base.task.model_dump(mode="json")
    if "global_batch_size" in picked:
        training["global_batch_size"] = picked["global_batch_size"]
        training["global_batch_tokens"] = None
    return {
        "model": base.model.model_dump(mode="json"),
        "cluster": cluster_doc,
        "num_devices": num_devices,
        "training": training,
    }
