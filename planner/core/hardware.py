"""Devices and clusters: peak rates, memory, and an ordered list of network tiers.

A cluster is a device type plus network tiers, innermost first (NVLink/NVSwitch domain,
then InfiniBand/RoCE scale-out, optionally an oversubscribed third tier). An axis of
parallelism whose process group stays inside a tier's domain uses that tier's bandwidth.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_serializer, model_validator

from planner.core.schema import (
    omit_legacy_defaults,
    BytesPerSecond,
    FlopsPerSecond,
    Fraction,
    Name,
    Note,
    PositiveBytes,
    Seconds,
    Spec,
)

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "fp4"]


class PeakFlops(Spec):
    """Dense (no 2:4 sparsity) tensor-core peak FLOP/s per dtype; null = unsupported."""

    fp32: FlopsPerSecond | None = None
    tf32: FlopsPerSecond | None = None
    bf16: FlopsPerSecond | None = None
    fp16: FlopsPerSecond | None = None
    fp8: FlopsPerSecond | None = None
    fp4: FlopsPerSecond | None = Field(
        default=None, description="Dense FP4 (NVFP4, Blackwell) tensor-core peak; null = none (Hopper and older)."
    )

    @model_serializer(mode="wrap")
    def _omit_absent_fp4(self, handler):
        """Leaves `fp4` out when it is null, so that devices without it (and the hashes of the
        problems on them, which plans carry) read as they did before the field existed."""
        return omit_legacy_defaults(handler(self), {"fp4": None})


class DeviceEfficiency(Spec):
    """Achievable fractions of the peaks, each fitted from published measurements.

    `planner calibrate` re-derives the GEMM and collective numbers from
    planner/data/efficiency.yaml; the `source` says which rows each value came from.
    """

    gemm_fraction: Fraction = Field(
        description="Large-GEMM throughput as a fraction of the bf16/fp16 peak (typical shapes)."
    )
    gemm_fraction_fp8: Fraction | None = Field(
        default=None, description="Large-GEMM fraction of the fp8 peak; null if no fp8."
    )
    gemm_overhead_s: Seconds = Field(
        description="Fixed cost per GEMM call (launch, tail wave): t = flops/(peak*fraction) + this."
    )
    attention_fraction: Fraction = Field(
        description="Fused (flash) attention: executed FLOPs / time, as a fraction of bf16 peak."
    )
    hbm_fraction: Fraction = Field(description="Achievable fraction of HBM bandwidth for elementwise ops.")
    source: Note = Field(description="Where the fractions come from.")


class Device(Spec):
    """One accelerator type."""

    name: Name
    peak_flops: PeakFlops
    hbm_bytes: PositiveBytes = Field(description="Memory capacity (vendor GB, e.g. '80GB').")
    hbm_bandwidth_bytes_per_s: BytesPerSecond
    efficiency: DeviceEfficiency
    source: Note = Field(description="Datasheet or secondary source of the peaks.")

    def peak(self, dtype: Dtype) -> float:
        value = getattr(self.peak_flops, dtype)
        if value is None:
            raise ValueError(f"device {self.name} has no {dtype} peak")
        return value


class NetworkTier(Spec):
    """One level of the network hierarchy, as seen by one GPU."""

    name: Name = Field(description="e.g. 'nvlink', 'infiniband'.")
    size: int | None = Field(
        default=None, gt=0, le=2**24, description="Devices in one domain of this tier; null = whole cluster."
    )
    bandwidth_bytes_per_s: BytesPerSecond = Field(
        description="Per-GPU unidirectional bandwidth into this tier (NVLink uni, NIC rate per GPU)."
    )
    latency_s: Seconds = Field(description="Per-collective latency floor on this tier (alpha).")
    efficiency: Fraction = Field(
        description="Achievable fraction of bandwidth for large collectives (NCCL busbw / link)."
    )
    source: Note = ""


class Cluster(Spec):
    """A homogeneous cluster: a device type and its network tiers, innermost first."""

    name: Name
    device: Device
    num_devices: int = Field(gt=0, le=2**24)
    tiers: list[NetworkTier] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_tiers(self) -> Cluster:
        previous = 1
        for index, tier in enumerate(self.tiers):
            size = self.tier_size(index)
            if size % previous != 0:
                raise ValueError(
                    f"tiers[{index}].size ({size}) must be a multiple of the inner tier size ({previous})"
                )
            previous = size
        if self.tier_size(len(self.tiers) - 1) < self.num_devices:
            raise ValueError(
                f"the outermost tier ({self.tiers[-1].name}) holds {self.tier_size(len(self.tiers) - 1)} "
                f"devices < num_devices ({self.num_devices}); set its size to null or larger"
            )
        return self

    def tier_size(self, index: int) -> int:
        """Devices in one domain of tier `index` (capped at the cluster size)."""
        size = self.tiers[index].size
        if size is not None:
            return size
        inner = self.tier_size(index - 1) if index > 0 else 1
        return max(self.num_devices, inner)

    @property
    def devices_per_node(self) -> int:
        return min(self.tier_size(0), self.num_devices)
