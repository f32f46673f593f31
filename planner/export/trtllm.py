"""A serving plan as `trtllm-serve` arguments plus its `--extra_llm_api_options` YAML (TensorRT-LLM,
PyTorch backend; main branch at the commits recorded in planner/export/trtllm_arguments.json).

What maps to what:
  plan tp, pp                 --tp_size, --pp_size; tensor_parallel_size, pipeline_parallel_size
  plan dp                     no flag: dp separate trtllm-serve processes of tp x pp GPUs each (their
                              CUDA_VISIBLE_DEVICES and --port apart) behind a load balancer; the
                              script launches one and says how to launch the others
  plan ep > 1                 --ep_size; moe_expert_parallel_size: TensorRT-LLM deals the experts over
                              one server's TP group, so only ep = tp is expressible (ExportError otherwise)
  plan dp_attention           enable_attention_dp: true
  plan max_num_seqs           --max_batch_size; max_batch_size (per server)
  max_num_batched_tokens      --max_num_tokens; max_num_tokens, with --enable_chunked_prefill
  weight_precision            bf16/fp16: dtype; fp8/fp4: no flag or field (the quantization is read from
                              the checkpoint: ModelOpt FP8 / NVFP4): a NOTE, the dtype left to it
  kv_cache_dtype              kv_cache_config.dtype bfloat16 | float16 | fp8
  requests                    --max_seq_len (prompt + output); max_input_len (longest prompt)
  engine.kv_block_tokens      kv_cache_config.tokens_per_block
  engine.gpu_memory_utilization  --kv_cache_free_gpu_memory_fraction; kv_cache_config.free_gpu_memory_fraction
                              = the plan's KV pool / (GPU memory - weights - activations - overhead)
                              of the tightest stage (TensorRT-LLM's fraction is of the memory left free
                              after the weights and buffers, not of the whole GPU)
The YAML repeats the flags' values, so the two agree whichever the server applies last.
"""

from __future__ import annotations

import yaml

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
from planner.export.serving_check import version_text

PROGRAM = ["trtllm-serve"]
CONFIG_FILE = "extra_llm_api_options.yaml"
DTYPE = {"bf16": "bfloat16", "fp16": "float16"}
KV_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp8": "fp8"}


def trtllm_settings(s: ServingSettings) -> tuple[list[tuple[str, object]], dict, list[str]]:
    """([(flag, value or True)], the LLM API YAML mapping, notes)."""
    check_degrees(s)
    notes = list(s.notes)
    if s.ep > 1 and s.ep != s.tp:
        raise ExportError(f"ep {s.ep}: TensorRT-LLM deals the experts over one server's TP group (--ep_size at most "
                          f"--tp_size {s.tp}); re-plan with ep = tp, or export to vllm (ep = tp x dp)")
    flags: list[tuple[str, object]] = [("--tp_size", s.tp), ("--pp_size", s.pp)]
    config: dict[str, object] = {"tensor_parallel_size": s.tp, "pipeline_parallel_size": s.pp}
    if s.ep > 1:
        flags.append(("--ep_size", s.ep))
        config["moe_expert_parallel_size"] = s.ep
    if s.dp_attention:
        config["enable_attention_dp"] = True
    flags += [("--max_batch_size", s.max_num_seqs), ("--max_num_tokens", s.max_num_batched_tokens),
              ("--max_seq_len", s.max_model_len), ("--kv_cache_free_gpu_memory_fraction", s.kv_pool_fraction_of_free),
              ("--enable_chunked_prefill", True)]
    config.update(max_batch_size=s.max_num_seqs, max_num_tokens=s.max_num_batched_tokens, max_seq_len=s.max_model_len,
                  max_input_len=s.max_input_len, enable_chunked_prefill=True)
    if s.weight_precision in DTYPE:
        config["dtype"] = DTYPE[s.weight_precision]
    else:
        notes.append(f"NOTE: {s.weight_precision} weights: TensorRT-LLM reads the quantization from the checkpoint "
                     f"(NVIDIA ModelOpt {'FP8' if s.weight_precision == 'fp8' else 'NVFP4'}); no trtllm-serve flag or "
                     "LLM API field sets it: point MODEL at such a checkpoint")
    config["kv_cache_config"] = {"dtype": KV_DTYPE[s.kv_cache_dtype],
                                 "free_gpu_memory_fraction": s.kv_pool_fraction_of_free,
                                 "tokens_per_block": s.block_tokens}
    notes.append(f"NOTE: free_gpu_memory_fraction {s.kv_pool_fraction_of_free} is the planned KV pool over the memory "
                 "left after weights, activations and overhead (TensorRT-LLM's meaning), from "
                 f"inference.engine.gpu_memory_utilization {s.gpu_memory_utilization} of the whole GPU")
    if s.dp > 1:
        gpus = s.tp * s.pp
        notes.append(f"NOTE: replicas: {s.dp}. TensorRT-LLM has no data-parallel flag: launch {s.dp} trtllm-serve "
                     f"processes of {gpus} GPUs each, e.g. CUDA_VISIBLE_DEVICES={_devices(0, gpus)} --port 8000, "
                     f"CUDA_VISIBLE_DEVICES={_devices(gpus, gpus)} --port 8001, ..., behind a load balancer; this "
                     "script launches the first")
    notes += span_note(s, s.tp * s.pp, "TensorRT-LLM: trtllm-serve under mpirun or srun over the hosts' GPUs")
    return flags, config, notes + common_notes(s, "tensorrt-llm")


def _devices(first: int, count: int) -> str:
    return ",".join(str(first + i) for i in range(min(count, 8))) + (",..." if count > 8 else "")


def export_trtllm(problem, plan, fmt: str = "command", model: str | None = None) -> tuple[str, list[str]]:
    """(the export text, its notes)."""
    s = settings(problem, plan)
    flags, config, notes = trtllm_settings(s)
    head = header(problem, plan, "TensorRT-LLM", version_text("trtllm"), s, notes)
    head.append(f"replicas: {s.dp}")
    if fmt == "config":
        head.append(f"use: trtllm-serve {model or 'MODEL'} --extra_llm_api_options THIS_FILE (PyTorch backend)")
        return render_yaml(config, head), notes
    argv: list[str] = []
    for flag, value in flags:
        argv += [flag] if value is True else [flag, str(value)]
    argv += ["--extra_llm_api_options", CONFIG_FILE]
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    before = [f"cat > {CONFIG_FILE} <<'YAML'", body.rstrip("\n"), "YAML"]
    return render_command(PROGRAM, model, argv, head, before=before), notes


def heredoc_config(text: str) -> dict:
    """The LLM API YAML a TensorRT-LLM command script writes."""
    start = text.find(f"cat > {CONFIG_FILE} <<'YAML'\n")
    if start < 0:
        raise ExportError("not a planner TensorRT-LLM export: no extra_llm_api_options heredoc")
    body = text[start:].split("\n", 1)[1]
    return yaml.safe_load(body[: body.index("\nYAML\n")])


__all__ = ["PROGRAM", "export_trtllm", "trtllm_settings", "heredoc_config"]
