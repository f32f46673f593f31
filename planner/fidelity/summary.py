"""`planner validate`'s summaries and report: MAPE by source, family and framework profile, the
inference rows apart, the LLM rows (the shared file's), rows under a documented regression
counted apart; the text table and its JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planner.fidelity.regressions import regressions

if TYPE_CHECKING:
    from planner.fidelity.validate import RowResult

PREDICTED_MEMORY = (
    "the framework's reserved peak: tensors live at the peak (planner.llm.cost.memory), an allocator "
    "allowance of the task's allocator_fragmentation x activations and framework_overhead_bytes (CUDA "
    "context, NCCL and cuBLAS workspaces); comparable with torch.cuda max_memory_reserved and with "
    "nvidia-smi, not with max_memory_allocated"
)
"""What a memory prediction is (printed with `-v` beside each row's measured kind)."""

INFERENCE_METRICS = {"throughput": "output_tokens_per_s_per_gpu", "ttft": "ttft_ms"}
"""The two serving metrics, summarised separately."""


def inference_summary(results: list[RowResult]) -> dict[str, Any]:
    """MAPE and the largest |error| of the inference rows, per metric (throughput, TTFT)."""
    used = [r for r in results if r.counted and r.workload == "inference"]
    summary: dict[str, Any] = {}
    for name, metric in INFERENCE_METRICS.items():
        errors = [r.error_pct for r in used if r.metric == metric]
        summary[name] = {"metric": metric, "num_rows": len(errors), "mape_pct": mape(errors),
                         "max_abs_error_pct": max(map(abs, errors), default=None)}
    return summary


def mape(values: list[float]) -> float | None:
    return sum(abs(v) for v in values) / len(values) if values else None



def validation_json(results: list[RowResult]) -> dict[str, Any]:
    """The rows, then the training rows' summaries (MAPE, memory, by family) and the inference
    rows' (`inference`: throughput and TTFT apart); `llm` is every LLM row (training and serving:
    the rows of ../shared/data/measured_runs.yaml); rows under a documented regression are in
    `regressions`, not in the MAPE figures (`with_regressions` gives the figures with them)."""
    used = [r for r in results if r.counted and r.workload == "training"]
    llm = [r for r in results if r.counted and r.family != "dlrm"]
    regressed = [r for r in results if r.skipped is None and r.regression is not None]
    return {
        "rows": [r.as_json() for r in results],
        "mape_pct": mape([r.error_pct for r in used]),
        "max_abs_error_pct": max((abs(r.error_pct) for r in used), default=None),
        "memory_mape_pct": mape([r.memory_error_pct for r in used if r.memory_error_pct is not None]),
        "mape_pct_by_family": {f: mape([r.error_pct for r in used if r.family == f])
                               for f in sorted({r.family for r in used if r.family})},
        "max_abs_error_pct_by_family": {f: max(abs(r.error_pct) for r in used if r.family == f)
                                        for f in sorted({r.family for r in used if r.family})},
        "mape_pct_by_profile": {p: {"mape_pct": mape([r.error_pct for r in used if r.profile == p]),
                                    "num_rows": sum(1 for r in used if r.profile == p)}
                                for p in sorted({r.profile for r in used if r.profile})},
        "num_predicted": len(used),
        "num_skipped": sum(1 for r in results if r.skipped is not None),
        "inference": inference_summary(results),
        "llm": {"num_rows": len(llm), "mape_pct": mape([r.error_pct for r in llm]),
                "max_abs_error_pct": max((abs(r.error_pct) for r in llm), default=None)},
        "regressions": [{"id": r.id, "error_pct": r.error_pct, "source": r.regression} for r in regressed],
        "with_regressions": {
            "mape_pct": mape([r.error_pct for r in used + regressed if r.workload == "training"]),
            "llm_mape_pct": mape([r.error_pct for r in llm + regressed if r.family != "dlrm"]),
        },
    }


def render_validation(results: list[RowResult], verbose: bool = False) -> str:
    from planner.report.estimate import table

    used = [r for r in results if r.skipped is None]
    if not used:
        lines = [f"no row could be predicted ({len(results)} rows, all skipped):"]
        return "\n".join(lines + [f"  {r.id}: {r.skipped}" for r in results])
    rows = []
    for r in used:
        mem = (
            f"{r.memory_predicted_gib:.1f}/{r.memory_measured_gib:.0f} ({r.memory_error_pct:+.0f}%)"
            if r.memory_measured_gib
            else ""
        )
        mark = " (regression)" if r.regression else ""
        rows.append([r.id, r.metric, f"{r.predicted:.4g}", f"{r.measured:.4g}", f"{r.error_pct:+.1f}%{mark}", mem,
                     r.profile or ""])
    lines = [table(rows, ["row", "metric", "predicted", "measured", "error", "memory GiB pred/meas", "profile"])]
    summary = validation_json(results)
    lines.append("")
    training = [r for r in used if r.workload == "training" and r.counted]
    if training:
        lines.append(
            f"throughput/step-time MAPE {summary['mape_pct']:.1f}% over {summary['num_predicted']} rows "
            f"(max |error| {summary['max_abs_error_pct']:.1f}%)"
        )
        groups: dict[str, list[float]] = {}
        for r in training:
            groups.setdefault(r.id.split("-")[0], []).append(r.error_pct)
        lines.append("by source: " + ", ".join(f"{k} {mape(v):.1f}% (n={len(v)})" for k, v in groups.items()))
        families: dict[str, list[float]] = {}
        for r in training:
            families.setdefault(r.family or "?", []).append(r.error_pct)
        lines.append("by model family: " + ", ".join(f"{k} {mape(v):.1f}% (n={len(v)}, max {max(map(abs, v)):.1f}%)"
                                                     for k, v in families.items()))
        profiled = summary["mape_pct_by_profile"]
        if profiled:
            lines.append("by framework profile: " + ", ".join(f"{k} {v['mape_pct']:.1f}% (n={v['num_rows']})"
                                                             for k, v in profiled.items()))
    for name, part in summary["inference"].items():
        if part["num_rows"]:
            label = "output tokens/s per GPU" if name == "throughput" else "time to first token"
            lines.append(f"inference {label} MAPE {part['mape_pct']:.1f}% over {part['num_rows']} rows "
                         f"(max |error| {part['max_abs_error_pct']:.1f}%)")
    if summary["memory_mape_pct"] is not None:
        lines.append(f"memory MAPE {summary['memory_mape_pct']:.1f}%")
    llm = summary["llm"]
    # The LLM rows (training and serving) apart from the DLRM rows, where the file mixes kinds.
    kinds = {"dlrm" if r.family == "dlrm" else r.workload for r in used if r.counted}
    llm_line = bool(llm["num_rows"]) and len(kinds) > 1
    if llm_line:
        lines.append(f"LLM rows (training and serving) MAPE {llm['mape_pct']:.1f}% over {llm['num_rows']} rows "
                     f"(max |error| {llm['max_abs_error_pct']:.1f}%)")
    if summary["regressions"]:
        lines += ["", "measured under a documented regression (predicted, not in the MAPE figures):"]
        lines += [f"  {g['id']}: {g['error_pct']:+.1f}% ({g['source']})" for g in summary["regressions"]]
        both = summary["with_regressions"]
        shown_lines = {"mape_pct": bool(training), "llm_mape_pct": llm_line}
        parts = [f"{label} {both[key]:.1f}%" for key, label in
                 (("mape_pct", "throughput/step-time MAPE"), ("llm_mape_pct", "LLM rows"))
                 if both[key] is not None and shown_lines[key]]
        if parts:
            lines.append("  with them: " + ", ".join(parts))
    skipped = [r for r in results if r.skipped]
    if skipped:
        lines += ["", f"skipped {len(skipped)} rows:"] + [f"  {r.id}: {r.skipped}" for r in skipped]
    if verbose:
        lines += ["", "assumptions per row:"]
        for r in used:
            lines.append(f"  {r.id} [{r.plan}; preset {r.preset}" + (f"; profile {r.profile}" if r.profile else "") + "]")
            lines += [f"    - {a}" for a in r.assumptions]
            if r.regression:
                entry = regressions()[r.id]
                lines.append(f"    measured under a documented regression ({entry.source}): {entry.statement} "
                             f"Reference: {entry.reference}")
            if r.memory_kind is not None and r.workload == "training" and r.family != "dlrm":
                lines.append(f"    memory: measured {r.memory_kind}; predicted {PREDICTED_MEMORY}")
            if r.breakdown and r.workload == "inference":
                parts = ", ".join(f"{k.removeprefix('decode_').removesuffix('_s')} {v * 1e3:.3g}"
                                  for k, v in r.breakdown.items() if v and k.startswith("decode_"))
                lines.append(f"    TTFT {r.breakdown['ttft_s'] * 1e3:.4g} ms; TPOT {r.breakdown['tpot_s'] * 1e3:.4g} ms: "
                             f"{parts} (ms)")
            elif r.breakdown:
                parts = ", ".join(f"{k.removesuffix('_s')} {v * 1e3:.3g}" for k, v in r.breakdown.items()
                                  if v and k != "step_time_s")
                lines.append(f"    step {r.breakdown['step_time_s'] * 1e3:.3g} ms: {parts} (ms)")
    return "\n".join(lines)
