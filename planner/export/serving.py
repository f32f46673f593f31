"""Serving exports: a serving plan as vLLM, SGLang or TensorRT-LLM server configuration, checked
against the engine's recorded flag table before it is returned.

`export_serving(problem, plan, target, fmt, model)` renders (planner.export.vllm / sglang /
trtllm), then `check_serving_export` reads the text back the way the engine would (the command
line's arguments; a --config YAML turned into arguments as the engine does; TensorRT-LLM's YAML
against its LLM API fields) and compares the degrees and limits read back with the plan's: tp,
pp, dp, ep, max_num_seqs, max_num_batched_tokens. A problem is an ExportError: the export is never
written unchecked.
"""

from __future__ import annotations

import re

from planner.export.base import Exported, ExportError
from planner.export.serving_base import FORMATS, command_argv, yaml_config
from planner.export.serving_check import check_flags, check_llm_args, config_argv, version_text

SERVING_TARGETS = ("vllm", "sglang", "trtllm")
ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM"}


def _renderer(target: str):
    if target == "vllm":
        from planner.export.vllm import export_vllm

        return export_vllm
    if target == "sglang":
        from planner.export.sglang import export_sglang

        return export_sglang
    from planner.export.trtllm import export_trtllm

    return export_trtllm


def expected(problem, plan) -> dict[str, int]:
    """What the engine must read back: the plan's degrees and limits."""
    from planner.export.serving_base import settings

    s = settings(problem, plan)
    return {"tp": s.tp, "pp": s.pp, "dp": s.dp, "ep": s.ep, "max_num_seqs": s.max_num_seqs,
            "max_num_batched_tokens": s.max_num_batched_tokens}


def read_back(target: str, text: str, fmt: str) -> tuple[dict[str, int], list[str]]:
    """(the degrees and limits an export sets, the problems the flag table finds in it)."""
    if target == "trtllm":
        return _read_trtllm(text, fmt)
    if fmt == "config":
        data = yaml_config(text)
        argv = config_argv(data)
    else:
        from planner.export.sglang import PROGRAM as SGLANG
        from planner.export.vllm import PROGRAM as VLLM

        argv = command_argv(text, VLLM if target == "vllm" else SGLANG)
    values, problems = check_flags(target, argv)

    def number(dest: str, default: int | None = None) -> int | None:
        value = values.get(dest, default)
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    found = re.search(r"^# servers: (\d+)$", text, re.M)
    servers = int(found[1]) if found else 1
    if target == "vllm":
        dp = number("data_parallel_size", 1) or 1
        got = {"tp": number("tensor_parallel_size", 1), "pp": number("pipeline_parallel_size", 1),
               "dp": dp * servers, "max_num_seqs": number("max_num_seqs"),
               "max_num_batched_tokens": number("max_num_batched_tokens")}
        got["ep"] = (got["tp"] or 1) * dp if values.get("enable_expert_parallel") else 1
    else:
        dp = number("dp_size", 1)
        got = {"tp": number("tp_size", 1), "pp": number("pp_size", 1),
               "dp": servers if servers > 1 else dp, "ep": number("ep_size", 1),
               "max_num_seqs": number("max_running_requests"),
               "max_num_batched_tokens": number("chunked_prefill_size")}
    return got, problems


def _read_trtllm(text: str, fmt: str) -> tuple[dict[str, int], list[str]]:
    from planner.export.trtllm import PROGRAM, heredoc_config

    problems: list[str] = []
    replicas = re.search(r"^# replicas: (\d+)$", text, re.M)
    if fmt == "config":
        config = yaml_config(text)
        values: dict = {}
    else:
        config = heredoc_config(text)
        values, problems = check_flags("trtllm", command_argv(text, PROGRAM))
    problems += check_llm_args(config)

    def both(dest: str, key: str, default: int | None) -> int | None:
        flag, field = values.get(dest), config.get(key)
        if flag is not None and field is not None and str(flag) != str(field):
            problems.append(f"--{dest} {flag} and {key}: {field} disagree")
        value = field if field is not None else flag
        return int(value) if value is not None else default

    got = {"tp": both("tensor_parallel_size", "tensor_parallel_size", 1),
           "pp": both("pipeline_parallel_size", "pipeline_parallel_size", 1),
           "dp": int(replicas[1]) if replicas else 1,
           "ep": both("moe_expert_parallel_size", "moe_expert_parallel_size", 1),
           "max_num_seqs": both("max_batch_size", "max_batch_size", None),
           "max_num_batched_tokens": both("max_num_tokens", "max_num_tokens", None)}
    return got, problems


def check_serving_export(problem, plan, target: str, text: str, fmt: str) -> list[str]:
    """Problems with an export: flags or keys the engine's table refuses, degrees read back that
    differ from the plan's (empty list = accepted)."""
    got, problems = read_back(target, text, fmt)
    for name, want in expected(problem, plan).items():
        if got.get(name) != want:
            problems.append(f"{ENGINE_NAMES[target]} reads {name} = {got.get(name)}, the plan says {want}")
    return problems


def export_serving(problem, plan, target: str, fmt: str = "command", model: str | None = None) -> Exported:
    """Renders `plan` for `target` (vllm, sglang, trtllm) in `fmt` (command, config); raises
    ExportError when the engine cannot express it, or when the check finds a problem."""
    if target not in SERVING_TARGETS:
        raise ExportError(f"unknown serving target {target!r}; choose from {', '.join(SERVING_TARGETS)}")
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    text, notes = _renderer(target)(problem, plan, fmt, model)
    problems = check_serving_export(problem, plan, target, text, fmt)
    if problems:
        raise ExportError(f"{ENGINE_NAMES[target]} {version_text(target)}'s flag table does not accept this export: "
                          + "; ".join(problems))
    return Exported(target=target, version=version_text(target), text=text, approximations=notes)


__all__ = ["SERVING_TARGETS", "export_serving", "check_serving_export", "read_back", "expected"]
