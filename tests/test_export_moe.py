"""Mixture-of-experts exports: Megatron-LM flags, Megatron-Bridge overrides, torchtitan expert
degrees and model flavors; DeepSpeed refuses them.

Cases: the two shipped MoE plans (DeepSeek-V3 on 1024 H100 as Bridge's 25.09 recipe runs it;
Qwen3-30B-A3B on 16 H100 as its 26.04.01 recipe does) and feature plans covering MLA, layer
patterns (leading dense layers, every second layer), shared experts, group-limited softmax and
sigmoid routers, expert biases, capacity factors, ETP = TP and ETP = 1, the all-gather
dispatcher, the EP overlap, MTP, CP, HSDP and edge-stage splits. Each export is read back by the
framework's own code where its environment is installed (as in tests/test_export_frameworks.py,
test_export_bridge.py and test_export_megatron.py; without it those tests skip and say why):
Megatron core_v0.16.1's option table always, and its parse_args / validate_args /
TransformerConfig with a checkout (PLANNER_MEGATRON_CHECKOUT); Bridge 0.3.1's overrides and
runtime_config_update; torchtitan 0.2.2's and 0.3.0's config parsers, expert device meshes (built
in a fake process group) and model flavors (built on the meta device).

Golden files are regenerated only with PLANNER_REGENERATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import get_args

import pytest
import tomllib

from planner.export import ExportError, export
from planner.export.megatron_check import check_megatron_export, check_megatron_table, parse_export
from planner.export.moe import layer_freq
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem, load_cluster, load_model, load_plan, load_problem
from planner.llm.task import Dispatcher, TrainingTask

from .conftest import PROBLEMS
from .test_export import FORMATS, GOLDEN, REGENERATE, render
from .test_export_bridge import CHECK as BRIDGE_CHECK
from .test_export_bridge import PYTHON as BRIDGE_PYTHON
from .test_export_bridge import bridge_installed, model_shape
from .test_export_bridge import expected as bridge_expected
from .test_export_frameworks import (
    PYTHON,
    PYTHON_TT03,
    available,
    expected_torchtitan,
    read_torchtitan,
    run_check,
)
from .test_export_megatron import CHECKOUT, _checkout_usable

MOE_PUBLISHED = [("deepseek-v3-1024xh100", "deepseek-v3-bridge"), ("qwen3-30b-a3b-16xh100", "qwen3-30b-a3b-bridge")]


def moe_problem(model: str, devices: int, gbs: int, precision: str = "bf16", seq: int = 4096, **moe) -> Problem:
    spec = load_model(model)
    if moe:
        spec = spec.model_copy(update={"moe": spec.moe.model_copy(update=moe)})
    task = TrainingTask(global_batch_size=gbs, seq_len=seq, precision=precision)
    return Problem(model=spec, cluster=load_cluster("dgx-h100", num_devices=devices), task=task)


def published() -> dict:
    return {plan: (load_problem(PROBLEMS / "tasks" / f"{task}.yaml"), load_plan(PROBLEMS / "plans" / f"{plan}.yaml"))
            for task, plan in MOE_PUBLISHED}


def feature_cases() -> dict:
    """MoE plans exercising each feature (bf16 unless the shipped task is fp8)."""
    cases = {
        "dsv3-edges-allgather-etp8": (moe_problem("deepseek-v3", 1024, 1024), Plan(
            tp=8, sp=True, pp=8, stage_layers=[7, 8, 8, 8, 8, 8, 8, 6], dp=16, ep=16, etp=8, dispatcher="allgather",
            zero_stage=1, recompute="full")),
        "llama4-every-second": (moe_problem("llama4-maverick", 64, 256), Plan(
            tp=4, sp=True, pp=2, dp=8, ep=8, zero_stage=1, recompute="selective")),
        "gpt-oss-bias": (moe_problem("gpt-oss-120b", 64, 256), Plan(pp=4, dp=16, ep=8, zero_stage=1)),
        "mixtral-capacity-overlap-etp2": (moe_problem("mixtral-8x7b", 16, 256, capacity_factor=1.25), Plan(
            tp=2, sp=True, pp=2, schedule="interleaved", virtual_stages=2, dp=4, ep=4, etp=2, ep_comm_overlap=True,
            zero_stage=1)),
        "qwen3-ddp-ep8": (moe_problem("qwen3-30b-a3b", 16, 1024), Plan(dp=16, ep=8)),
        "dsv2-cp-groups": (moe_problem("deepseek-v2", 128, 512), Plan(
            tp=4, sp=True, cp=2, pp=4, dp=4, ep=8, zero_stage=1)),
        "dsv3-flex-overlap": (moe_problem("deepseek-v3", 1024, 8192), load_plan(
            PROBLEMS / "plans" / "deepseek-v3-bridge.yaml").model_copy(update={"dispatcher": "flex"})),
        "qwen3-pp2-partial-recompute": (moe_problem("qwen3-30b-a3b", 16, 1024), Plan(
            pp=2, dp=8, ep=8, zero_stage=1, recompute="full", recompute_num_layers=[10, 4])),
    }
    return {f"moe-{k}": v for k, v in cases.items()}


def all_cases() -> dict:
    return {**published(), **feature_cases()}


def test_cases_are_valid_plans():
    for name, (problem, plan) in all_cases().items():
        assert check_plan(plan, problem) == [], name


@pytest.mark.parametrize(("task", "plan_name"), MOE_PUBLISHED)
@pytest.mark.parametrize(("target", "version"), FORMATS)
def test_golden(task, plan_name, target, version):
    problem = load_problem(PROBLEMS / "tasks" / f"{task}.yaml")
    plan = load_plan(PROBLEMS / "plans" / f"{plan_name}.yaml")
    text = render(problem, plan, target, version)
    path = GOLDEN / f"{plan_name}.{target}{'-' + version if version else ''}.txt"
    if REGENERATE:
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with PLANNER_REGENERATE_GOLDEN=1"
    assert text == path.read_text()


# -- --moe-layer-freq ------------------------------------------------------------------------

def megatron_pattern(freq: str, num_layers: int) -> list[int]:
    """How Megatron reads --moe-layer-freq (arguments.py moe_freq_type, gpt_layer_specs.py)."""
    if "[" not in freq:
        return [int(i % int(freq) == 0) for i in range(num_layers)]
    assert not re.search(r"[^,\d\[\]\(\)\+\*]", freq)  # the characters Megatron's _eval_pattern allows
    return eval(freq, {"__builtins__": {}})  # the planner's own output, checked above


@pytest.mark.parametrize(("pattern", "text"), [
    ([0] * 3 + [1] * 58, "([0]*3+[1]*58)"),  # DeepSeek-V3: three dense layers, then MoE
    ([1] * 48, "1"),
    ([1, 0] * 12, "2"),  # Megatron's int: layer i is MoE when i % N == 0
    ([0, 1] * 24, "([0]+[1])*24"),  # Llama 4 Maverick: every second layer, from the second
    ([0] + [1] * 59, "([0]+[1]*59)"),
    ([0, 0] + [0, 1] * 20, "([0]*2+([0]+[1])*20)"),
])
def test_layer_freq(pattern, text):
    assert layer_freq(pattern) == text
    assert megatron_pattern(text, len(pattern)) == pattern


def test_layer_freq_round_trips_any_pattern():
    import random

    rng = random.Random(8)
    for _ in range(300):
        n = rng.randint(1, 40)
        pattern = [rng.choice([0, 1]) for _ in range(n)]
        if rng.random() < 0.3:
            period = [rng.choice([0, 1]) for _ in range(rng.randint(1, 4))]
            pattern = pattern[: rng.randint(0, 4)] + period * rng.randint(2, 8)
        assert megatron_pattern(layer_freq(pattern), len(pattern)) == pattern, pattern


# -- Megatron-LM -----------------------------------------------------------------------------

def unrolled(layout: str) -> str:
    """A pipeline layout with its x*n repeats written out (as Megatron parses it)."""
    return re.sub(r"(.)\*(\d+)", lambda m: m[1] * int(m[2]), layout)


def megatron_flags(text: str) -> dict:
    argv, flags, i = parse_export(text)[0], {}, 0
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            flags[argv[i]] = argv[i + 1]
            i += 2
        else:
            flags[argv[i]] = True
            i += 1
    return flags


def test_megatron_deepseek_v3_flags():
    problem, plan = published()["deepseek-v3-bridge"]
    result = export(problem, plan, "megatron")
    f = megatron_flags(result.text)
    assert {k: f[k] for k in ("--num-experts", "--moe-ffn-hidden-size", "--moe-router-topk", "--moe-layer-freq",
                              "--moe-shared-expert-intermediate-size", "--moe-router-score-function",
                              "--moe-router-num-groups", "--moe-router-group-topk", "--moe-router-load-balancing-type",
                              "--mtp-num-layers", "--expert-model-parallel-size", "--expert-tensor-parallel-size",
                              "--moe-token-dispatcher-type", "--q-lora-rank", "--kv-lora-rank", "--qk-head-dim",
                              "--qk-pos-emb-head-dim", "--v-head-dim")} == {
        "--num-experts": "256", "--moe-ffn-hidden-size": "2048", "--moe-router-topk": "8",
        "--moe-layer-freq": "([0]*3+[1]*58)", "--moe-shared-expert-intermediate-size": "2048",
        "--moe-router-score-function": "sigmoid", "--moe-router-num-groups": "8", "--moe-router-group-topk": "4",
        "--moe-router-load-balancing-type": "none", "--mtp-num-layers": "1", "--expert-model-parallel-size": "64",
        "--expert-tensor-parallel-size": "1", "--moe-token-dispatcher-type": "flex", "--q-lora-rank": "1536",
        "--kv-lora-rank": "512", "--qk-head-dim": "128", "--qk-pos-emb-head-dim": "64", "--v-head-dim": "128"}
    for flag in ("--multi-latent-attention", "--moe-router-enable-expert-bias", "--moe-grouped-gemm",
                 "--overlap-moe-expert-parallel-comm", "--delay-wgrad-compute"):
        assert f[flag] is True, flag
    assert "--kv-channels" not in f and "--group-query-attention" not in f  # MLA: no GQA, own head widths
    assert "--moe-expert-capacity-factor" not in f  # dropless
    # the MTP module on the last stage, before the loss; the 7/8/6 stage split over 4 chunks each, the later
    # chunks the larger (as the cost model places the layers, and Bridge's "Et|(tt|)*30mL" starts)
    layout = unrolled(f["--pipeline-model-parallel-layout"])
    assert layout.startswith("Et|tt|") and layout.endswith("|ttmL") and len(layout.split("|")) == 32
    assert layout.count("t") == 61 and [len(c.strip("EmL")) for c in layout.split("|")][-8:] == [2] * 8
    assert "export CUDA_DEVICE_MAX_CONNECTIONS=32\n" in result.text  # DeepEP with the EP overlap (Bridge: 32)
    assert any("fp8 dispatch" in a for a in result.approximations)
    assert "ETP 1 x EP 64 x expert DP 2" in result.text


def test_megatron_features():
    cases = feature_cases()
    llama4 = megatron_flags(export(*cases["moe-llama4-every-second"], "megatron").text)
    assert llama4["--moe-layer-freq"] == "([0]+[1])*24" and llama4["--moe-router-topk"] == "1"
    assert llama4["--moe-router-load-balancing-type"] == "aux_loss" and "--moe-router-pre-softmax" not in llama4
    oss = megatron_flags(export(*cases["moe-gpt-oss-bias"], "megatron").text)
    assert "--disable-bias-linear" not in oss and oss["--moe-layer-freq"] == "1" and "--ffn-hidden-size" not in oss
    mixtral = export(*cases["moe-mixtral-capacity-overlap-etp2"], "megatron")
    f = megatron_flags(mixtral.text)
    assert f["--moe-expert-capacity-factor"] == "1.25" and f["--expert-tensor-parallel-size"] == "2"
    assert f["--overlap-moe-expert-parallel-comm"] is True and f["--num-layers-per-virtual-pipeline-stage"] == "8"
    dsv3 = megatron_flags(export(*cases["moe-dsv3-edges-allgather-etp8"], "megatron").text)
    assert dsv3["--moe-token-dispatcher-type"] == "allgather" and "--overlap-moe-expert-parallel-comm" not in dsv3
    assert (dsv3["--decoder-first-pipeline-num-layers"], dsv3["--decoder-last-pipeline-num-layers"]) == ("7", "6")
    dsv2 = megatron_flags(export(*cases["moe-dsv2-cp-groups"], "megatron").text)
    assert dsv2["--moe-router-score-function"] == "softmax" and dsv2["--moe-layer-freq"] == "([0]+[1]*59)"
    assert dsv2["--moe-shared-expert-intermediate-size"] == "3072" and "--moe-router-enable-expert-bias" not in dsv2


def test_exports_place_the_layers_where_the_cost_model_does():
    from planner.export.moe import stage_chunks
    from planner.llm.cost.blocks import layer_mix

    for name, (problem, plan) in all_cases().items():
        placed = [sum(map(sum, chunks)) for chunks in stage_chunks(problem, plan)]
        layers = plan.layers_per_stage(problem.model.num_layers)
        assert placed == layer_mix(problem.model, layers, plan.virtual_stages), name


def test_megatron_table_accepts_every_moe_export():
    for name, (problem, plan) in all_cases().items():
        assert check_megatron_table(export(problem, plan, "megatron").text) == [], name


@pytest.mark.skipif(_checkout_usable() is not None, reason=str(_checkout_usable()))
def test_megatron_parse_and_validate_accept_every_moe_export():
    """Megatron reads back the degrees, the expert grid and which layers are MoE."""
    for name, (problem, plan) in all_cases().items():
        text = export(problem, plan, "megatron").text
        extra = {"moe_layer_pattern": [int(x) for x in problem.model.moe_layers],
                 "config_class": "MLATransformerConfig" if problem.model.mla else "TransformerConfig"}
        assert check_megatron_export(text, CHECKOUT, extra=extra) == [], name


def _overlap_problem():
    return feature_cases()["moe-mixtral-capacity-overlap-etp2"]


@pytest.mark.parametrize(("case", "update", "message"), [
    ("moe-mixtral-capacity-overlap-etp2", {"recompute": "full"}, "ep_comm_overlap with full recompute"),
    ("moe-mixtral-capacity-overlap-etp2", {"schedule": "1f1b", "virtual_stages": 1}, "no virtual stages"),
    ("deepseek-v3-bridge", {"pp": 1, "schedule": "1f1b", "virtual_stages": 1, "stage_layers": None, "dp": 512},
     "an MTP module and PP 1"),
    ("moe-gpt-oss-bias", {"etp": 2}, "Bias in Moe is only supported when ETP==1"),
])
@pytest.mark.parametrize("target", ["megatron", "megatron-bridge"])
def test_megatron_core_refusals_are_errors(case, update, message, target):
    problem, plan = all_cases()[case]
    with pytest.raises(ExportError, match=re.escape(message)):
        export(problem, plan.model_copy(update=update), target)


@pytest.mark.skipif(_checkout_usable() is not None, reason=str(_checkout_usable()))
def test_megatron_itself_refuses_what_the_exporter_refuses():
    """The refusals above are Megatron's own: the flags they would need fail its checks."""
    text = export(*_overlap_problem(), "megatron").text
    full = text.replace("    --micro-batch-size", "    --recompute-granularity full\n    --recompute-method block\n"
                                                   "    --recompute-num-layers 1\n    --micro-batch-size")
    assert "disable full recomputation" in check_megatron_export(full, CHECKOUT)[0]
    oss = export(*feature_cases()["moe-gpt-oss-bias"], "megatron").text
    etp2 = oss.replace("--expert-tensor-parallel-size 1", "--expert-tensor-parallel-size 2")
    assert "Bias in Moe is only supported when ETP==1" in check_megatron_export(etp2, CHECKOUT)[0]


# -- Megatron-Bridge -------------------------------------------------------------------------

def bridge_items(text: str) -> dict:
    lines = [line.rstrip(" \\").strip('"') for line in text.splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_bridge_writes_the_expert_grid_and_explicit_nulls():
    items = bridge_items(export(*published()["deepseek-v3-bridge"], "megatron-bridge").text)
    assert {k: items[f"model.{k}"] for k in (
        "expert_model_parallel_size", "expert_tensor_parallel_size", "moe_token_dispatcher_type", "moe_grouped_gemm",
        "num_moe_experts", "moe_router_topk", "moe_expert_capacity_factor", "mtp_num_layers",
        "moe_shared_expert_overlap", "account_for_embedding_in_pipeline_split", "num_layers_in_first_pipeline_stage",
        "virtual_pipeline_model_parallel_size")} == {
        "expert_model_parallel_size": "64", "expert_tensor_parallel_size": "1", "moe_token_dispatcher_type": "flex",
        "moe_grouped_gemm": "true", "num_moe_experts": "256", "moe_router_topk": "8",
        "moe_expert_capacity_factor": "null", "mtp_num_layers": "1", "moe_shared_expert_overlap": "false",
        "account_for_embedding_in_pipeline_split": "false", "num_layers_in_first_pipeline_stage": "null",
        "virtual_pipeline_model_parallel_size": "4"}
    for prefix in ("comm_overlap", "model"):
        assert items[f"{prefix}.overlap_moe_expert_parallel_comm"] == items[f"{prefix}.delay_wgrad_compute"] == "true"
    assert json.loads(items["model.moe_layer_freq"]) == [0] * 3 + [1] * 58
    qwen = bridge_items(export(*published()["qwen3-30b-a3b-bridge"], "megatron-bridge").text)
    assert qwen["model.pipeline_model_parallel_layout"] == "null" and qwen["model.mtp_num_layers"] == "null"
    assert qwen["model.virtual_pipeline_model_parallel_size"] == "null" and qwen["model.moe_layer_freq"] == "1"


def bridge_model_shape(problem) -> dict:
    shape = model_shape(problem)
    shape["add_bias_linear"] = problem.model.linear_bias  # a recipe's own setting (Megatron: bias needs ETP 1)
    return shape


@pytest.mark.skipif(not bridge_installed(), reason=f"Megatron-Bridge environment not installed ({BRIDGE_PYTHON})")
def test_bridge_applies_every_moe_export(tmp_path):
    jobs, wants = [], []
    for name, (problem, plan) in all_cases().items():
        path = tmp_path / f"{name}.txt"
        path.write_text(export(problem, plan, "megatron-bridge").text)
        for variant in ("recipe-overlap", "recipe-plain"):
            jobs.append({"path": str(path), "world": problem.cluster.num_devices, "model": bridge_model_shape(problem),
                         "variant": variant})
            wants.append((name, problem, plan))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    out = subprocess.run([str(BRIDGE_PYTHON), str(BRIDGE_CHECK), str(tmp_path / "jobs.json")], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for result, (name, problem, plan) in zip(json.loads(out.stdout.strip().splitlines()[-1]), wants, strict=True):
        assert "error" not in result, (name, result)
        want = bridge_expected(problem, plan)
        assert {k: result[k] for k in want} == want, name
        m = problem.model
        pattern = [int(x) for x in m.moe_layers]
        assert {k: result[k] for k in ("num_moe_experts", "moe_ffn_hidden_size", "moe_router_topk", "moe_layer_freq",
                                       "moe_token_dispatcher_type", "moe_grouped_gemm", "moe_shared_expert_overlap",
                                       "moe_expert_capacity_factor", "mtp_num_layers")} == {
            "num_moe_experts": m.moe.num_experts, "moe_ffn_hidden_size": m.moe.ffn_hidden_size,
            "moe_router_topk": m.moe.top_k, "moe_layer_freq": 1 if all(pattern) else pattern,
            "moe_token_dispatcher_type": plan.dispatcher, "moe_grouped_gemm": True, "moe_shared_expert_overlap": False,
            "moe_expert_capacity_factor": m.moe.capacity_factor, "mtp_num_layers": m.mtp_layers or None}, name
        assert (result["layout"] is not None) == (plan.pp > 1), name
        if plan.pp > 1:
            layout = unrolled(result["layout"])
            assert layout.count("t") == m.num_layers and layout.count("m") == m.mtp_layers, name


# -- torchtitan ------------------------------------------------------------------------------

def test_torchtitan_02_names_the_flavor_and_the_expert_degrees():
    problem, plan = published()["deepseek-v3-bridge"]
    result = export(problem, plan, "torchtitan", "0.2")
    config = tomllib.loads(result.text)
    assert config["model"]["name"] == "deepseek_v3" and config["model"]["flavor"] == "671B"
    assert config["parallelism"]["expert_parallel_degree"] == 64
    assert config["parallelism"]["expert_tensor_parallel_degree"] == 1
    for text in ("multi-token-prediction", "grouped GEMMs in bf16", "DualPipeV", "fp8 dispatch"):
        assert any(text in a for a in result.approximations), text


def test_torchtitan_ddp_with_ep_is_hsdp_over_the_ep_group():
    result = export(*feature_cases()["moe-qwen3-ddp-ep8"], "torchtitan", "0.2")
    par = tomllib.loads(result.text)["parallelism"]
    assert (par["data_parallel_replicate_degree"], par["data_parallel_shard_degree"]) == (2, 8)
    assert any("HSDP with shard groups of 8" in a for a in result.approximations)


@pytest.mark.parametrize(("case", "update", "version", "message"), [
    ("moe-dsv3-edges-allgather-etp8", {}, "0.3", "torchtitan 0.3 has no expert tensor parallelism"),
    ("moe-dsv3-edges-allgather-etp8", {"etp": 2}, "0.2", "supports ETP = 1 or ETP = TP"),
    ("qwen3-30b-a3b-bridge", {"zero_stage": 3, "zero_shard_size": 4}, "0.2", "borrows ranks from the FSDP"),
    ("moe-mixtral-capacity-overlap-etp2", {}, "0.2", "torchtitan 0.2 has no model flavor for Mixtral 8x7B"),
    ("moe-llama4-every-second", {}, "0.3", "torchtitan 0.3 has no model flavor for Llama 4 Maverick"),
    ("moe-dsv2-cp-groups", {}, "0.2", "deepseek_v3 flavors use FlexAttention"),
])
def test_torchtitan_refusals(case, update, version, message):
    problem, plan = all_cases()[case]
    with pytest.raises(ExportError, match=re.escape(message)):
        export(problem, plan.model_copy(update=update), "torchtitan", version)


def test_torchtitan_03_without_a_config_for_the_flavor_says_so():
    text = export(*feature_cases()["moe-dsv2-cp-groups"], "torchtitan", "0.3").text
    assert "ships deepseek_v3 flavor 236B" in text and not any(line.startswith("--module") for line in text.splitlines())
    assert "--parallelism.expert_parallel_degree 8" in text


def _torchtitan_exports(tmp_path, version: str):
    items, wants = [], []
    for name, (problem, plan) in all_cases().items():
        try:
            text = export(problem, plan, "torchtitan", version).text
        except ExportError:
            continue
        path = tmp_path / f"{name}.{'toml' if version == '0.2' else 'txt'}"
        path.write_text(text)
        n = problem.cluster.num_devices
        items += [f"{path}:{n}", f"{path}:{n + 1}"]
        wants += [(name, problem, plan), None]
    return items, wants


def _check_torchtitan_results(results, wants, head: str, version: str):
    checked = 0
    for result, want in zip(results, wants, strict=True):
        if want is None:
            assert "Invalid parallel dims" in result["error"]
            continue
        name, problem, plan = want
        assert "error" not in result, (name, result)
        got = read_torchtitan(result, plan)
        if version == "0.3":
            got["activation_checkpoint"] = {"FullAC": "full", "none": "none"}.get(got["activation_checkpoint"])
        expected = expected_torchtitan(problem, plan, head)
        if plan.zero_stage == 0 and plan.ep > 1:  # exported as HSDP; the data-parallel size is the plan's
            assert result["dp_replicate"] > 1
        assert got == expected, name
        if version == "0.2":
            assert result["etp"] == (plan.etp if plan.ep > 1 else 1), name
        model = result["model"]
        if model is not None:
            m = problem.model
            assert (model["layers"], model["dim"], model["num_experts"], model["top_k"], model["moe_layers"]) == (
                m.num_layers, m.hidden_size, m.moe.num_experts, m.moe.top_k, [int(x) for x in m.moe_layers]), name
            checked += 1
    return checked


@pytest.mark.skipif(not available(PYTHON, "torchtitan"), reason=f"torchtitan 0.2 environment not installed ({PYTHON})")
def test_torchtitan_02_reads_every_moe_export(tmp_path):
    """torchtitan 0.2.2's parser, its expert device meshes and the named flavor (every case but Mixtral, which
    has no flavor, and DeepSeek-V2 with CP, which 0.2's FlexAttention refuses)."""
    items, wants = _torchtitan_exports(tmp_path, "0.2")
    assert {w[0] for w in wants if w} == set(all_cases()) - {"moe-mixtral-capacity-overlap-etp2", "moe-dsv2-cp-groups"}
    results = run_check(PYTHON, "torchtitan", items)
    assert _check_torchtitan_results(results, wants, "output", "0.2") == len(all_cases()) - 2
    flex = next(r for r, w in zip(results, wants, strict=True) if w and w[0] == "moe-dsv3-flex-overlap")
    assert flex["ep_comm_backend"] == "deepep"


@pytest.mark.skipif(not available(PYTHON_TT03, "torchtitan"),
                    reason=f"torchtitan 0.3 environment not installed ({PYTHON_TT03})")
def test_torchtitan_03_reads_every_moe_export(tmp_path):
    """torchtitan 0.3.0's parser on the bf16 cases it can run (its config, expert meshes, model spec)."""
    items, wants = _torchtitan_exports(tmp_path, "0.3")
    names = {w[0] for w in wants if w}
    assert names == {"moe-gpt-oss-bias", "moe-qwen3-ddp-ep8", "moe-dsv2-cp-groups", "moe-dsv3-flex-overlap",
                     "moe-qwen3-pp2-partial-recompute"}  # the rest: fp8, ETP, no flavor
    # DeepSeek-V2's flavor has no config of torchtitan's: the check parses its flags with llama3's debug model
    assert _check_torchtitan_results(run_check(PYTHON_TT03, "torchtitan03", items), wants, "lm_head", "0.3") == 4


@pytest.mark.skipif(not available(PYTHON, "torchtitan"), reason=f"torchtitan 0.2 environment not installed ({PYTHON})")
def test_torchtitan_meshes_refuse_ep_over_replicas(tmp_path):
    """What the exporter refuses (EP across dp_replicate) torchtitan's own mesh construction refuses."""
    text = export(*feature_cases()["moe-qwen3-ddp-ep8"], "torchtitan", "0.2").text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("data_parallel_replicate_degree = 2", "data_parallel_replicate_degree = 16")
                   .replace("data_parallel_shard_degree = 8", "data_parallel_shard_degree = 1"))
    (result,) = run_check(PYTHON, "torchtitan", [f"{bad}:16"])
    assert "unflatten" in result["error"]


# -- DeepSpeed, dense exports, the flex dispatcher --------------------------------------------

def test_deepspeed_refuses_moe():
    for problem, plan in all_cases().values():
        with pytest.raises(ExportError, match="no expert parallelism"):
            export(problem, plan, "deepspeed")


def test_dense_exports_have_no_moe_settings():
    problem = load_problem(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")
    plan = load_plan(PROBLEMS / "plans" / "llama3-70b-nemo.yaml")
    for target, version in FORMATS:
        text = render(problem, plan, target, version)
        assert not re.search(r"expert|moe|mtp|latent|flavor", text, re.IGNORECASE), (target, version)


def test_flex_dispatcher_is_deepep():
    assert "flex" in get_args(Dispatcher)
    problem, plan = feature_cases()["moe-dsv3-flex-overlap"]
    text = export(problem, plan, "megatron").text
    f = megatron_flags(text)
    assert (f["--moe-token-dispatcher-type"], f["--moe-flex-dispatcher-backend"]) == ("flex", "deepep")
    assert f["--moe-router-dtype"] == "fp32"  # DeepEP takes fp32 routing probabilities
    assert "export CUDA_DEVICE_MAX_CONNECTIONS=32\n" in text
    items = bridge_items(export(problem, plan, "megatron-bridge").text)
    assert (items["model.moe_token_dispatcher_type"], items["model.moe_flex_dispatcher_backend"]) == ("flex", "deepep")
    assert tomllib.loads(export(problem, plan, "torchtitan", "0.2").text)["parallelism"][
        "expert_parallel_comm_backend"] == "deepep"
    qwen = export(*published()["qwen3-30b-a3b-bridge"][:1], published()["qwen3-30b-a3b-bridge"][1].model_copy(
        update={"dispatcher": "flex"}), "torchtitan", "0.2")
    assert any("all-to-all over EP" in a for a in qwen.approximations)  # 0.2's qwen3 does not read the backend
    assert "export CUDA_DEVICE_MAX_CONNECTIONS=32\n" in export(*published()["qwen3-30b-a3b-bridge"][:1], published()[
        "qwen3-30b-a3b-bridge"][1].model_copy(update={"dispatcher": "flex"}), "megatron").text


def test_full_recompute_of_moe_blocks():
    """The cost model recomputes MoE blocks only; Megatron the first N layers of each chunk, dense or MoE."""
    edges = export(*feature_cases()["moe-dsv3-edges-allgather-etp8"], "megatron")
    f = megatron_flags(edges.text)
    assert (f["--recompute-granularity"], f["--recompute-method"], f["--recompute-num-layers"]) == ("full", "block", "8")
    assert any("dense layers [3, 0, 0, 0, 0, 0, 0, 0]" in a for a in edges.approximations)
    partial = export(*feature_cases()["moe-qwen3-pp2-partial-recompute"], "megatron")
    assert megatron_flags(partial.text)["--recompute-num-layers"] == "10"
    assert any("MoE blocks per stage [10, 10] (planned [10, 4])" in a for a in partial.approximations)
    titan = export(*feature_cases()["moe-dsv3-edges-allgather-etp8"], "torchtitan", "0.2")
    assert any("MoE blocks only" in a for a in titan.approximations)


def test_megatron_flags_of_moe_exports_are_in_the_exporters_list():
    from planner.export.megatron import MEGATRON_FLAGS

    for name, (problem, plan) in all_cases().items():
        argv = parse_export(export(problem, plan, "megatron").text)[0]
        assert {a for a in argv if a.startswith("--")} <= MEGATRON_FLAGS, name

