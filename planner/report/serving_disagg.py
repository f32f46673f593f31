"""Plain-text and JSON renderings of a priced disaggregated serving deployment."""

from __future__ import annotations

import math
from typing import Any

from planner.core.units import format_bytes, format_seconds
from planner.report.estimate import table
from planner.report.serving import problem_json, problem_line, stage_memory_json, target_text, targets_json
from planner.serving.disagg import PREFILL_PARTS, DisaggregatedEstimate, DisaggregatedPlan, transfer_tier
from planner.serving.memory import kv_cache_bytes_per_token
from planner.serving.problem import ServingProblem

DECODE_ORDER = ("gemm", "attention", "elementwise", "lm_head", "tp_comm", "ep_comm", "pp_p2p")
"""Parts of a decode pool's round, in report order."""


def _parts(parts: dict[str, float], order: tuple[str, ...], total: float) -> str:
    rows = [[name.replace("_", " ") if name == "kv_transfer" else name, format_seconds(parts[name]),
             f"{100 * parts[name] / total:.1f}%" if total else "-"] for name in order if parts.get(name)]
    rows.append(["total", format_seconds(total), "100.0%"])
    return table(rows, ["part", "time", "share"])


def _memory_rows(pool: str, stages) -> list[list[str]]:
    return [[pool, str(s.stage), str(s.layers), format_bytes(s.weights_bytes), format_bytes(s.kv_cache_bytes),
             format_bytes(s.workspace_bytes), format_bytes(s.overhead_bytes), format_bytes(s.total_bytes),
             format_bytes(s.capacity_bytes), "yes" if s.fits else "NO"] for s in stages]


def warnings_for(problem: ServingProblem, e: DisaggregatedEstimate) -> list[str]:
    notes = list(e.notes)
    for pool, stages in (("prefill", e.prefill_memory), ("decode", e.decode_memory)):
        for s in stages:
            if not s.fits:
                notes.append(f"{pool} pool stage {s.stage} needs {format_bytes(s.total_bytes)} of "
                             f"{format_bytes(s.capacity_bytes)} usable (over by "
                             f"{format_bytes(s.total_bytes - s.capacity_bytes)}); "
                             + ("try a smaller max_num_batched_tokens, fp8 weights or KV cache, or more TP or PP"
                                if pool == "prefill" else
                                f"at most {e.max_batch_fits:,} sequences per decode replica fit; try a smaller "
                                "max_num_seqs, an fp8 KV cache, or more TP or PP" if e.max_batch_fits else
                                "not even one sequence per pipeline stage fits (the weights and workspace alone "
                                "are too large); try fp8 weights, or more TP or PP"))
    targets = problem.task.targets
    if targets.ttft_s is not None and e.ttft_max_s > targets.ttft_s:
        notes.append(f"TTFT {format_seconds(e.ttft_max_s)} misses the {format_seconds(targets.ttft_s)} target")
    if targets.tpot_s is not None and e.tpot_s > targets.tpot_s:
        notes.append(f"TPOT {format_seconds(e.tpot_s)} misses the {format_seconds(targets.tpot_s)} target")
    return notes


def render_disaggregated_estimate(problem: ServingProblem, plan: DisaggregatedPlan, e: DisaggregatedEstimate) -> str:
    task, cluster = problem.task, problem.cluster
    targets = task.targets
    tier = cluster.tiers[transfer_tier(problem)]
    pace = (f"the {e.bottleneck} pool sets the pace: prefill {plan.prefill.dp} x {e.prefill_requests_per_s:,.2f}, "
            f"decode {plan.decode.dp} x {e.decode_requests_per_s:,.2f} requests/s"
            if math.isfinite(e.decode_requests_per_s) else
            f"the prefill pool sets the pace: prefill {plan.prefill.dp} x {e.prefill_requests_per_s:,.2f} requests/s; "
            "no request decodes past its first token")
    lines = [
        problem_line(problem),
        f"plan     disaggregated: {plan.summary()}",
        (f"         {plan.prefill.num_devices} prefill GPUs + {plan.decode.num_devices} decode GPUs; "
         f"{e.batch_per_replica:,} sequences per decode replica (at most {e.max_batch_fits:,} fit)"),
        "",
        (f"output throughput  {e.output_tokens_per_s:,.0f} tokens/s  ({e.output_tokens_per_s_per_gpu:,.1f} per GPU, "
         f"{e.requests_per_s:,.2f} requests/s; {pace})"),
        (f"TTFT               {format_seconds(e.ttft_s)}"
         + (f" mean, {format_seconds(e.ttft_max_s)} slowest kind" if e.ttft_max_s > e.ttft_s * (1 + 1e-9) else "")
         + target_text(e.ttft_max_s, targets.ttft_s)),
        f"TPOT               {format_seconds(e.tpot_s)}" + target_text(e.tpot_s, targets.tpot_s),
        (f"KV transfer        {format_seconds(e.kv_transfer_max_s)} for the longest prompt over {tier.name} "
         f"({format_bytes(kv_cache_bytes_per_token(problem))} per token, {task.kv_cache_dtype})"),
        "",
        f"decode round (one token for each of a decode replica's {e.batch_per_replica:,} sequences = TPOT)",
        _parts(e.decode_parts, DECODE_ORDER, e.tpot_s),
        "",
        ("prefill (time to first token" + (" of the slowest request kind" if len(task.requests.mix()) > 1 else "")
         + f"; passes of {plan.prefill.max_num_batched_tokens:,} tokens, {format_seconds(e.prefill_pass_s)} each)"),
        _parts(e.prefill_parts, PREFILL_PARTS, e.ttft_max_s),
        "",
        "memory per GPU by pool and pipeline stage",
        table(_memory_rows("prefill", e.prefill_memory) + _memory_rows("decode", e.decode_memory),
              ["pool", "stage", "layers", "weights", "kv cache", "workspace", "other", "total", "usable", "fits"]),
    ]
    notes = warnings_for(problem, e)
    if notes:
        lines += ["", *[f"warning: {n}" for n in notes]]
    return "\n".join(lines)


def disaggregated_estimate_json(problem: ServingProblem, plan: DisaggregatedPlan,
                                e: DisaggregatedEstimate) -> dict[str, Any]:
    return {
        "problem": problem_json(problem),
        "plan": plan.model_dump(mode="json"),
        "disaggregated": True,
        "fits": e.fits,
        "bottleneck": e.bottleneck,
        "requests_per_s": e.requests_per_s,
        "prefill_requests_per_s_per_replica": e.prefill_requests_per_s,
        "prefill_network_requests_per_s_per_replica": e.prefill_network_requests_per_s,
        "decode_requests_per_s_per_replica": e.decode_requests_per_s,
        "batch_per_replica": e.batch_per_replica,
        "micro_batch": e.micro_batch,
        "max_batch_fits": e.max_batch_fits,
        "concurrency": e.concurrency,
        "output_tokens_per_s": e.output_tokens_per_s,
        "output_tokens_per_s_per_gpu": e.output_tokens_per_s_per_gpu,
        "ttft_s": e.ttft_s,
        "ttft_max_s": e.ttft_max_s,
        "tpot_s": e.tpot_s,
        "kv_transfer_max_s": e.kv_transfer_max_s,
        "targets": targets_json(problem, e.ttft_max_s, e.tpot_s),
        "decode_parts_s": e.decode_parts,
        "prefill_parts_s": e.prefill_parts,
        "memory": {"prefill": [stage_memory_json(st) for st in e.prefill_memory],
                   "decode": [stage_memory_json(st) for st in e.decode_memory]},
        "warnings": warnings_for(problem, e),
    }
