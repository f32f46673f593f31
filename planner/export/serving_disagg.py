"""A disaggregated serving plan (a prefill pool and a decode pool, planner.serving.disagg) as one
bash script that launches either pool's server: `script.sh prefill` or `script.sh decode`.

Each pool is exported as the colocated serving plan it is (planner.export.sglang / vllm, over the
pool's GPUs), with the engine's disaggregation flags added, and the whole command is checked
against the engine's recorded flag table again (planner.export.serving.check_serving_export: every
flag known, values of the right type and choice, the pool's degrees read back):
  SGLang 0.5.23   --disaggregation-mode prefill | decode (the KV cache moves through the
                  --disaggregation-transfer-backend, Mooncake by default); requests enter through
                  SGLang's router in PD mode (sglang_router, a separate package: its launch line
                  is a NOTE, not checked)
  vLLM 0.33.0     --kv-transfer-config {"kv_connector": "NixlConnector", "kv_role": "kv_both"} on
                  both pools (vLLM's NIXL connector); requests enter through a proxy that sends
                  each to a prefill instance, then to a decode instance (vLLM's disaggregated
                  serving examples; a NOTE)
TensorRT-LLM's disaggregated serving (`trtllm-serve disaggregated` with context and generation
servers) and the `config` format (two servers are two files) are not exported: ExportError.
The header carries the disaggregated prediction (planner.serving.disagg), not the pools' colocated
ones.
"""

from __future__ import annotations

import json

from planner import __version__
from planner.core.units import format_bytes, format_seconds
from planner.export.base import Exported, ExportError
from planner.export.serving_base import MODEL_VARIABLE, command_argv, comment, continued_argv, flag_pairs
from planner.export.serving_check import check_flags, version_text

TARGETS = ("sglang", "vllm")
KV_TRANSFER_CONFIG = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
"""vLLM's KV connector for a disaggregated pair (NIXL), the same on both pools."""


def disaggregation_flags(target: str, role: str) -> list[str]:
    """The flags that make a pool's server a prefill or decode server of a disaggregated pair."""
    if target == "sglang":
        return ["--disaggregation-mode", role]
    return ["--kv-transfer-config", json.dumps(KV_TRANSFER_CONFIG, separators=(",", ":"))]


def _program(target: str) -> list[str]:
    if target == "sglang":
        from planner.export.sglang import PROGRAM
    else:
        from planner.export.vllm import PROGRAM
    return PROGRAM


def _command_lines(text: str, program: list[str]) -> list[str]:
    """The lines of the rendered script's command (the program line and its continuations)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[: len(program)] == program)
    out = []
    for line in lines[start:]:
        out.append(line)
        if not line.endswith("\\"):
            break
    return out


def _with_flags(command: list[str], flags: list[str]) -> list[str]:
    """`command` lines with `flags` appended, one flag (and its value) per line."""
    out = list(command)
    for pair in flag_pairs(flags):
        out[-1] += " \\"
        out.append(f"  {pair}")
    return out


def export_disaggregated(problem, plan, target: str, fmt: str = "command", model: str | None = None) -> Exported:
    """Renders a DisaggregatedPlan for `target` (module doc); raises ExportError when the engine or
    the format cannot express it, or when the check of either pool's command finds a problem."""
    from planner.export.serving import ENGINE_NAMES, _renderer, check_serving_export
    from planner.serving.disagg import evaluate_disaggregated, pool_problem
    from planner.serving.plan import ServingPlan

    if target not in TARGETS:
        raise ExportError(f"--to {target}: a disaggregated plan exports to {' or '.join(TARGETS)} (TensorRT-LLM's "
                          "disaggregated serving, trtllm-serve disaggregated with context and generation servers, "
                          "is not exported yet)")
    if fmt != "command":
        raise ExportError(f"--format {fmt}: a disaggregated plan is two servers; export it as --format command (one "
                          "script: run it with prefill or decode)")
    engine = ENGINE_NAMES[target]
    program = _program(target)
    blocks, notes = [], []
    for role, pool in (("prefill", plan.prefill), ("decode", plan.decode)):
        sub = pool_problem(problem, pool.num_devices)
        colocated = ServingPlan(family="serving", **pool.model_dump(exclude={"family", "provenance"}))
        try:
            text, pool_notes = _renderer(target)(sub, colocated, "command", model)
        except ExportError as exc:  # which pool the engine cannot express
            raise ExportError(f"the {role} pool: {exc}") from exc
        command = _with_flags(_command_lines(text, program), disaggregation_flags(target, role))
        # Check the whole command again: the pool's degrees and limits, and the added flags.
        script = "\n".join(line for line in text.splitlines() if line.startswith("# servers:")) + "\n" + "\n".join(
            command) + "\n"
        problems = check_serving_export(sub, colocated, target, script, "command")
        values, flag_problems = check_flags(target, command_argv(script, program))
        problems += flag_problems
        if target == "sglang" and values.get("disaggregation_mode") != role:
            problems.append(f"SGLang reads disaggregation_mode = {values.get('disaggregation_mode')}, the pool is "
                            f"the {role} pool")
        if target == "vllm" and json.loads(str(values.get("kv_transfer_config", "null"))) != KV_TRANSFER_CONFIG:
            problems.append("vLLM reads back a different --kv-transfer-config")
        if problems:
            raise ExportError(f"{engine} {version_text(target)}'s flag table does not accept the {role} pool's "
                              "command: " + "; ".join(problems))
        servers = next((line.split(":")[1].strip() for line in text.splitlines() if line.startswith("# servers:")),
                       "1")
        notes.append((role, [n.removeprefix("NOTE: ") for n in pool_notes if n.startswith("NOTE")]))
        blocks.append((role, pool, servers, command))
    shared = [n for n in notes[0][1] if n in notes[1][1]]  # the same for both pools: said once
    notes = shared + [f"{role} pool: {n}" for role, found in notes for n in found if n not in shared]
    e = evaluate_disaggregated(problem, plan)
    if target == "sglang":
        entry = ("requests enter through SGLang's router in PD mode: python -m sglang_router.launch_router "
                 "--pd-disaggregation --prefill http://PREFILL_HOST:PORT --decode http://DECODE_HOST:PORT "
                 "(the sglang-router package; not checked here)")
    else:
        entry = ("requests enter through a proxy that sends each request to a prefill instance, then to a decode "
                 "instance (vLLM's disaggregated serving examples; not checked here)")
    warnings = []
    if not e.fits:  # said as the colocated export says it (planner.export.serving_base.header)
        role, worst = max(((r, st) for r, stages in (("prefill", e.prefill_memory), ("decode", e.decode_memory))
                           for st in stages), key=lambda item: item[1].total_bytes - item[1].capacity_bytes)
        warnings.append(f"WARNING: predicted not to fit: the {role} pool's stage {worst.stage} needs "
                        f"{format_bytes(worst.total_bytes)} of {format_bytes(worst.capacity_bytes)} usable per GPU "
                        f"(over by {format_bytes(worst.total_bytes - worst.capacity_bytes)}; planner estimate "
                        "prices the plan)")
    head = [
        f"planner {__version__} export for {engine} {version_text(target)}: disaggregated prefill and decode",
        f"problem {problem.hash}",
        f"plan: {plan.summary()}"
        + (f", found by {plan.provenance.solver} ({plan.provenance.status})"
           if plan.provenance.solver not in (None, "user") else ""),
        (f"predicted: {e.output_tokens_per_s_per_gpu:,.1f} output tokens/s per GPU, TPOT {format_seconds(e.tpot_s)}, "
         f"TTFT {format_seconds(e.ttft_max_s)}, the {e.bottleneck} pool sets the pace"),
        *warnings,
        *[f"{role} pool: {pool.num_devices} GPUs as {servers} server(s) of this command (run: $0 {role})"
          for role, pool, servers, _ in blocks],
        f"NOTE: {entry}",
        *[f"NOTE: {n}" for n in notes],
    ]
    lines = ["#!/usr/bin/env bash", comment(head), "set -euo pipefail"]
    if not model:
        lines.append(f': "${{{MODEL_VARIABLE}:?set {MODEL_VARIABLE} to the checkpoint (Hugging Face id or path)}}"')
    lines.append('ROLE="${1:?usage: $0 prefill|decode}"')
    lines.append('case "$ROLE" in')
    for role, _, _, command in blocks:
        lines.append(f"{role})")
        lines += ["  " + line for line in command]
        lines.append("  ;;")
    lines += ['*) echo "usage: $0 prefill|decode" >&2; exit 2 ;;', "esac"]
    approximations = [*warnings, f"NOTE: {entry}", *[f"NOTE: {n}" for n in notes]]
    return Exported(target=target, version=version_text(target), text="\n".join(lines) + "\n",
                    approximations=approximations)


def role_argv(text: str, target: str, role: str) -> list[str]:
    """The arguments of one role's command in an exported script (for checks and tests)."""
    program = _program(target)
    lines = text.splitlines()
    start = lines.index(f"{role})")
    return continued_argv([line.strip() for line in lines[start + 1:]], program)
