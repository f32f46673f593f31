"""Run a Megatron-LM checkout's own argument parser on an export (in an environment with torch).

Usage (by planner.export.megatron_check, with the interpreter of .venv-frameworks):
    python megatron_args.py check CHECKOUT WORLD MAJOR.MINOR [NAME=VALUE ...] -- ARG [ARG ...]
    python megatron_args.py table CHECKOUT
`check` runs megatron.training.arguments.parse_args and validate_args with WORLD_SIZE=WORLD and
the launch environment NAME=VALUE (an empty VALUE unsets NAME), then builds the TransformerConfig
from the arguments, and prints one JSON object: the values Megatron read back, or its complaint.
`table` prints every option string the parser defines (with its choices and whether it takes a
value), the data behind planner/export/megatron_arguments.json.

Standard library, torch and the checkout only; this file does not import planner. Three things
are not Megatron's: (1) megatron/training/__init__.py imports the whole training loop (data,
tokenizers, checkpointing), so the package is registered without running it and only
arguments.py and what it imports are loaded; (2) a CPU torch has no GPU, so the capability
queries validate_args makes (torch.cuda.get_device_capability / get_device_properties) are
answered with the compute capability of the planned device; (3) Transformer Engine (CUDA only)
is not installed, so Megatron's TE version queries (megatron.core.utils.get_te_version, which
the MoE, fp8 and delay_wgrad_compute checks compare against) are answered with TE_VERSION, a
version every rule the exports meet asks for at most. The TransformerConfig is built with rope
fusion off (a Transformer Engine kernel, which needs CUDA).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import types

TE_VERSION = "2.10.0"
"""Transformer Engine version the checks assume (delay_wgrad_compute with overlap_grad_reduce needs
>= 2.8, MoE fp8 grouped GEMMs >= 1.11)."""


def _load_arguments(checkout: str, capability: tuple[int, int]):
    sys.path.insert(0, checkout)
    import torch

    torch.cuda.get_device_capability = lambda *a, **k: capability
    torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(
        major=capability[0], minor=capability[1], name=f"sm_{capability[0]}{capability[1]}",
        total_memory=80 * 2**30, multi_processor_count=132)

    package = types.ModuleType("megatron.training")
    package.__path__ = [os.path.join(checkout, "megatron", "training")]

    def unavailable(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            raise RuntimeError(f"megatron.training.{name} is not loaded while checking arguments")

        return call

    package.__getattr__ = unavailable
    sys.modules["megatron.training"] = package
    import megatron.core.utils as core_utils
    import megatron.training.arguments as arguments
    from packaging.version import Version

    core_utils._te_version = Version(TE_VERSION)  # get_te_version() answers the cached version
    return arguments


def _jsonable(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def check(checkout: str, world: int, capability: tuple[int, int], env: dict[str, str], argv: list[str]) -> dict:
    for name, value in env.items():
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    os.environ.update(WORLD_SIZE=str(world), RANK="0", LOCAL_RANK="0")
    with contextlib.redirect_stdout(sys.stderr):
        arguments = _load_arguments(checkout, capability)
    sys.argv = ["pretrain_gpt.py", *argv]
    stage = "parse_args"
    try:
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(sys.stderr):
            try:
                args = arguments.parse_args()
            except SystemExit:
                lines = [line for line in errors.getvalue().splitlines() if "error:" in line]
                return {"stage": stage, "error": lines[-1].split("error:", 1)[1].strip() if lines else "exit"}
        sys.stderr.write(errors.getvalue())
        with contextlib.redirect_stdout(sys.stderr):
            stage = "validate_args"
            arguments.validate_args(args, {})
            stage = "TransformerConfig"
            args.apply_rope_fusion = False  # a Transformer Engine kernel; this CPU environment has none
            config = arguments.core_transformer_config_from_args(args)
    except Exception as exc:  # report Megatron's own complaint, whatever its type
        return {"stage": stage, "error": f"{type(exc).__name__}: {exc}"}
    names = ["world_size", "tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
             "data_parallel_size", "virtual_pipeline_model_parallel_size", "sequence_parallel", "tp_comm_overlap",
             "micro_batch_size", "global_batch_size", "seq_length", "num_layers", "use_distributed_optimizer",
             "use_megatron_fsdp", "data_parallel_sharding_strategy", "num_distributed_optimizer_instances",
             "ckpt_format", "recompute_granularity", "recompute_method", "recompute_num_layers", "recompute_modules",
             "bf16", "fp16", "fp8", "fp8_recipe", "overlap_grad_reduce", "overlap_param_gather",
             "pipeline_model_parallel_layout", "decoder_first_pipeline_num_layers",
             "decoder_last_pipeline_num_layers", "expert_model_parallel_size", "expert_tensor_parallel_size",
             "num_experts", "moe_ffn_hidden_size", "moe_router_topk", "moe_token_dispatcher_type",
             "moe_flex_dispatcher_backend", "moe_grouped_gemm", "overlap_moe_expert_parallel_comm",
             "delay_wgrad_compute", "moe_expert_capacity_factor", "moe_router_load_balancing_type",
             "moe_router_enable_expert_bias", "moe_shared_expert_intermediate_size", "multi_latent_attention",
             "mtp_num_layers"]
    values = {name: _jsonable(getattr(args, name, None)) for name in names}
    values["layers_per_chunk"] = _jsonable(getattr(config, "pipeline_model_parallel_layout", None))
    if config.num_moe_experts:
        # which layers are MoE, as Megatron's layer specs read moe_layer_freq (gpt_layer_specs.py)
        freq = config.moe_layer_freq
        values["moe_layer_pattern"] = (list(freq) if isinstance(freq, list)
                                       else [int(i % freq == 0) for i in range(config.num_layers)])
        values["config_class"] = type(config).__name__
    return {"args": values}


def table(checkout: str) -> dict:
    arguments = _load_arguments(checkout, (9, 0))
    parser = arguments.add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False))
    options = {}
    for action in parser._actions:
        for option in action.option_strings:
            options[option] = {
                "dest": action.dest,
                "takes_value": action.nargs != 0,
                "nargs": action.nargs if isinstance(action.nargs, (int, str)) else None,
                "choices": [_jsonable(c) for c in action.choices] if action.choices else None,
                "type": getattr(action.type, "__name__", None) if action.type in (int, float, str) else None,
            }
    return dict(sorted(options.items()))


def main() -> int:
    mode = sys.argv[1]
    if mode == "table":
        print(json.dumps(table(sys.argv[2]), indent=1, sort_keys=True))
        return 0
    checkout, world, capability = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rest = sys.argv[5:]
    split = rest.index("--")
    env = dict(item.split("=", 1) for item in rest[:split])
    major, minor = (int(x) for x in capability.split("."))
    result = check(checkout, world, (major, minor), env, rest[split + 1 :])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
