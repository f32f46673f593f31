"""Parse an exported configuration with the framework's own code (run in its own environment).

Usage (by tests/test_export_frameworks.py, with the interpreter of .venv-frameworks):
    python framework_check.py deepspeed CONFIG.json:DP [CONFIG.json:DP ...]
    python framework_check.py torchtitan JOB.toml:WORLD [JOB.toml:WORLD ...]
Prints a JSON list, one object per file: the values the framework read back, or its error. Standard library and the
framework only: this file does not import planner (the frameworks pin other protobuf/torch
versions than OR-Tools, so they live in a separate environment).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys


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
    }


def check_torchtitan(path: str, world: int) -> dict:
    from torchtitan.config import ConfigManager
    from torchtitan.distributed.parallel_dims import ParallelDims

    job = ConfigManager().parse_args(["--job.config_file", path])
    p = job.parallelism
    dims = ParallelDims(
        dp_replicate=p.data_parallel_replicate_degree,
        dp_shard=p.data_parallel_shard_degree,
        cp=p.context_parallel_degree,
        tp=p.tensor_parallel_degree,
        pp=p.pipeline_parallel_degree,
        ep=1,
        etp=1,
        world_size=world,
    )
    return {
        "dp_replicate": dims.dp_replicate,
        "dp_shard": dims.dp_shard,
        "cp": dims.cp,
        "tp": dims.tp,
        "pp": dims.pp,
        "schedule": p.pipeline_parallel_schedule,
        "global_batch_size": job.training.global_batch_size,
        "local_batch_size": job.training.local_batch_size,
        "activation_checkpoint": job.activation_checkpoint.mode,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=["deepspeed", "torchtitan"])
    parser.add_argument("items", nargs="+", help="PATH:SIZE pairs (SIZE = DP for deepspeed, world for torchtitan)")
    args = parser.parse_args()
    results = []
    for item in args.items:
        path, _, size = item.rpartition(":")
        try:
            check = check_deepspeed if args.framework == "deepspeed" else check_torchtitan
            results.append(check(path, int(size)))
        except Exception as exc:  # report the framework's own complaint, whatever its type
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
