"""A serving plan as `vllm serve` arguments (vLLM 0.33.0), as a command or a `--config` YAML.

What maps to what (flags from vLLM 0.33.0's own parser, planner/export/vllm_v0.33.0_arguments.json):
  plan tp, pp, dp             --tensor-parallel-size, --pipeline-parallel-size, --data-parallel-size
                              (one API server balancing dp engine replicas: vLLM's internal DP)
  plan ep > 1                 --enable-expert-parallel, which deals the experts over one server's
                              TP x DP GPUs: a server of --data-parallel-size ep / tp replicas per
                              expert group, tp x dp / ep such servers (one when ep = tp x dp)
  plan dp_attention           not expressible (vLLM's attention DP is --data-parallel-size with
                              TP 1): ExportError
  plan max_num_seqs           --max-num-seqs (per engine replica); open: the cost model's batch
  max_num_batched_tokens      --max-num-batched-tokens, with --enable-chunked-prefill
  weight_precision            bf16/fp16: --dtype; fp8: --quantization fp8 (online W8A8 of a bf16
                              checkpoint, or an fp8 checkpoint); fp4: --quantization modelopt_fp4
                              (an NVFP4 checkpoint made by ModelOpt; vLLM does not make one)
  kv_cache_dtype              --kv-cache-dtype bfloat16 | float16 | fp8 (e4m3)
  requests (longest)          --max-model-len (prompt + output)
  engine.kv_block_tokens      --block-size
  engine.gpu_memory_utilization  --gpu-memory-utilization (the same fraction of the GPU)
  engine.two_batch_overlap    --enable-dbo (dual batch overlap), with ep > tp
A value vLLM 0.33.0 does not accept (checked against the table) is an ExportError.
"""

from __future__ import annotations

from planner.export.base import ExportError
from planner.export.serving_base import (
    ServingSettings,
    check_degrees,
    common_notes,
    header,
    span_note,
    render_command,
    render_yaml,
    settings,
)
from planner.export.serving_check import table, version_text

VERSION = "0.33.0"
PROGRAM = ["vllm", "serve"]
DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16", "fp4": "bfloat16"}
QUANTIZATION = {"fp8": "fp8", "fp4": "modelopt_fp4"}
KV_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp8": "fp8"}


def _accepted(flag: str, value: str, what: str) -> str:
    t = table("vllm")
    allowed = t["options"][flag]["choices"] or t.get("validated_values", {}).get(flag)
    if allowed is not None and value not in allowed:
        raise ExportError(f"{what}: vLLM {version_text('vllm')} has no {flag} {value} (it takes "
                          f"{', '.join(allowed)})")
    return value


def vllm_settings(s: ServingSettings) -> tuple[list[tuple[str, object]], list[str], int]:
    """([(flag, value or True)], notes, servers to launch): the flags of `s`, in the order written."""
    check_degrees(s)
    notes = list(s.notes)
    if s.dp_attention:
        raise ExportError("dp_attention (attention data-parallel inside the TP group) is SGLang's "
                          "--enable-dp-attention; vLLM runs attention data-parallel only as --data-parallel-size "
                          "with TP 1: re-plan with dp_attention false, or export to sglang or trtllm")
    dp, servers = s.dp, 1
    if s.ep > 1:
        # One vLLM server per expert group: its TP x DP GPUs are the group (--enable-expert-parallel).
        dp = s.ep // s.tp
        if s.dp % dp:
            raise ExportError(f"ep {s.ep}: an expert group of ep / tp = {dp} replicas does not divide dp {s.dp}")
        servers = s.dp // dp
    flags: list[tuple[str, object]] = [
        ("--tensor-parallel-size", s.tp), ("--pipeline-parallel-size", s.pp), ("--data-parallel-size", dp)]
    if s.ep > 1:
        flags.append(("--enable-expert-parallel", True))
        if servers > 1:
            notes.append(f"NOTE: ep {s.ep}: vLLM deals the experts over one server's TP x DP GPUs, so the {s.dp} "
                         f"replicas run as {servers} servers of --data-parallel-size {dp} (CUDA_VISIBLE_DEVICES and "
                         "--port apart) behind a load balancer; this script launches the first")
    if s.two_batch_overlap:
        flags.append(("--enable-dbo", True))  # dual batch overlap: the priced two-batch overlap
    flags += [("--max-num-seqs", s.max_num_seqs), ("--max-num-batched-tokens", s.max_num_batched_tokens),
              ("--enable-chunked-prefill", True)]
    flags.append(("--dtype", _accepted("--dtype", DTYPE[s.weight_precision], "inference.weight_precision")))
    if s.weight_precision in QUANTIZATION:
        flags.append(("--quantization", _accepted("--quantization", QUANTIZATION[s.weight_precision],
                                                   "inference.weight_precision")))
        if s.weight_precision == "fp4":
            notes.append("NOTE: --quantization modelopt_fp4 serves an NVFP4 checkpoint made by NVIDIA ModelOpt "
                         "(vLLM does not quantize to NVFP4 itself); point MODEL at one")
    flags.append(("--kv-cache-dtype", _accepted("--kv-cache-dtype", KV_DTYPE[s.kv_cache_dtype],
                                                 "inference.kv_cache_dtype")))
    flags += [("--max-model-len", s.max_model_len), ("--block-size", s.block_tokens),
              ("--gpu-memory-utilization", s.gpu_memory_utilization)]
    if dp > 1:
        notes.append(f"NOTE: --data-parallel-size {dp}: one API server balances requests over {dp} engine "
                     f"replicas of tp x pp = {s.tp * s.pp} GPUs each; --max-num-seqs is per replica")
    notes += span_note(s, s.tp * s.pp * dp, "vLLM 0.33.0: --nnodes and --node-rank for TP/PP across hosts; "
                       "--data-parallel-size-local, --data-parallel-address and --headless for DP across hosts")
    return flags, notes + common_notes(s, "vllm"), servers


def argv_of(flags: list[tuple[str, object]]) -> list[str]:
    argv: list[str] = []
    for flag, value in flags:
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def export_vllm(problem, plan, fmt: str = "command", model: str | None = None) -> tuple[str, list[str]]:
    """(the export text, its notes)."""
    s = settings(problem, plan)
    flags, notes, servers = vllm_settings(s)
    head = header(problem, plan, "vLLM", version_text("vllm"), s, notes)
    head.append(f"servers: {servers}")
    if fmt == "config":
        config: dict[str, object] = {}
        if model:
            config["model"] = model
        else:
            head.append("the model is not in this file: vllm serve MODEL --config THIS_FILE")
        for flag, value in flags:
            config[flag[2:]] = value
        return render_yaml(config, head), notes
    return render_command(PROGRAM, model, argv_of(flags), head), notes


__all__ = ["VERSION", "PROGRAM", "export_vllm", "vllm_settings"]
