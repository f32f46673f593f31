"""Plain-text and JSON renderings of a priced serving plan."""

from __future__ import annotations

from typing import Any

from planner.core.units import format_bytes, format_seconds
from planner.report.estimate import table
from planner.serving.cost import DECODE_PARTS, PREFILL_PARTS, ServingEstimate
from planner.serving.memory import kv_cache_bytes_per_token
from planner.serving.plan import ServingPlan
from planner.serving.problem import ServingProblem


def requests_text(problem: ServingProblem) -> str:
    mix = problem.task.requests.mix()
    if len(mix) == 1:
        return f"{mix[0][0]:,} in / {mix[0][1]:,} out tokens"
    return "buckets " + ", ".join(f"{i:,}/{o:,} ({100 * w:.0f}%)" for i, o, w in mix)


def problem_line(problem: ServingProblem) -> str:
    task, cluster = problem.task, problem.cluster
    concurrency = f"concurrency {task.concurrency:,}" if task.concurrency is not None else "as many requests as fit"
    return (f"problem  {problem.model.name} on {cluster.num_devices} x {cluster.device.name} ({cluster.name}); "
            f"inference: {requests_text(problem)}, {concurrency}, {task.weight_precision} weights, "
            f"{task.kv_cache_dtype} KV cache, {task.engine.name} ({task.engine.batching} batching)")


def target_text(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return f"   (target {format_seconds(target)}: {'met' if value <= target else 'MISSED'})"


def warnings_for(problem: ServingProblem, e: ServingEstimate) -> list[str]:
    notes = list(e.notes)
    for stage in e.memory:
        if not stage.fits:
            notes.append(
                f"stage {stage.stage} needs {format_bytes(stage.total_bytes)} of {format_bytes(stage.capacity_bytes)} "
                f"usable (over by {format_bytes(stage.total_bytes - stage.capacity_bytes)}): "
                + (f"at most {e.max_batch_fits:,} sequences per replica fit" if e.max_batch_fits
                   else "not even one sequence fits")
                + "; try (1) a smaller max_num_seqs or concurrency, (2) an fp8 KV cache or fp8 weights, (3) more "
                "TP or PP per replica"
            )
    targets = problem.task.targets
    if targets.ttft_s is not None and e.ttft_max_s > targets.ttft_s:
        notes.append(f"TTFT {format_seconds(e.ttft_max_s)} misses the {format_seconds(targets.ttft_s)} target")
    if targets.tpot_s is not None and e.tpot_s > targets.tpot_s:
        notes.append(f"TPOT {format_seconds(e.tpot_s)} misses the {format_seconds(targets.tpot_s)} target")
    return notes


PART_LABELS = {"prefill": "prefill mixed in"}
"""Row names that differ from the part keys."""


def _parts_table(parts: dict[str, float], order: tuple[str, ...], total: float) -> str:
    rows = [[PART_LABELS.get(name, name), format_seconds(parts[name]),
             f"{100 * parts[name] / total:.1f}%" if total else "-"] for name in order if parts.get(name)]
    rows.append(["total", format_seconds(total), "100.0%"])
    return table(rows, ["part", "time", "share"])


def render_serving_estimate(problem: ServingProblem, plan: ServingPlan, e: ServingEstimate) -> str:
    task, cluster = problem.task, problem.cluster
    targets = task.targets
    micro = f", {plan.pp} micro-batches of {e.micro_batch}" if plan.pp > 1 else ""
    lines = [
        problem_line(problem),
        (f"plan     {plan.summary()}; {e.batch_per_replica:,} sequences per replica{micro} "
         f"(at most {e.max_batch_fits:,} fit)"),
        "",
        (f"output throughput  {e.output_tokens_per_s:,.0f} tokens/s  ({e.output_tokens_per_s_per_gpu:,.1f} per GPU, "
         f"{e.concurrency:,} requests in flight)"),
        (f"TTFT               {format_seconds(e.ttft_s)}"
         + (f" mean, {format_seconds(e.ttft_max_s)} slowest kind" if e.ttft_max_s > e.ttft_s * (1 + 1e-9) else "")
         + target_text(e.ttft_max_s, targets.ttft_s)),
        f"TPOT               {format_seconds(e.tpot_s)}" + target_text(e.tpot_s, targets.tpot_s),
        (f"KV cache           {format_bytes(kv_cache_bytes_per_token(problem))} per token of the whole model "
         f"({task.kv_cache_dtype})"),
        "",
        f"decode step (one token for each of the replica's {e.batch_per_replica:,} sequences = TPOT)",
        _parts_table(e.decode_parts, DECODE_PARTS, e.tpot_s),
        "",
        "prefill (time to first token" + (" of the slowest request kind)" if len(task.requests.mix()) > 1 else ")"),
        _parts_table(e.prefill_parts, PREFILL_PARTS, e.ttft_max_s),
        "",
        "TP communication per decode step by tier",
        table([[tier.name, format_seconds(t)] for tier, t in zip(cluster.tiers, e.decode_tp_by_tier, strict=True)
               if t > 0] or [["-", format_seconds(0.0)]], ["tier", "time"]),
        "",
        "memory per GPU by pipeline stage" + (" (one row per kind of stage: first, middle, last)" if plan.pp > 2 else ""),
        table([[str(s.stage), str(s.layers), format_bytes(s.weights_bytes), format_bytes(s.kv_cache_bytes),
                format_bytes(s.workspace_bytes), format_bytes(s.overhead_bytes), format_bytes(s.total_bytes),
                format_bytes(s.capacity_bytes), "yes" if s.fits else "NO"] for s in e.memory],
              ["stage", "layers", "weights", "kv cache", "workspace", "other", "total", "usable", "fits"]),
    ]
    notes = warnings_for(problem, e)
    if notes:
        lines += ["", *[f"warning: {n}" for n in notes]]
    return "\n".join(lines)


def problem_json(problem: ServingProblem) -> dict[str, Any]:
    return {"model": problem.model.name, "cluster": problem.cluster.name,
            "num_devices": problem.cluster.num_devices, "device": problem.cluster.device.name,
            "hash": problem.hash, "task": problem.task.model_dump(mode="json")}


def targets_json(problem: ServingProblem, ttft_max_s: float, tpot_s: float) -> dict[str, Any]:
    targets = problem.task.targets
    return {"ttft_s": targets.ttft_s, "tpot_s": targets.tpot_s,
            "ttft_met": None if targets.ttft_s is None else ttft_max_s <= targets.ttft_s,
            "tpot_met": None if targets.tpot_s is None else tpot_s <= targets.tpot_s}


def stage_memory_json(s) -> dict[str, Any]:
    return {"stage": s.stage, "layers": s.layers, "weights_bytes": s.weights_bytes,
            "kv_cache_bytes": s.kv_cache_bytes, "workspace_bytes": s.workspace_bytes,
            "overhead_bytes": s.overhead_bytes, "total_bytes": s.total_bytes,
            "capacity_bytes": s.capacity_bytes, "fits": s.fits}


def serving_estimate_json(problem: ServingProblem, plan: ServingPlan, e: ServingEstimate) -> dict[str, Any]:
    return {
        "problem": problem_json(problem),
        "plan": plan.model_dump(mode="json"),
        "fits": e.fits,
        "batch_per_replica": e.batch_per_replica,
        "micro_batch": e.micro_batch,
        "max_batch_fits": e.max_batch_fits,
        "concurrency": e.concurrency,
        "output_tokens_per_s": e.output_tokens_per_s,
        "output_tokens_per_s_per_gpu": e.output_tokens_per_s_per_gpu,
        "ttft_s": e.ttft_s,
        "ttft_max_s": e.ttft_max_s,
        "tpot_s": e.tpot_s,
        "targets": targets_json(problem, e.ttft_max_s, e.tpot_s),
        "decode_parts_s": e.decode_parts,
        "prefill_parts_s": e.prefill_parts,
        "decode_tp_by_tier_s": {tier.name: t for tier, t in zip(problem.cluster.tiers, e.decode_tp_by_tier,
                                                                strict=True)},
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(problem),
        "memory": [stage_memory_json(s) for s in e.memory],
        "warnings": warnings_for(problem, e),
    }
