"""Parse an exported configuration with the framework's own code (run in its own environment).

Usage (by tests/test_export_frameworks.py, with the interpreter of the framework's environment):
    python framework_check.py deepspeed CONFIG.json:DP [CONFIG.json:DP ...]
    python framework_check.py torchtitan JOB.toml:WORLD [JOB.toml:WORLD ...]     (torchtitan 0.2)
    python framework_check.py torchtitan03 FLAGS.txt:WORLD [FLAGS.txt:WORLD ...]  (torchtitan 0.3)
Prints a JSON list, one object per file: the values the framework read back, or its error.
Standard library and the framework only: this file does not import planner (the frameworks pin
other protobuf/torch versions than OR-Tools, so they live in separate environments).

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
                        ep=1, etp=1, world_size=world)
    return {
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
                        ep=1, world_size=world)
    ac = cfg.activation_checkpoint
    return {
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
