"""A serving plan as `python -m sglang.launch_server` arguments (SGLang 0.5.23), as a command or a
`--config` YAML.

What maps to what (flags from SGLang 0.5.23's own parser, planner/export/sglang_v0.5.23_arguments.json):
  plan tp, pp                 --tp-size, --pp-size
  plan dp                     --dp-size (SGLang's data-parallel controller: dp schedulers of tp x pp
                              GPUs behind one server); with dp_attention: dp separate servers
  plan ep > 1                 --ep-size: SGLang deals the experts over one server's TP group, so
                              only ep = tp is expressible (ExportError otherwise)
  plan dp_attention           --attn-dp-size tp (0.5.23's spelling; --enable-dp-attention is deprecated)
  plan max_num_seqs           --max-running-requests (per replica)
  max_num_batched_tokens      --chunked-prefill-size and --max-prefill-tokens, with --enable-mixed-chunk
                              (decode tokens ride in the prefill chunk's pass, as the cost model prices
                              continuous batching; SGLang's default runs them in separate passes)
  weight_precision            bf16/fp16: --dtype; fp8: --quantization fp8; fp4: --quantization modelopt_fp4
                              (an NVFP4 checkpoint made by ModelOpt)
  kv_cache_dtype              --kv-cache-dtype bf16 | fp8_e4m3; fp16 only as "auto" with fp16 weights
                              (0.5.23 has no float16 choice): otherwise an ExportError
  requests (longest)          --context-length
  engine.kv_block_tokens      --page-size
  engine.two_batch_overlap    --enable-two-batch-overlap would express it, but it is priced with
                              ep > tp only, which --ep-size cannot express: such plans are refused
  engine.gpu_memory_utilization  --mem-fraction-static = (weights + the plan's KV pool) / HBM of the
                              tightest stage: SGLang's fraction excludes activations, which the planner's
                              utilization includes, so the value is computed to give the same KV pool
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

VERSION = "0.5.23"
PROGRAM = ["python", "-m", "sglang.launch_server"]
DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16", "fp4": "bfloat16"}
QUANTIZATION = {"fp8": "fp8", "fp4": "modelopt_fp4"}
KV_DTYPE = {"bf16": "bf16", "fp16": "float16", "fp8": "fp8_e4m3"}


def _choice(flag: str, value: str, what: str) -> str:
    choices = table("sglang")["options"][flag]["choices"]
    if choices is not None and value not in choices:
        raise ExportError(f"{what}: SGLang {version_text('sglang')} has no {flag} {value} (it takes "
                          f"{', '.join(choices)})")
    return value


def sglang_settings(s: ServingSettings) -> tuple[list[tuple[str, object]], list[str], int]:
    """([(flag, value or True)], notes, servers to launch)."""
    check_degrees(s)
    notes = list(s.notes)
    servers = 1
    flags: list[tuple[str, object]] = [("--tp-size", s.tp), ("--pp-size", s.pp)]
    if s.dp_attention:
        flags.append(("--attn-dp-size", s.tp))
        if s.dp > 1:
            servers = s.dp
            notes.append(f"NOTE: dp {s.dp} with dp_attention: launch {s.dp} servers of tp x pp = {s.tp * s.pp} GPUs "
                         "each (CUDA_VISIBLE_DEVICES and --port apart) behind a router; --dp-size is not used")
    elif s.dp > 1:
        flags.append(("--dp-size", s.dp))
        notes.append(f"NOTE: --dp-size {s.dp}: one server balances requests over {s.dp} schedulers of tp x pp = "
                     f"{s.tp * s.pp} GPUs; --max-running-requests is per scheduler")
    if s.ep > 1:
        if s.ep != s.tp:
            raise ExportError(f"ep {s.ep}: SGLang deals the experts over one server's TP group (--ep-size at most "
                              f"--tp-size {s.tp}); re-plan with ep = tp, or export to vllm (ep = tp x dp)")
        flags.append(("--ep-size", s.ep))
    flags += [("--max-running-requests", s.max_num_seqs), ("--chunked-prefill-size", s.max_num_batched_tokens),
              ("--max-prefill-tokens", s.max_num_batched_tokens), ("--enable-mixed-chunk", True)]
    flags.append(("--dtype", _choice("--dtype", DTYPE[s.weight_precision], "inference.weight_precision")))
    if s.weight_precision in QUANTIZATION:
        flags.append(("--quantization", _choice("--quantization", QUANTIZATION[s.weight_precision],
                                                 "inference.weight_precision")))
        if s.weight_precision == "fp4":
            notes.append("NOTE: --quantization modelopt_fp4 serves an NVFP4 checkpoint made by NVIDIA ModelOpt; "
                         "point the model at one")
    kv = KV_DTYPE[s.kv_cache_dtype]
    if s.kv_cache_dtype == "fp16":
        if s.weight_precision != "fp16":
            raise ExportError(f"inference.kv_cache_dtype: SGLang {version_text('sglang')} has no float16 KV cache "
                              f"beside {s.weight_precision} weights (--kv-cache-dtype takes "
                              f"{', '.join(table('sglang')['options']['--kv-cache-dtype']['choices'])}; auto follows "
                              "the model's fp16 dtype only with fp16 weights); use bf16 or fp8")
        kv = "auto"
    flags.append(("--kv-cache-dtype", _choice("--kv-cache-dtype", kv, "inference.kv_cache_dtype")))
    flags += [("--context-length", s.max_model_len), ("--page-size", s.block_tokens),
              ("--mem-fraction-static", s.kv_pool_fraction_of_total)]
    notes.append(f"NOTE: --mem-fraction-static {s.kv_pool_fraction_of_total} is (weights + the KV pool) / GPU memory "
                 f"as planned: inference.engine.gpu_memory_utilization {s.gpu_memory_utilization} less the "
                 "activations and overhead the planner counts inside it")
    server_gpus = s.tp * s.pp * (1 if s.dp_attention else s.dp)
    notes += span_note(s, server_gpus, "SGLang: --nnodes, --node-rank and --dist-init-addr on every host")
    return flags, notes + common_notes(s, "sglang"), servers


def export_sglang(problem, plan, fmt: str = "command", model: str | None = None) -> tuple[str, list[str]]:
    """(the export text, its notes)."""
    s = settings(problem, plan)
    flags, notes, servers = sglang_settings(s)
    head = header(problem, plan, "SGLang", version_text("sglang"), s, notes)
    head.append(f"servers: {servers}")
    if fmt == "config":
        config: dict[str, object] = {}
        if model:
            config["model-path"] = model
        else:
            head.append("the model is not in this file: python -m sglang.launch_server --model-path MODEL "
                        "--config THIS_FILE")
        for flag, value in flags:
            config[flag[2:]] = value
        return render_yaml(config, head), notes
    argv: list[str] = []
    for flag, value in flags:
        argv += [flag] if value is True else [flag, str(value)]
    return render_command([*PROGRAM, "--model-path"], model, argv, head), notes


__all__ = ["VERSION", "PROGRAM", "export_sglang", "sglang_settings"]
