"""A DLRM training problem = model + cluster + task, read from the same task YAML as the LLM
family's (`model`, `cluster`, `num_devices`, `training`); the model's `family: dlrm` selects it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.core.errors import InputError
from planner.core.hardware import Cluster
from planner.core.inputs import build, load_cluster, resolve
from planner.core.units import format_bytes
from planner.recsys.model import Dlrm
from planner.recsys.task import RecsysTraining


@dataclass(frozen=True)
class RecsysProblem:
    """Everything an embedding-sharding plan is priced against."""

    model: Dlrm
    cluster: Cluster
    task: RecsysTraining
    source: str = "<memory>"
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        world = self.cluster.num_devices
        per_host = self.ranks_per_host
        if world % per_host:
            raise InputError(
                f"{self.source}: num_devices: {world} ranks do not fill whole hosts of {per_host} "
                f"(the innermost tier, {self.cluster.tiers[0].name}); use a multiple of {per_host}"
            )
        if self.task.global_batch_size % world:
            raise InputError(
                f"{self.source}: training.global_batch_size: {self.task.global_batch_size} samples do not "
                f"split evenly over {world} ranks (every rank trains the same local batch); use a multiple of {world}"
            )
        dense = self.task.dense_precision
        if getattr(self.cluster.device.peak_flops, "fp32" if dense == "fp32" else dense) is None:
            raise InputError(
                f"{self.source}: training.dense_precision: device {self.cluster.device.name} has no {dense} peak "
                "(peak_flops); choose another precision or give the peak"
            )

        self._check_tables_fit()

    def _check_tables_fit(self) -> None:
        """A table whose weights and optimizer state exceed the whole cluster's memory can never be
        placed: refused here, naming it (a plan-level shortage is reported per rank by the cost)."""
        from planner.recsys.model import DTYPE_BYTES
        from planner.recsys.task import OPTIMIZER_STATE_BYTES

        per_row, per_elem = OPTIMIZER_STATE_BYTES[self.task.embedding_optimizer]
        usable = self.cluster.device.hbm_bytes * (1 - self.task.memory_headroom)
        total = usable * self.cluster.num_devices
        for table in self.model.tables:
            size = table.num_rows * (table.dim * (DTYPE_BYTES[self.model.table_dtype(table)] + per_elem) + per_row)
            if size * table.count > total:
                what = f"table {table.name!r}" if table.count == 1 else f"the {table.count:,} tables of group {table.name!r}"
                need, have = _size(size * table.count), _size(total)
                if need == have:  # too close to tell apart at this precision: the bytes
                    need, have = f"{size * table.count:,.0f} bytes", f"{total:,.0f} bytes"
                raise InputError(
                    f"{self.source}: model.tables: {what} need(s) {need} of weights and "
                    f"{self.task.embedding_optimizer} state, more than the {have} usable on all "
                    f"{self.cluster.num_devices} devices (memory_headroom {self.task.memory_headroom}): use more "
                    "devices, a smaller dtype or fewer rows"
                )

    @property
    def ranks_per_host(self) -> int:
        """Ranks in one domain of the innermost tier (a host / NVLink domain)."""
        return self.cluster.devices_per_node

    @property
    def num_hosts(self) -> int:
        return self.cluster.num_devices // self.ranks_per_host

    @property
    def local_batch_size(self) -> int:
        return self.task.global_batch_size // self.cluster.num_devices

    @property
    def hash(self) -> str:
        payload = {
            "model": self.model.model_dump(mode="json"),
            "cluster": self.cluster.model_dump(mode="json"),
            "task": self.task.model_dump(mode="json"),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _size(num_bytes: float) -> str:
    """GiB with one decimal from 1 GiB up, else MiB, KiB or bytes (never "0.0 GiB")."""
    return f"{num_bytes / 2**30:,.1f} GiB" if num_bytes >= 2**30 else format_bytes(num_bytes)


def load_dlrm(ref: Any, base: Path | None = None, source: str = "<arg>", field: str = "model",
              seen: list[str] | None = None) -> Dlrm:
    data, where = resolve(ref, "models", base, field, source, seen)
    return build(Dlrm, data, where, prefix=f"{field}." if where == source else "")


def load_recsys_problem(path: Path, data: dict, seen: list[str]) -> RecsysProblem:
    """The problem of a task mapping (`data`, already read from `path` and checked for its keys)
    whose model is a DLRM."""
    source = str(path)
    model = load_dlrm(data["model"], path.parent, source, "model", seen)
    cluster = load_cluster(data["cluster"], path.parent, source, "cluster", data.get("num_devices"), seen)
    task = build(RecsysTraining, data["training"], source, prefix="training.")
    return RecsysProblem(model=model, cluster=cluster, task=task, source=source, files=tuple(dict.fromkeys(seen)))
