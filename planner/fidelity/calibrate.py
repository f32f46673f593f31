"""`planner calibrate`: fit the hardware efficiencies of the presets from published measurements.

Nothing here looks at the measured training runs: the constants come from microbenchmarks
(planner/data/efficiency.yaml, a copy of ../shared/data/efficiency.yaml), so that the
validation against training runs is a test, not a fit.

GEMM: t = F / (peak * fraction) + overhead, least squares on |log(t_pred / t_meas)| over the
11 measured A100-PCIe shapes (SimuMax). Other devices: the plateau scaled by the ratio of
best-shape MAMF fractions (S_MLENG), the per-call overhead by per-SM throughput (a tail wave
of fixed-size tiles finishes faster on a faster SM).

Collectives: t = latency + S * 2(n-1)/n / (link * efficiency), fitted to each all-reduce
sweep for S >= 1 MiB (smaller messages use other NCCL protocols).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import math

import numpy as np
from pydantic import ValidationError

from planner.core import files
from planner.core.errors import InputError
from planner.core.files import shown
from planner.fidelity.measured import EfficiencyData, field_errors

DEFAULT_EFFICIENCY = Path(__file__).resolve().parent.parent / "data" / "efficiency.yaml"

REFERENCE_GPU = "A100-PCIe-80GB"
"""The GPU whose GEMM sweep the curve is fitted to."""

SM_COUNT = {"A100": 108, "H100": 132, "H200": 132, "B200": 148, "GB200": 148}


def fit_gemm(rows: list, peak_flops: float) -> tuple[float, float, float]:
    """(fraction, overhead_s, mean |log error|) for rows [M, N, K, layout, fraction]."""
    data = np.array([[r[0], r[1], r[2], r[4]] for r in rows], dtype=float)
    flops = 2.0 * data[:, 0] * data[:, 1] * data[:, 2]
    measured = flops / (peak_flops * data[:, 3])
    fractions = np.linspace(0.5, 1.0, 501)[:, None, None]
    overheads = np.linspace(0.0, 100e-6, 401)[None, :, None]
    predicted = flops[None, None, :] / (peak_flops * fractions) + overheads
    error = np.mean(np.abs(np.log(predicted / measured[None, None, :])), axis=2)
    i, j = np.unravel_index(np.argmin(error), error.shape)
    return float(fractions[i, 0, 0]), float(overheads[0, j, 0]), float(error[i, j])


def fit_allreduce(points: list, link_bytes_per_s: float, n: int = 8) -> tuple[float, float, float]:
    """(latency_s, efficiency, mean |log error|) for [[bytes, busbw GB/s], ...] with S >= 1 MiB."""
    data = np.array(points, dtype=float)
    data = data[data[:, 0] >= 2**20]
    factor = 2.0 * (n - 1) / n
    measured = data[:, 0] * factor / (data[:, 1] * 1e9)
    latencies = np.linspace(0.0, 200e-6, 401)[:, None, None]
    efficiencies = np.linspace(0.3, 1.2, 361)[None, :, None]
    predicted = latencies + data[None, None, :, 0] * factor / (link_bytes_per_s * efficiencies)
    error = np.mean(np.abs(np.log(predicted / measured[None, None, :])), axis=2)
    i, j = np.unravel_index(np.argmin(error), error.shape)
    return float(latencies[i, 0, 0]), float(efficiencies[0, j, 0]), float(error[i, j])


def load_efficiency(path: str | Path) -> dict[str, Any]:
    """The efficiency file, its fitted parts checked (planner.fidelity.measured.EfficiencyData)."""
    raw = files.read_yaml(path, int_keys=True)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    try:
        data = EfficiencyData.model_validate(raw).model_dump()
    except ValidationError as exc:
        raise InputError("\n".join(f"{path}: {line}" for line in field_errors(exc))) from None
    for i, group in enumerate(data["gemm_by_size"]):
        for j, row in enumerate(group["rows"] or []):
            if not all(_positive(x) for x in (row[0], row[1], row[2])) or not _positive(row[4]) or row[4] > 1.5:
                raise InputError(f"{path}: gemm_by_size[{i}].rows[{j}]: expected [M, N, K, layout, fraction] "
                                 "with positive sizes and a fraction in (0, 1.5]")
    return data


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0 < x < 1e12


def calibrate(path: str | Path = DEFAULT_EFFICIENCY) -> dict[str, Any]:
    data = load_efficiency(path)
    measured = next((g for g in data["gemm_by_size"] if g["gpu"] == REFERENCE_GPU), None)
    if measured is None:
        raise InputError(f"{path}: gemm_by_size: no entry for gpu {REFERENCE_GPU} (the GEMM curve is fitted to it)")
    if measured["peak_tflops"] is None or not measured["rows"] or len(measured["rows"]) < 2:
        raise InputError(f"{path}: gemm_by_size ({REFERENCE_GPU}): peak_tflops and at least two rows are needed")
    peak = measured["peak_tflops"] * 1e12
    fraction, overhead, error = fit_gemm(measured["rows"], peak)
    buckets = {}
    for name, bucket in measured["buckets_gflop"].items():
        low, _, high = name.partition("-")
        try:
            centre = np.sqrt(float(low.strip(">=")) * float(high)) if high else 3.16 * float(low.strip(">="))
            median = float(bucket["median"])
            if not (math.isfinite(median) and 0 < median <= 1.5):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}: gemm_by_size.buckets_gflop.{shown(name, 40)}: expected a name like "
                             "'10-100' or '>=1000' with a median fraction in (0, 1.5]") from None
        if not (math.isfinite(centre) and centre > 0):
            raise InputError(f"{path}: gemm_by_size.buckets_gflop.{shown(name, 40)}: sizes must be positive")
        t = centre * 1e9 / (peak * fraction) + overhead
        buckets[name] = {"median": median, "model": round(centre * 1e9 / (t * peak), 3)}
    mamf = {(r["gpu"], r["dtype"]): r["fraction"] for r in data["gemm_best_shape"]}
    if (REFERENCE_GPU, "bf16") not in mamf:
        raise InputError(f"{path}: gemm_best_shape: no bf16 entry for gpu {REFERENCE_GPU} (the reference of the scaling)")
    reference = mamf[(REFERENCE_GPU, "bf16")]
    per_sm_ref = 312e12 / SM_COUNT["A100"]
    devices = {}
    for (gpu, dtype), best in sorted(mamf.items()):
        family = next((k for k in SM_COUNT if gpu.startswith(k)), None)
        entry = devices.setdefault(gpu, {})
        entry[f"gemm_fraction_{dtype}"] = round(fraction * best / reference, 3)
        if dtype == "bf16" and family:
            peak_gpu = next(r["peak"] for r in data["gemm_best_shape"] if r["gpu"] == gpu and r["dtype"] == "bf16")
            per_sm = peak_gpu * 1e12 / SM_COUNT[family]
            scale = per_sm_ref / per_sm
            if gpu.startswith("A100"):
                scale = reference / best  # same SMs; the SXM part sustains higher clocks
            entry["gemm_overhead_us"] = round(overhead * 1e6 * scale, 1)
    collectives = []
    for i, sweep in enumerate(data["allreduce_sweeps"]):
        link = sweep.get("link_unidirectional_gb_s")
        if not link:
            continue
        if not any(point[0] >= 2**20 for point in sweep["points"]):
            raise InputError(f"{path}: allreduce_sweeps[{i}].points: no point of at least 1 MiB to fit")
        latency, efficiency, err = fit_allreduce(sweep["points"], link * 1e9)
        collectives.append(
            {
                "system": sweep["system"],
                "latency_us": round(latency * 1e6, 1),
                "efficiency": round(efficiency, 3),
                "mean_abs_log_error": round(err, 3),
            }
        )
    return {
        "gemm_fit": {
            "source": measured["source"],
            "fraction": fraction,
            "overhead_us": round(overhead * 1e6, 2),
            "mean_abs_log_error": round(error, 4),
            "bucket_medians_vs_model": buckets,
        },
        "devices": devices,
        "allreduce_fits": collectives,
    }


def render_calibration(result: dict[str, Any]) -> str:
    g = result["gemm_fit"]
    lines = [
        f"GEMM curve fitted to {g['source']}:",
        f"  fraction {g['fraction']:.3f}, overhead {g['overhead_us']} us per call, mean |log error| {g['mean_abs_log_error']:.3f}",
        "  bucket medians (measured vs model): "
        + ", ".join(f"{k} GFLOP {v['median']:.3f}/{v['model']:.3f}" for k, v in g["bucket_medians_vs_model"].items()),
        "",
        "per device (plateau scaled by best-shape MAMF; overhead by per-SM throughput):",
    ]
    for gpu, entry in result["devices"].items():
        lines.append(f"  {gpu:18s} " + ", ".join(f"{k} {v}" for k, v in entry.items()))
    lines += ["", "all-reduce fits (8 GPUs, S >= 1 MiB):"]
    for c in result["allreduce_fits"]:
        lines.append(
            f"  {c['system']}: latency {c['latency_us']} us, efficiency {c['efficiency']} "
            f"(mean |log error| {c['mean_abs_log_error']})"
        )
    return "\n".join(lines)
