"""What the serving exporters (vLLM, SGLang, TensorRT-LLM) share: the settings a serving plan and
its inference task fix, the header, and the rendering of a command line and a YAML file.

A serving export is one of two formats:
  command  a bash script that launches the engine's server with flags (TensorRT-LLM: it also
           writes the --extra_llm_api_options YAML beside it);
  config   the YAML file the engine reads with `--config` (vLLM, SGLang) or
           `--extra_llm_api_options` (TensorRT-LLM), header as comments.
Every flag and key is checked against the engine's recorded flag table before it is written
(planner.export.serving_check); a plan or task field the engine cannot express is either an
ExportError (exit 4) or a NOTE line in the header and on standard error, never dropped.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field

import yaml

from planner import __version__
from planner.core.units import format_bytes, format_seconds
from planner.export.base import ExportError

FORMATS = ("command", "config")
MODEL_VARIABLE = "MODEL"
"""Shell variable the command script reads the checkpoint from when --model is not given."""


@dataclass
class ServingSettings:
    """What a serving plan and its task fix, in engine-neutral terms (per replica unless said)."""

    tp: int
    pp: int
    dp: int
    ep: int
    dp_attention: bool
    max_num_seqs: int
    max_num_seqs_from_plan: bool
    max_num_batched_tokens: int
    max_model_len: int
    max_input_len: int
    weight_precision: str
    kv_cache_dtype: str
    block_tokens: int
    gpu_memory_utilization: float
    kv_pool_fraction_of_total: float
    """(weights + KV pool) / HBM: SGLang's mem_fraction_static for the plan's KV pool."""
    kv_pool_fraction_of_free: float
    """KV pool / (HBM - weights - activations - overhead): TensorRT-LLM's free_gpu_memory_fraction."""
    batching: str
    decode_attention: str
    engine_name: str
    estimate: object
    two_batch_overlap: bool = False
    """The task's engine.two_batch_overlap (priced only for MoE plans with ep > tp)."""
    domain_gpus: int = 8
    """GPUs of the cluster's innermost network tier (an NVLink domain)."""
    notes: list[str] = field(default_factory=list)


def settings(problem, plan) -> ServingSettings:
    """The settings of `plan` for `problem`, priced by the serving cost model."""
    from planner.serving.cost import evaluate

    task = problem.task
    estimate = evaluate(problem, plan)
    hbm = problem.cluster.device.hbm_bytes
    notes = []
    seqs = plan.max_num_seqs
    if seqs is None:
        seqs = max(estimate.batch_per_replica, 1)
        notes.append(f"NOTE: the plan leaves max_num_seqs open (the most that fit); the cost model's batch per "
                     f"replica, {seqs:,}, is written as the engine's limit")
    # The KV pool the cost model gives a GPU of the tightest stage: its usable memory less
    # weights, activations (workspace) and the framework overhead.
    of_total, of_free = 1.0, 1.0
    for stage in estimate.memory:
        fixed = stage.workspace_bytes + stage.overhead_bytes
        pool = stage.capacity_bytes - stage.weights_bytes - fixed
        of_total = min(of_total, (stage.capacity_bytes - fixed) / hbm)
        free = hbm - stage.weights_bytes - fixed
        of_free = min(of_free, pool / free if free > 0 else 0.0)
    mix = task.requests.mix()
    return ServingSettings(
        tp=plan.tp, pp=plan.pp, dp=plan.dp, ep=getattr(plan, "ep", 1),
        dp_attention=bool(getattr(plan, "dp_attention", False)),
        max_num_seqs=seqs, max_num_seqs_from_plan=plan.max_num_seqs is not None,
        max_num_batched_tokens=plan.max_num_batched_tokens,
        max_model_len=task.requests.max_context_tokens, max_input_len=max(i for i, _, _ in mix),
        weight_precision=task.weight_precision, kv_cache_dtype=task.kv_cache_dtype,
        block_tokens=task.engine.kv_block_tokens, gpu_memory_utilization=task.engine.gpu_memory_utilization,
        kv_pool_fraction_of_total=floor3(of_total), kv_pool_fraction_of_free=floor3(of_free),
        batching=task.engine.batching, decode_attention=task.engine.decode_attention,
        engine_name=task.engine.name, estimate=estimate, domain_gpus=problem.cluster.tier_size(0), notes=notes,
        two_batch_overlap=task.engine.two_batch_overlap and getattr(plan, "ep", 1) > plan.tp,
    )


def floor3(x: float) -> float:
    """`x` rounded down to 3 decimals (a memory fraction never grows by rounding), at least 0.001."""
    return max(math.floor(x * 1000 + 1e-9) / 1000, 0.001)


def common_notes(s: ServingSettings, target_engine: str) -> list[str]:
    """What no engine flag expresses: the cost model's assumptions and the client's load."""
    notes = []
    if s.engine_name != target_engine:
        notes.append(f"NOTE: the task prices {s.engine_name}'s behaviour (inference.engine.name); this is a "
                     f"{target_engine} export: its batching and kernels may differ from what was priced")
    if s.batching == "static":
        notes.append("NOTE: inference.engine.batching static (a whole batch prefilled, then decoded) is not a "
                     "setting of this server, which batches continuously; the prediction assumed static batching")
    if s.decode_attention == "per_query_head":
        notes.append("NOTE: inference.engine.decode_attention per_query_head describes the decode kernel priced; "
                     "the server picks its own attention kernels")
    notes.append("NOTE: inference.concurrency and the request lengths describe the load (the benchmark client), "
                 "targets the latencies checked; framework_overhead_bytes is a cost-model allowance: none is a "
                 "server setting")
    return notes


def span_note(s: ServingSettings, server_gpus: int, how: str) -> list[str]:
    """A note when one server spans more GPUs than an NVLink domain holds (a multi-host launch)."""
    if server_gpus <= s.domain_gpus:
        return []
    return [f"NOTE: one server spans {server_gpus} GPUs, more than an NVLink domain's {s.domain_gpus}: start it across "
            f"hosts ({how})"]


def header(problem, plan, target: str, version: str, s: ServingSettings, notes: list[str]) -> list[str]:
    """Header lines (without the comment sign): the problem, the plan, the prediction, the notes."""
    from planner.report.serving import problem_line

    e = s.estimate
    fits = all(stage.fits for stage in e.memory)
    lines = [
        f"planner {__version__} export for {target} {version}",
        f"problem {problem.hash}: {problem_line(problem).removeprefix('problem  ')}",
        f"plan: {plan.summary()} ({plan.num_devices} GPUs: tp x pp per replica, {plan.dp} replica(s))"
        + (f", found by {plan.provenance.solver} ({plan.provenance.status})"
           if plan.provenance.solver not in (None, "user") else ""),
        f"predicted: {e.output_tokens_per_s_per_gpu:,.1f} output tokens/s per GPU, TPOT {format_seconds(e.tpot_s)}, "
        f"TTFT {format_seconds(e.ttft_max_s)} (slowest request kind), {e.batch_per_replica:,} sequences per replica",
    ]
    if not fits:
        worst = max(e.memory, key=lambda st: st.total_bytes - st.capacity_bytes)
        lines.append(f"WARNING: predicted not to fit: stage {worst.stage} needs {format_bytes(worst.total_bytes)} of "
                     f"{format_bytes(worst.capacity_bytes)} usable per GPU")
    lines += notes
    return lines


def comment(lines: list[str]) -> str:
    return "\n".join(f"# {line}" if line else "#" for line in lines)


def flag_pairs(argv: list[str]) -> list[str]:
    """Command-line flags one per entry, each with its value (shell-quoted) when it has one."""
    pairs, i = [], 0
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            pairs.append(f"{argv[i]} {shlex.quote(argv[i + 1])}")
            i += 2
        else:
            pairs.append(argv[i])
            i += 1
    return pairs


def render_command(program: list[str], model: str | None, argv: list[str], head: list[str],
                   before: list[str] = (), after: list[str] = ()) -> str:
    """A bash script: the header, optional lines, then `program MODEL argv...` one flag per line."""
    model_word = shlex.quote(model) if model else f'"${MODEL_VARIABLE}"'
    lines = ["#!/usr/bin/env bash", comment(head), "set -euo pipefail"]
    if not model:
        lines.append(f': "${{{MODEL_VARIABLE}:?set {MODEL_VARIABLE} to the checkpoint (Hugging Face id or path)}}"')
    lines += list(before)
    words = [*program, model_word] if model_word is not None else list(program)
    body = [" ".join(words), *flag_pairs(argv)]
    lines.append(" \\\n  ".join(body))
    lines += list(after)
    return "\n".join(lines) + "\n"


def render_yaml(config: dict, head: list[str]) -> str:
    return comment(head) + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def command_argv(text: str, program: list[str]) -> list[str]:
    """The arguments after `program` on the command line of a rendered script (the model word
    kept as written: "$MODEL" or the checkpoint)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.split()[: len(program)] == program), None)
    if start is None:
        raise ExportError(f"not a planner serving export: no `{' '.join(program)}` line")
    return continued_argv(lines[start:], program)


def continued_argv(lines: list[str], program: list[str]) -> list[str]:
    """The arguments of the command whose first line is lines[0], continued by trailing
    backslashes, less its program words."""
    joined = []
    for line in lines:
        joined.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    words = shlex.split(" ".join(joined), posix=True)
    return words[len(program):]


def yaml_config(text: str) -> dict:
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ExportError("not a planner serving config: expected a YAML mapping")
    return data


def check_degrees(s: ServingSettings) -> None:
    if s.ep > 1 and s.ep % s.tp:
        raise ExportError(f"ep {s.ep} is not a multiple of tp {s.tp}; no engine lays experts out so")


__all__ = ["FORMATS", "ServingSettings", "settings", "header", "render_command", "render_yaml", "command_argv",
           "yaml_config", "comment", "common_notes", "floor3"]
