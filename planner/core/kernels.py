"""Time of the kernels of one device: GEMMs, fused attention, memory-bound ops.

GEMM: t = flops / (peak * gemm_fraction) + gemm_overhead_s. The fraction is the large-shape
plateau and the overhead a fixed cost per call (launch, partial last wave); together they
give the lower efficiency of small GEMMs (small TP shards). Both are fitted to published
per-shape measurements (`planner calibrate`, planner/data/efficiency.yaml).

Fused attention: executed FLOPs / (bf16 peak * attention_fraction), with the causal half
skipped and the backward pass costing 2.5x the forward (FlashAttention-2 recomputes the
scores: 5 GEMMs backward vs 2 forward; Dao 2023, sec. 3.1).

Memory-bound ops (norms, residual adds, activation functions, softmax, dropout, casts,
optimizer): bytes / (HBM bandwidth * hbm_fraction).

Communication beside compute. A collective that overlaps compute runs as kernels on SMs that the
compute then lacks (NCCL launches one CTA per channel; DeepEP its own kernels): with C seconds
of compute and M of communication the pair takes max(M, C + COMM_SM_FRACTION * M), so at least
COMM_SM_FRACTION * M of an overlapped collective is exposed (`contended_exposed_s`); for Transformer Engine's
userbuffers TP overlap only its SM-driven kernels count (`UB_COMM_SM_FRACTION`).
"""

from __future__ import annotations

import numpy as np

from planner.core.hardware import Device

FLASH_BACKWARD_FACTOR = 2.5
"""Backward/forward FLOP ratio of fused attention (5 vs 2 score-sized GEMMs)."""


COMM_SM_FRACTION = 24 / 132
"""Share of the GPU's SMs a communication kernel holds while it runs: on an H100 (132 SMs) an
NCCL all-gather beside an FSDP GEMM launches 24 CTAs, one per channel, each on its own SM (NVIDIA
developer forum, "Compute-Communication Overlap Causes Severe GEMM Performance Degradation because
of Tail Effect", 2025, Nsight Systems trace), and DeepEP's normal kernels take 24 SMs for
DeepSeek-V3-like training (DeepEP README, ../shared/reference/moe.md sec. 3). NCCL's send/receive
kernels (context-parallel ring, pipeline sends) run on SMs too; their count was not measured and
the all-gather's stands in. The device presets carry no SM count, so the H100 share stands for
every device."""

UB_COMM_SM_FRACTION = 16 / 132
"""Share of an H100's SMs Transformer Engine's userbuffers TP overlap gives its SM-driven
communication kernels: the default configuration (transformer_engine/pytorch/module/base.py v2.9
initialize_ub, get_default_config) runs the 'pipeline' reduce-scatters after the output
projection and fc2 (forward) and the 'bulk' collectives of the QKV and fc1 backward on num_sm 16
SMs, while the 'ring_exchange' all-gathers (before QKV and fc1 forward, of the projection's and
fc2's output gradients backward) move data with copy engines and hold none. (NeMo's tuned H100
configurations give the pipeline overlaps 16-24 SMs and the bulk ones fewer.) While such a
kernel runs the GEMM beside it lacks those SMs."""


def contended_exposed_s(comm_s, compute_s, sm_fraction=None):
    """Exposed seconds of `comm_s` of communication overlapped with `compute_s` of compute: the
    pair takes max(M, C + f * M) (see the module doc), i.e. max(M - C, f * M) beyond the compute,
    with f = `sm_fraction` (default COMM_SM_FRACTION; arrays broadcast)."""
    f = COMM_SM_FRACTION if sm_fraction is None else sm_fraction
    comm = np.asarray(comm_s, dtype=float)
    return np.maximum(comm - np.asarray(compute_s, dtype=float), f * comm)


def contended_floor_s(never_hidden_s, collective_s):
    """Never-hidden seconds of a bucketed collective that overlaps compute: the part no compute
    can hide (its last or first bucket; all of it without overlap) plus COMM_SM_FRACTION of the
    rest, the SMs the overlapped buckets hold (arrays broadcast)."""
    never_hidden = np.asarray(never_hidden_s, dtype=float)
    return never_hidden + COMM_SM_FRACTION * (np.asarray(collective_s, dtype=float) - never_hidden)


def gemm_peak(device: Device, precision: str) -> tuple[float, float]:
    """(peak FLOP/s, achievable fraction) for GEMMs in the task precision."""
    eff = device.efficiency
    if precision == "fp8":
        return device.peak("fp8"), eff.gemm_fraction_fp8 or eff.gemm_fraction
    if precision == "fp4":
        # No fp4 (NVFP4) best-shape measurement is in the efficiency data: the fp8 plateau, the
        # closest measured low-precision one on the same tensor cores, stands in for it.
        return device.peak("fp4"), eff.gemm_fraction_fp8 or eff.gemm_fraction
    if precision in ("tf32", "fp32"):  # fp32 GEMMs on TF32 tensor cores where the device has them
        dtype = "tf32" if precision == "tf32" and device.peak_flops.tf32 is not None else "fp32"
        return device.peak(dtype), eff.gemm_fraction
    dtype = "fp16" if precision == "fp16" else "bf16"
    return device.peak(dtype), eff.gemm_fraction


def gemm_time_s(flops, num_calls, device: Device, precision: str):
    """Time of `num_calls` GEMMs totalling `flops` FLOPs (arrays broadcast)."""
    peak, fraction = gemm_peak(device, precision)
    return np.asarray(flops) / (peak * fraction) + num_calls * device.efficiency.gemm_overhead_s


def gemm_efficiency(flops_per_call, device: Device, precision: str):
    """Achieved fraction of peak of one GEMM of the given size (for reports and tests)."""
    peak, fraction = gemm_peak(device, precision)
    t = gemm_time_s(flops_per_call, 1, device, precision)
    return np.asarray(flops_per_call) / (t * peak)


def flash_attention_time_s(forward_flops, device: Device):
    """(forward, backward) time of fused attention with `forward_flops` executed FLOPs."""
    rate = device.peak("bf16") * device.efficiency.attention_fraction
    forward = np.asarray(forward_flops) / rate
    return forward, FLASH_BACKWARD_FACTOR * forward


def memory_bound_time_s(num_bytes, device: Device):
    """Time to stream `num_bytes` through HBM at the achievable fraction."""
    return np.asarray(num_bytes) / (device.hbm_bandwidth_bytes_per_s * device.efficiency.hbm_fraction)
