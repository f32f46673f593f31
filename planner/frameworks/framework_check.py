"""Parse an exported configuration with the framework's own code (run in its own environment).

Usage (by tests/test_export_frameworks.py, with the interpreter of the framework's environment):
    python framework_check.py deepspeed CONFIG.json:DP [CONFIG.json:DP ...]
    python framework_check.py torchtitan JOB.toml:WORLD [JOB.toml:WORLD ...]     (torchtitan 0.2)
    python framework_check.py torchtitan03 FLAGS.txt:WORLD [FLAGS.txt:WORLD ...]  (torchtitan 0.3)
Prints a JSON list, one object per file: the values the framework read back, or its error.
Standard library and the framework only: this file does not import planner (the frameworks pin
other protobuf/torch versions than OR-Tools, so they live in separate environments).

torchtitan with expert parallelism: its rule for the expert grid (EP borrows ranks from
dp_shard x CP x TP) is enforced where it builds the device meshes (ParallelDims.build_mesh), so
with EP > 1 the check builds them, in a single-process "fake" process group of the export's
world size (torch.testing's FakeStore; no communication). The model flavor an MoE export names is
built on the meta device (no memory; with the standard all-to-all backend, as DeepEP is CUDA-only)
and its layers, width, experts, top-k and MoE layers are read back.

DeepSpeed: deepspeed.init_distributed on a CPU build JIT-compiles a shared-memory all-reduce op
(deepspeed_shm_comm) into the torch extensions cache under a lock file; a run killed mid-build
leaves the lock and every later run waits on it. A one-process config check never reduces, so
the build is skipped (deepspeed.comm.torch.build_shm_op answers None, as it does where the op is
incompatible), and any other extension would go to this run's own TORCH_EXTENSIONS_DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import importlib
import json
import os
import shlex
import socket
import sys
import tempfile


_console = io.StringIO()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _DataParallelOnly:
    """The `mpu` DeepSpeedConfig asks for the data-parallel world size."""

    def __init__(self, dp: int):
        self.dp = dp

    def get_data_parallel_world_size(self) -> int:
        return self.dp

    def get_data_parallel_rank(self) -> int:
        return 0

    def get_model_parallel_world_size(self) -> int:
        return 1

    def get_model_parallel_rank(self) -> int:
        return 0


def check_deepspeed(path: str, dp: int) -> dict:
    import deepspeed
    import deepspeed.comm as dist
    from deepspeed.runtime.config import DeepSpeedConfig

    # A single-process gloo group through deepspeed.comm (DeepSpeedConfig asks deepspeed.comm for
    # the rank; uninitialised, it silently assumes a world of 1). The data-parallel size comes
    # from the `mpu` object, as it does under Megatron-DeepSpeed.
    if not dist.is_initialized():
        # (deepspeed.comm's attribute `torch` is torch itself: patch the module by its name)
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0",
                          WORLD_SIZE="1")
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
    with open(path) as f:
        config = json.load(f)
    config.pop("_comment", None)
    ds = DeepSpeedConfig(config, mpu=_DataParallelOnly(dp))
    return {
        "world_size": ds.world_size,
        "train_batch_size": ds.train_batch_size,
        "train_micro_batch_size_per_gpu": ds.train_micro_batch_size_per_gpu,
        "gradient_accumulation_steps": ds.gradient_accumulation_steps,
        "zero_stage": ds.zero_optimization_stage,
        "hpz_partition_size": ds.zero_config.zero_hpz_partition_size,
        "bf16": ds.bfloat16_config.enabled,
        "fp16": ds.float16_config.enabled,
    }


def _build_mesh(dims, world: int) -> None:
    """ParallelDims.build_mesh in a fake process group of `world` ranks (raises what torchtitan raises)."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())
    try:
        dims.build_mesh()
    finally:
        dist.destroy_process_group()


def _titan02_model(job) -> dict:
    """torchtitan 0.2: the named flavor built on the meta device."""
    import copy

    import torch
    from torchtitan.protocols.train_spec import get_train_spec

    spec = get_train_spec(job.model.name)
    args = copy.deepcopy(spec.model_args[job.model.flavor])
    job = copy.deepcopy(job)
    job.parallelism.expert_parallel_comm_backend = "standard"  # DeepEP is CUDA-only; the shape does not depend on it
    args.update_from_config(job)
    with contextlib.redirect_stdout(_console), contextlib.redirect_stderr(_console), torch.device("meta"):
        model = spec.model_cls(args)
    layers = list(model.layers.values())
    pattern = [int(bool(getattr(layer, "moe_enabled", False))) for layer in layers]
    moe = next((layer.moe for layer, on in zip(layers, pattern) if on), None)
    return {"name": job.model.name, "flavor": job.model.flavor, "layers": len(layers), "dim": model.tok_embeddings.embedding_dim,
            "moe_layers": pattern, "num_experts": moe.experts.num_experts if moe else None,
            "top_k": moe.router.top_k if moe else None}


def _titan03_model(cfg) -> dict:
    """torchtitan 0.3: the config's model spec."""
    spec = cfg.model_spec
    layers = spec.model.layers
    pattern = [int(getattr(layer, "moe", None) is not None) for layer in layers]
    moe = next((layer.moe for layer, on in zip(layers, pattern) if on), None)
    return {"name": spec.name, "flavor": spec.flavor, "layers": len(layers), "dim": spec.model.dim,
            "moe_layers": pattern, "num_experts": moe.num_experts if moe else None,
            "top_k": moe.router.top_k if moe else None}


def check_torchtitan(path: str, world: int) -> dict:
    """torchtitan 0.2: ConfigManager, ParallelDims, the converter registry and the async-TP rule."""
    import torchtitan.components.quantization  # noqa: F401  (registers the converters)
    from torchtitan.config import ConfigManager
    from torchtitan.distributed.parallel_dims import ParallelDims
    from torchtitan.distributed.tensor_parallel import maybe_enable_async_tp
    from torchtitan.protocols.model_converter import _registry_model_converter_cls

    job = ConfigManager().parse_args(["--job.config_file", path])
    unknown = [name for name in job.model.converters if name not in _registry_model_converter_cls]
    if unknown:
        raise KeyError(f"model converters {unknown} are not registered ({sorted(_registry_model_converter_cls)})")
    p = job.parallelism
    if p.tensor_parallel_degree > 1:
        maybe_enable_async_tp(job, None)  # raises without torch.compile of the model
    dims = ParallelDims(dp_replicate=p.data_parallel_replicate_degree, dp_shard=p.data_parallel_shard_degree,
                        cp=p.context_parallel_degree, tp=p.tensor_parallel_degree, pp=p.pipeline_parallel_degree,
                        ep=p.expert_parallel_degree, etp=p.expert_tensor_parallel_degree, world_size=world)
    if dims.ep > 1:
        _build_mesh(dims, world)
    model = _titan02_model(job) if job.model.flavor != "debugmodel" else None
    return {
        "ep": dims.ep, "etp": dims.etp, "ep_comm_backend": p.expert_parallel_comm_backend, "model": model,
        "dp_replicate": dims.dp_replicate, "dp_shard": dims.dp_shard, "cp": dims.cp, "tp": dims.tp, "pp": dims.pp,
        "schedule": p.pipeline_parallel_schedule, "microbatch_size": p.pipeline_parallel_microbatch_size,
        "module_fqns_per_model_part": p.module_fqns_per_model_part,
        "global_batch_size": job.training.global_batch_size, "local_batch_size": job.training.local_batch_size,
        "seq_len": job.training.seq_len, "activation_checkpoint": job.activation_checkpoint.mode,
        "async_tp": p.enable_async_tensor_parallel, "compile": job.compile.enable,
        "converters": job.model.converters, "float8_recipe": job.quantize.linear.float8.recipe_name,
    }


def check_torchtitan03(path: str, world: int) -> dict:
    """torchtitan 0.3: ConfigManager on the flags (llama3_debugmodel when they name no config)."""
    from torchtitan.config import ConfigManager
    from torchtitan.distributed.parallel_dims import ParallelDims

    with open(path) as f:
        args = shlex.split(" ".join(line.rstrip().rstrip("\\") for line in f if not line.startswith("#")))
    if "--module" not in args:
        args = ["--module", "llama3", "--config", "llama3_debugmodel", *args]
    _console.seek(0)
    _console.truncate()
    with contextlib.redirect_stdout(_console), contextlib.redirect_stderr(_console):
        cfg = ConfigManager().parse_args(args)
    p = cfg.parallelism
    dims = ParallelDims(dp_replicate=p.data_parallel_replicate_degree, dp_shard=p.data_parallel_shard_degree,
                        cp=p.context_parallel_degree, tp=p.tensor_parallel_degree, pp=p.pipeline_parallel_degree,
                        ep=p.expert_parallel_degree, world_size=world)
    if dims.ep > 1:
        _build_mesh(dims, world)
    ac = cfg.activation_checkpoint
    return {
        "ep": dims.ep, "model": _titan03_model(cfg) if cfg.model_spec.flavor != "debugmodel" else None,
        "dp_replicate": dims.dp_replicate, "dp_shard": dims.dp_shard, "cp": dims.cp, "tp": dims.tp, "pp": dims.pp,
        "schedule": p.pipeline_parallel_schedule, "microbatch_size": p.pipeline_parallel_microbatch_size,
        "module_fqns_per_model_part": p.module_fqns_per_model_part,
        "global_batch_size": cfg.training.global_batch_size, "local_batch_size": cfg.training.local_batch_size,
        "seq_len": cfg.training.seq_len,
        "activation_checkpoint": "none" if ac is None else type(ac).__qualname__.split(".")[0],
        "async_tp": cfg.compile.enable_async_tensor_parallel, "compile": cfg.compile.enable,
    }


CHECKS = {"deepspeed": check_deepspeed, "torchtitan": check_torchtitan, "torchtitan03": check_torchtitan03}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=sorted(CHECKS))
    parser.add_argument("items", nargs="+", help="PATH:SIZE pairs (SIZE = DP for deepspeed, world for torchtitan)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="planner-torch-extensions-") as extensions:
        os.environ["TORCH_EXTENSIONS_DIR"] = extensions
        for item in args.items:
            path, _, size = item.rpartition(":")
            try:
                results.append(CHECKS[args.framework](path, int(size)))
            except Exception as exc:  # report the framework's own complaint, whatever its type
                results.append({"error": f"{type(exc).__name__}: {exc}"})
            except SystemExit:  # tyro (torchtitan 0.3) reports a bad flag on the console and exits
                results.append({"error": f"SystemExit: {_console.getvalue()[:2000]}"})
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
