"""Serving rows of a measured-runs file (`workload: inference`): the problem, the serving plan and
the assumptions that price one published inference benchmark.

Model      a dense decoder from the row's own fields (gated MLP when the activation is a GLU; no
           biases, rotary positions and an untied LM head: what Llama-2 and Falcon-180B's new
           decoder architecture use, and the head is read every step either way).
Cluster    as `validate.resolve_cluster` resolves every row (device presets, the row's numbers).
Task       the measured batch, prompt and output lengths (concurrency = the batch); weights in the
           precision the row names (fp4, fp8, fp16 or bf16; bf16 when it names none; a row naming
           another, e.g. int8, is skipped); the KV cache in fp8 when the row says so, or for
           TensorRT-LLM fp8 rows (its performance page builds every engine with --fp8_kv_cache).
Engine     named by the row's framework. Static batching where the row says so
           ("gptSessionBenchmark", "static batching"); a batch-1 TTFT row is one request alone,
           which every batching prices the same. Decode attention per query head for TensorRT-LLM
           before v0.8 (its masked MHA kernel runs one thread block per query head,
           docs/source/advanced/gpt-attention.md; the GQA kernel XQA arrived in v0.8,
           docs/source/blogs/XQA-kernel.md), grouped otherwise.
Plan       the row's TP, PP and replicas, the measured batch per replica.
Metric     output tokens/s per GPU, or the time to first token in ms.
"""

from __future__ import annotations

import math
import re
from typing import Any

from planner.core.errors import PlannerError
from planner.core.files import shown
from planner.core.inputs import build
from planner.llm.model import DenseTransformer
from planner.serving.cost import ServingEstimate, evaluate
from planner.serving.plan import ServingPlan, check_plan
from planner.serving.problem import ServingProblem
from planner.serving.task import MAX_CONCURRENCY, MAX_REQUEST_TOKENS, InferenceTask

XQA_VERSION = (0, 8)
"""First TensorRT-LLM release with the XQA (grouped) decode kernel for GQA/MQA."""


def resolve_serving_model(m: dict, seq_len: int, notes: list[str]) -> DenseTransformer:
    if m.get("moe_num_experts"):
        raise PlannerError("a mixture-of-experts model: an inference row carries no expert-parallel layout "
                           "(ep, dp_attention) and no expert shapes (moe_top_k, expert width), so it is not "
                           "priced; planner estimate prices MoE serving plans from a task")
    if not m.get("ffn_hidden_size"):
        raise PlannerError("model.ffn_hidden_size not stated")
    if not m.get("vocab_size"):
        raise PlannerError("model.vocab_size not stated")
    heads, kv = m["num_heads"], m.get("num_kv_heads") or m["num_heads"]
    if kv > heads or heads % kv:
        raise PlannerError(f"model.num_kv_heads {kv} does not divide num_heads {heads}")
    activation = str(m.get("ffn_activation") or "").lower()
    if not activation:
        notes.append("FFN activation not stated: a plain (non-gated) MLP assumed")
    head_dim = m.get("head_dim")
    if head_dim and head_dim * heads == m["hidden_size"]:
        head_dim = None
    notes.append("no biases, rotary positions, untied LM head (not in the row)")
    data = {
        "name": m.get("name") or "row model",
        "num_layers": m["num_layers"],
        "hidden_size": m["hidden_size"],
        "num_heads": heads,
        "num_kv_heads": kv,
        "head_dim": head_dim,
        "ffn_hidden_size": m["ffn_hidden_size"],
        "gated_mlp": "glu" in activation,
        "vocab_size": m["vocab_size"],
        "max_seq_len": max(m["seq_len"], seq_len),
    }
    return build(DenseTransformer, data, "measured row", prefix="model.")


def _version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"\bv?(\d{1,9})\.(\d{1,9})(?:\.(\d{1,9}))?\b", text)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def _engine(p: dict, batch: int, output: int, notes: list[str]) -> dict[str, Any]:
    framework = str(p.get("framework") or "")
    lowered = framework.lower()
    if "tensorrt-llm" in lowered or "trt-llm" in lowered:
        name = "tensorrt-llm"
    elif "sglang" in lowered:
        name = "sglang"
    elif "vllm" in lowered:
        name = "vllm"
    else:
        raise PlannerError(f"plan.framework: {framework!r} names no serving engine the planner knows "
                           "(vLLM, SGLang, TensorRT-LLM)")
    engine: dict[str, Any] = {"name": name}
    if "static" in lowered or "gptsessionbenchmark" in lowered:
        engine["batching"] = "static"
        notes.append("static batching: the batch's prompts prefilled together, then decoded to the end")
    elif batch == 1 and output == 1:
        notes.append("one request alone (batch 1, one output token): its prefill is the time to first token")
    else:
        notes.append("batching not stated: continuous (the engine's default) assumed")
    version = _version(framework)
    if name == "tensorrt-llm" and version is not None and version[:2] < XQA_VERSION:
        engine["decode_attention"] = "per_query_head"
        notes.append(f"TensorRT-LLM {'.'.join(map(str, version))} predates XQA (v0.8): the masked MHA decode kernel "
                     "reads each KV head once per query head")
    return engine


def resolve_serving_row(row: dict) -> tuple[ServingProblem, ServingPlan, list[str], str]:
    """(problem, plan, assumptions, device preset) of one checked inference row; raises
    PlannerError (with the reason) when the row cannot be priced."""
    from planner.fidelity.validate import resolve_cluster  # validate routes inference rows here

    notes: list[str] = []
    m, hw, p, me = row["model"], row["hardware"], row["plan"], row["measured"]
    batch, prompt, output = me["infer_batch_size"], me["infer_input_len"], me["infer_output_len"]
    # The task's limits, stated for the row's own fields (the task built below would name its own).
    if batch > MAX_CONCURRENCY:
        raise PlannerError(f"measured.infer_batch_size: {batch:,} is more than the {MAX_CONCURRENCY:,} requests "
                           "in flight an inference task takes")
    for name, tokens in (("infer_input_len", prompt), ("infer_output_len", output)):
        if tokens > MAX_REQUEST_TOKENS:
            raise PlannerError(f"measured.{name}: {tokens:,} tokens is more than the {MAX_REQUEST_TOKENS:,} a "
                               "request may have")
    model = resolve_serving_model(m, prompt + output, notes)
    cluster, preset = resolve_cluster(hw, notes)
    precision = str(p.get("precision") or "").lower()
    if not precision:
        notes.append("precision not stated: bf16 weights and KV cache assumed")
    engine = _engine(p, batch, output, notes)
    weights = next((name for name in ("fp4", "fp8", "fp16", "bf16") if name in precision), None)
    if weights is None and precision:
        raise PlannerError(f"plan.precision: {shown(str(p['precision']), 80)} names no weight precision the "
                           "serving cost prices (bf16, fp16, fp8, fp4)")
    weights = weights or "bf16"
    kv = "fp8" if "fp8" in precision and ("kv" in precision or engine["name"] == "tensorrt-llm") else "bf16"
    if kv == "fp8" and "kv" not in precision:
        notes.append("fp8 KV cache: the TensorRT-LLM performance page builds its fp8 engines with --fp8_kv_cache")
    task = build(InferenceTask, {
        "requests": {"input_tokens": prompt, "output_tokens": output},
        "concurrency": batch,
        "weight_precision": weights,
        "kv_cache_dtype": kv,
        "engine": engine,
    }, "measured row", "plan.")
    problem = ServingProblem(model=model, cluster=cluster, task=task, source="measured row")
    tp, pp = p.get("tp") or 1, p.get("pp") or 1
    dp = p.get("dp") or max(hw["num_gpus"] // (tp * pp), 1)
    per_replica = math.ceil(batch / dp)
    plan = build(ServingPlan, {"family": "serving", "tp": tp, "pp": pp, "dp": dp, "max_num_seqs": per_replica,
                               "max_num_batched_tokens": max(8192, per_replica)}, "measured row", "plan.")
    errors = check_plan(plan, problem)
    if errors:
        raise PlannerError("the plan does not fit the problem: " + "; ".join(errors))
    return problem, plan, notes, preset


def predict_serving_row(row: dict) -> tuple[ServingProblem, ServingPlan, list[str], str, ServingEstimate, str,
                                              float, float]:
    """`resolve_serving_row`, the estimate, and (metric, predicted, measured)."""
    problem, plan, notes, preset = resolve_serving_row(row)
    estimate = evaluate(problem, plan)
    if not estimate.fits:
        peak = estimate.peak_memory
        notes.append(f"predicted not to fit: {peak.total_bytes / 2**30:.1f} GiB on stage {peak.stage} of "
                     f"{peak.capacity_bytes / 2**30:.1f} GiB usable (priced anyway)")
    me = row["measured"]
    if me.get("output_tokens_per_s_per_gpu"):
        return (problem, plan, notes, preset, estimate, "output_tokens_per_s_per_gpu",
                estimate.output_tokens_per_s_per_gpu, float(me["output_tokens_per_s_per_gpu"]))
    return (problem, plan, notes, preset, estimate, "ttft_ms", 1e3 * estimate.ttft_s,
            float(me["first_token_latency_ms"]))
