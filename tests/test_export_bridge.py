"""Megatron-Bridge exports applied by Bridge 0.3.1's own override code (Hydra, as its recipe
scripts do) to its pre-training ConfigContainer, then its runtime_config_update (mixed
precision, communication overlap, validation): the degrees, batch, sequence length, ZeRO,
recompute and precision Bridge ends with equal the plan's, for a recipe with a comm_overlap
config and for one without (see planner/frameworks/bridge_check.py for what is not Bridge's).

Needs .venv-bridge (built by .ci/run; or PLANNER_BRIDGE_PYTHON); without it these tests skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from planner.export import ExportError, export

from .conftest import ROOT
from .test_export_frameworks import with_published
from .test_export_megatron import feature_cases

CHECK = ROOT / "planner" / "frameworks" / "bridge_check.py"
PYTHON = Path(os.environ.get("PLANNER_BRIDGE_PYTHON", ROOT / ".venv-bridge" / "bin" / "python"))
RECOMPUTE = {"none": None, "selective": "selective", "full": "full"}


def model_shape(problem) -> dict:
    """Provider keyword arguments of the model's shape (a recipe's model; MoE recipes set their experts)."""
    m = problem.model
    shape = {"num_layers": m.num_layers, "hidden_size": m.hidden_size, "num_attention_heads": m.num_heads,
             "ffn_hidden_size": m.ffn_hidden_size or 4 * m.hidden_size, "num_query_groups": m.kv_heads,
             "kv_channels": m.dim_per_head, "seq_length": 4096}
    if m.family == "moe":
        shape.update(num_moe_experts=m.moe.num_experts, moe_ffn_hidden_size=m.moe.ffn_hidden_size,
                     moe_router_topk=m.moe.top_k)
        if m.mla is not None:
            shape.update(provider="mla", multi_latent_attention=True, q_lora_rank=m.mla.q_lora_rank or None,
                         kv_lora_rank=m.mla.kv_lora_rank, qk_head_dim=m.mla.qk_nope_head_dim,
                         qk_pos_emb_head_dim=m.mla.qk_rope_head_dim, v_head_dim=m.mla.v_head_dim)
    return shape


def expected(problem, plan) -> dict:
    task = problem.task
    grad_overlap = task.framework.overlap_grad_reduce and plan.dp > 1
    return {
        "tp": plan.tp, "pp": plan.pp, "vpp": plan.virtual_stages if plan.virtual_stages > 1 else None, "cp": plan.cp,
        "dp": plan.dp, "sequence_parallel": plan.sp, "tp_comm_overlap_requested": plan.tp_comm_overlap,
        "seq_length": task.seq_len, "dataset_seq_length": task.seq_len, "micro_batch_size": plan.micro_batch_size,
        "global_batch_size": plan.sequences(task), "use_distributed_optimizer": plan.zero_stage == 1,
        "optimizer_distributed": plan.zero_stage == 1, "use_megatron_fsdp": plan.zero_stage >= 2,
        "data_parallel_sharding_strategy": {0: "no_shard", 1: "no_shard", 2: "optim_grads",
                                            3: "optim_grads_params"}[plan.zero_stage],
        "num_distributed_optimizer_instances": plan.dp // plan.shard_size if plan.zero_stage else 1,
        "ckpt_format": "fsdp_dtensor" if plan.zero_stage >= 2 else "torch_dist",
        "overlap_grad_reduce": grad_overlap,
        "overlap_param_gather": bool(grad_overlap and task.framework.overlap_param_gather and plan.zero_stage),
        "recompute_granularity": RECOMPUTE[plan.recompute], "bf16": task.precision != "fp16",
        "fp16": task.precision == "fp16", "fp8": "hybrid" if task.precision == "fp8" else None,
        "ep": plan.ep, "etp": plan.etp if problem.model.family == "moe" else plan.tp,
        "overlap_moe_expert_parallel_comm": plan.ep_comm_overlap, "delay_wgrad_compute": plan.ep_comm_overlap,
        "window_size": None if problem.model.sliding_window is None else [problem.model.sliding_window - 1, 0],
        "window_attn_skip_freq": problem.model.full_attention_every,
        "activation_func_clamp_value": getattr(getattr(problem.model, "moe", None), "activation_clamp", None),
    }


def bridge_installed() -> bool:
    """Bridge's package __init__ needs Transformer Engine (CUDA): look for the package, do not import it."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('megatron.bridge') is None)"
    return PYTHON.exists() and subprocess.run([str(PYTHON), "-c", probe], capture_output=True).returncode == 0


@pytest.mark.skipif(not bridge_installed(), reason=f"Megatron-Bridge environment not installed ({PYTHON})")
def test_bridge_applies_every_export(solved, tmp_path):
    jobs, wants = [], []
    for name, (problem, plan) in {**with_published(solved), **feature_cases()}.items():
        try:
            text = export(problem, plan, "megatron-bridge").text
        except ExportError as exc:
            pytest.fail(f"{name}: {exc}")
        path = tmp_path / f"{name}.txt"
        path.write_text(text)
        for variant in ("recipe-overlap", "recipe-plain"):
            jobs.append({"path": str(path), "world": problem.cluster.num_devices, "model": model_shape(problem),
                         "variant": variant})
            wants.append((name, problem, plan))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    out = subprocess.run([str(PYTHON), str(CHECK), str(tmp_path / "jobs.json")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for result, (name, problem, plan) in zip(json.loads(out.stdout.strip().splitlines()[-1]), wants, strict=True):
        assert "error" not in result, (name, result)
        got = {k: result[k] for k in expected(problem, plan)}
        assert got == expected(problem, plan), name
        if problem.task.precision == "fp8":
            assert result["fp8_recipe"] == "tensorwise"
        layers = plan.layers_per_stage(problem.model.num_layers)
        # a layout for uneven stages; MoE recipes always carry one with a pipeline (planner.export.bridge)
        uneven = len(set(layers)) > 1 or problem.model.family == "moe"
        assert (result["layout"] is not None) == (plan.pp > 1 and uneven), name
