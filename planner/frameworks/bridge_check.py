"""Apply a Megatron-Bridge export with Bridge's own override and validation code (CPU, own env).

Usage (by tests/test_export_bridge.py, with the interpreter of .venv-bridge):
    python bridge_check.py JOBS.json
JOBS.json is a list of {"path": OVERRIDES.txt, "world": WORLD, "model": MODEL, "variant":
"recipe-overlap" | "recipe-plain"}; one JSON list of results is printed, each the values Bridge
ends with, or its complaint. Each job builds Bridge's pre-training ConfigContainer
(recipes.common._pretrain_common) with a GPTModelProvider of the model's shape (MODEL: its
keyword arguments; with "provider": "mla" an MLAModelProvider, Bridge's provider for DeepSeek's
multi-latent attention). The `recipe-overlap` variant sets comm_overlap =
CommOverlapConfig(tp_comm_overlap=True), as the Llama-3 70B recipe does; `recipe-plain` leaves
it None and drops the comm_overlap.* lines, as the export's header says. Then
process_config_with_overrides (Hydra) and runtime_config_update (mixed precision, comm overlap,
validate) run with WORLD_SIZE=WORLD.

Standard library and Bridge only; this file does not import planner. Not Bridge's: its package
__init__ files import the Hugging Face conversion and PEFT layers, which need Transformer Engine
(CUDA only), so megatron.bridge packages are registered without running their __init__ (the
three names the config modules import from megatron.bridge.models are resolved from their own
modules), and recipes.common's `LoRA` import (used only by PEFT recipes) gets a placeholder.
Transformer Engine's version, which Megatron-Core and Bridge compare against (MoE fp8,
delay_wgrad_compute), is answered with TE_VERSION (megatron.core.utils caches it), and a CPU
torch's device queries with an H100's (the flex dispatcher's backend check asks for it).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import types

_LOADED: tuple | None = None
TE_VERSION = "2.10.0"
"""Transformer Engine version the checks assume (delay_wgrad_compute with overlap_grad_reduce needs >= 2.7)."""
_EXPORTS = {"megatron.bridge.models": {"GPTModelProvider": "gpt_provider", "T5ModelProvider": "t5_provider",
                                       "MambaModelProvider": "mamba.mamba_provider"}}


class _PackagesWithoutInit(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root: str):
        self.root = root

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("megatron.bridge"):
            return None
        folder = os.path.join(self.root, *fullname.split(".")[2:])
        if not os.path.isdir(folder):
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        spec.submodule_search_locations = [folder]
        return spec

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = spec.submodule_search_locations
        exports = _EXPORTS.get(spec.name, {})

        def attribute(name: str):
            if name in exports:
                return getattr(importlib.import_module(f"{spec.name}.{exports[name]}"), name)
            raise AttributeError(name)

        module.__getattr__ = attribute
        return module

    def exec_module(self, module):
        pass


def _load():
    import megatron.core.utils as core_utils
    import torch
    from packaging.version import Version

    core_utils._te_version = Version(TE_VERSION)  # get_te_version() answers the cached version
    torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(
        major=9, minor=0, name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30, multi_processor_count=132)
    root = importlib.util.find_spec("megatron.bridge").submodule_search_locations[0]
    sys.meta_path.insert(0, _PackagesWithoutInit(root))
    lora = types.ModuleType("megatron.bridge.peft.lora")
    lora.LoRA = type("LoRA", (), {"__doc__": "placeholder: PEFT is not loaded while checking overrides"})
    sys.modules["megatron.bridge.peft.lora"] = lora
    from megatron.bridge.models.gpt_provider import GPTModelProvider
    from megatron.bridge.models.mla_provider import MLAModelProvider
    from megatron.bridge.recipes.common import _pretrain_common
    from megatron.bridge.training.comm_overlap import CommOverlapConfig
    from megatron.bridge.training.config import runtime_config_update
    from megatron.bridge.training.utils.omegaconf_utils import process_config_with_overrides

    providers = {"gpt": GPTModelProvider, "mla": MLAModelProvider}
    return providers, _pretrain_common, CommOverlapConfig, runtime_config_update, process_config_with_overrides


def check(path: str, world: int, model: dict, variant: str) -> dict:
    providers, pretrain_common, comm_overlap, runtime_config_update, apply = _LOADED or _load()
    with open(path) as f:
        overrides = [line.strip().rstrip("\\").strip().strip('"') for line in f
                     if "=" in line and not line.startswith("#")]
    if variant == "recipe-plain":
        overrides = [o for o in overrides if not o.startswith("comm_overlap.")]
    cfg = pretrain_common()
    model = dict(model)
    cfg.model = providers[model.pop("provider", "gpt")](**model)
    if variant == "recipe-overlap":
        cfg.comm_overlap = comm_overlap(tp_comm_overlap=True)
    stage = "overrides"
    try:
        apply(cfg, cli_overrides=overrides)
        requested_tp_overlap = cfg.comm_overlap.tp_comm_overlap if cfg.comm_overlap else cfg.model.tp_comm_overlap
        stage = "runtime_config_update"
        os.environ.update(WORLD_SIZE=str(world), RANK="0", LOCAL_RANK="0")
        runtime_config_update(cfg)
    except Exception as exc:  # report Bridge's own complaint, whatever its type
        return {"stage": stage, "error": f"{type(exc).__name__}: {exc}"}
    m, ddp = cfg.model, cfg.ddp
    layout = m.pipeline_model_parallel_layout
    return {
        "tp": m.tensor_model_parallel_size, "pp": m.pipeline_model_parallel_size,
        "vpp": m.virtual_pipeline_model_parallel_size, "cp": m.context_parallel_size, "dp": cfg.data_parallel_size,
        "sequence_parallel": m.sequence_parallel, "tp_comm_overlap_requested": requested_tp_overlap,
        "seq_length": m.seq_length, "dataset_seq_length": cfg.dataset.sequence_length,
        "micro_batch_size": cfg.train.micro_batch_size, "global_batch_size": cfg.train.global_batch_size,
        "use_distributed_optimizer": ddp.use_distributed_optimizer,
        "optimizer_distributed": cfg.optimizer.use_distributed_optimizer, "use_megatron_fsdp": ddp.use_megatron_fsdp,
        "data_parallel_sharding_strategy": ddp.data_parallel_sharding_strategy,
        "num_distributed_optimizer_instances": ddp.num_distributed_optimizer_instances,
        "ckpt_format": cfg.checkpoint.ckpt_format, "overlap_grad_reduce": ddp.overlap_grad_reduce,
        "overlap_param_gather": ddp.overlap_param_gather, "recompute_granularity": m.recompute_granularity,
        "recompute_method": m.recompute_method, "recompute_num_layers": m.recompute_num_layers,
        "bf16": m.bf16, "fp16": m.fp16, "fp8": m.fp8, "fp8_recipe": m.fp8_recipe,
        "layout": None if layout is None else str(layout),
        "ep": m.expert_model_parallel_size, "etp": m.expert_tensor_parallel_size,
        "num_moe_experts": m.num_moe_experts, "moe_ffn_hidden_size": m.moe_ffn_hidden_size,
        "moe_router_topk": m.moe_router_topk, "moe_layer_freq": m.moe_layer_freq,
        "moe_token_dispatcher_type": m.moe_token_dispatcher_type, "moe_grouped_gemm": m.moe_grouped_gemm,
        "moe_shared_expert_overlap": m.moe_shared_expert_overlap,
        "overlap_moe_expert_parallel_comm": m.overlap_moe_expert_parallel_comm,
        "delay_wgrad_compute": m.delay_wgrad_compute, "moe_expert_capacity_factor": m.moe_expert_capacity_factor,
        "mtp_num_layers": m.mtp_num_layers, "multi_latent_attention": getattr(m, "multi_latent_attention", False),
        "window_size": None if m.window_size is None else [int(x) for x in m.window_size],
        "window_attn_skip_freq": m.window_attn_skip_freq,
        "activation_func_clamp_value": m.activation_func_clamp_value,
    }


def main() -> int:
    global _LOADED
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    with contextlib.redirect_stdout(sys.stderr):
        _LOADED = _load()
        results = [check(job["path"], job["world"], job["model"], job["variant"]) for job in jobs]
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
