"""A serving problem = model + cluster + inference task, read from a task YAML whose workload
block is `inference` (instead of `training`); the model and cluster references are read as for
every task (planner.core.inputs)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from planner.core.errors import InputError
from planner.core.files import shown
from planner.core.hardware import Cluster
from planner.core.inputs import build, load_cluster, task_model_family
from planner.llm.model import DenseTransformer
from planner.llm.moe_model import MoETransformer
from planner.llm.problem import load_model
from planner.serving.task import InferenceTask


@dataclass(frozen=True)
class ServingProblem:
    """Everything a serving plan is priced against."""

    model: DenseTransformer | MoETransformer
    cluster: Cluster
    task: InferenceTask
    source: str = "<memory>"
    files: tuple[str, ...] = ()
    """Every file read to build it (the task and the presets or paths it refers to)."""

    def __post_init__(self) -> None:
        device = self.cluster.device
        if device.peak_flops.bf16 is None:
            raise InputError(
                f"{self.source}: cluster.device.peak_flops.bf16: device {shown(device.name)} has no bf16 peak, "
                "which prices attention and the LM head at every weight precision; give it"
            )
        precision = self.task.weight_precision
        if getattr(device.peak_flops, precision) is None:
            raise InputError(
                f"{self.source}: inference.weight_precision: {precision} needs a {precision} peak, but device "
                f"{shown(device.name)} has none (peak_flops.{precision} is null); use "
                + ("fp8 or bf16, or a Blackwell device (b200-sxm-180gb, gb200)" if precision == "fp4"
                   else "bf16, or a device with fp8 tensor cores (e.g. h100-sxm5-80gb)")
            )
        longest = self.task.requests.max_context_tokens
        if longest > self.model.max_seq_len:
            raise InputError(
                f"{self.source}: inference.requests: a request reaches {longest:,} tokens (prompt + output), more "
                f"than model {shown(self.model.name)} supports (max_seq_len {self.model.max_seq_len:,})"
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


def load_serving_problem(path: Path, data: dict, seen: list[str]) -> ServingProblem:
    """The problem of a task mapping (`data`, read from `path`, its keys checked) whose workload
    block is `inference`: a dense or mixture-of-experts decoder."""
    source = str(path)
    family = task_model_family(path, data)
    if family is not None and family not in ("dense", "moe"):
        raise InputError(f"{source}: model: a {shown(family)} model; serving is priced for dense and "
                         "mixture-of-experts decoders only")
    model = load_model(data["model"], path.parent, source, "model", seen)
    cluster = load_cluster(data["cluster"], path.parent, source, "cluster", data.get("num_devices"), seen)
    task = build(InferenceTask, data["inference"], source, prefix="inference.")
    return ServingProblem(model=model, cluster=cluster, task=task, source=source, files=tuple(dict.fromkeys(seen)))
