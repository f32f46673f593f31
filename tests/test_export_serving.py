"""Serving exports (planner export --to vllm | sglang | trtllm): every target and format on the
shipped serving task, the degrees read back equal to the plan's, the precision mapping per engine,
the refusals the recorded flag tables drive, the checker catching a wrong export, and (where
PLANNER_SERVING_PYTHON names an interpreter with vLLM 0.33.0 and SGLang 0.5.23 importable) the
engines' own parsers on every export.

The flag tables are facts recorded from the engines (planner/export/*_arguments.json; how in
planner/frameworks/serving_flags.py); nothing here imports an engine.
"""

from __future__ import annotations

import json

import pytest
import yaml

from planner.cli import main
from planner.cli.common import load_task
from planner.export.base import ExportError
from planner.export.serving import SERVING_TARGETS, check_serving_export, expected, export_serving, read_back
from planner.export.serving_base import command_argv
from planner.export.serving_check import (
    check_flags,
    check_llm_args,
    check_with_engine,
    config_argv,
    serving_python,
    table,
)
from planner.serving.plan import ServingPlan, check_plan
from planner.serving.plan_io import load_serving_plan

from .conftest import PROBLEMS

TASK = str(PROBLEMS / "tasks" / "llama3-70b-8xh100-serving.yaml")
PLAN = str(PROBLEMS / "plans" / "llama3-70b-vllm-tp4.yaml")
FORMATS = ("command", "config")


@pytest.fixture(scope="module")
def problem():
    return load_task(TASK)


def serving_plan(**fields) -> ServingPlan:
    return ServingPlan(family="serving", **fields)


def task_with(tmp_path, old: str, new: str, cluster: str | None = None) -> str:
    text = open(TASK).read()
    assert old in text, old
    text = text.replace(old, new)
    if cluster:
        text = text.replace("cluster: dgx-h100", f"cluster: {cluster}")
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return str(path)


# -- every target and format on the shipped task ----------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_every_target_exports_the_shipped_plan_and_reads_back_its_degrees(problem, target, fmt):
    plan = load_serving_plan(PLAN)
    result = export_serving(problem, plan, target, fmt)
    got, problems = read_back(target, result.text, fmt)
    assert problems == []
    assert got == {"tp": 4, "pp": 1, "dp": 2, "ep": 1, "max_num_seqs": 64, "max_num_batched_tokens": 8192}
    assert check_serving_export(problem, plan, target, result.text, fmt) == []
    assert f"problem {problem.hash}" in result.text and "predicted:" in result.text


@pytest.mark.parametrize("layout", [(8, 1, 1, 16), (4, 2, 1, 32), (2, 2, 2, 48), (1, 2, 4, 32), (4, 1, 2, None)])
@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_degrees_round_trip(problem, target, layout):
    tp, pp, dp, seqs = layout
    plan = serving_plan(tp=tp, pp=pp, dp=dp, max_num_seqs=seqs, max_num_batched_tokens=4096)
    assert check_plan(plan, problem) == []
    for fmt in FORMATS:
        text = export_serving(problem, plan, target, fmt).text
        got, problems = read_back(target, text, fmt)
        assert problems == []
        assert got == expected(problem, plan)
        assert (got["tp"], got["pp"], got["dp"], got["max_num_batched_tokens"]) == (tp, pp, dp, 4096)
        if seqs is not None:
            assert got["max_num_seqs"] == seqs


def test_an_open_max_num_seqs_writes_the_cost_models_batch(problem):
    from planner.serving.cost import evaluate

    plan = serving_plan(tp=4, pp=1, dp=2)
    batch = evaluate(problem, plan).batch_per_replica
    result = export_serving(problem, plan, "vllm")
    assert f"--max-num-seqs {batch}" in result.text
    assert any("leaves max_num_seqs open" in n for n in result.approximations)


def test_the_cli_solves_an_inference_task_and_exports_its_optimum(tmp_path, capsys):
    out = tmp_path / "serve.sh"
    assert main(["export", TASK, "--to", "vllm", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("#!/usr/bin/env bash") and 'vllm serve "$MODEL"' in text
    assert "found by serving-exhaustive (optimal)" in text
    err = capsys.readouterr().err
    assert "solved by serving-exhaustive (OPTIMAL" in err
    # The optimum `planner solve` reports (README: TP1 PP2 DP4, max 32 seqs).
    assert "--tensor-parallel-size 1" in text and "--pipeline-parallel-size 2" in text
    assert "--data-parallel-size 4" in text and "--max-num-seqs 32" in text


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_the_cli_exports_a_plan_as_command_and_config(target, tmp_path, capsys):
    script, config = tmp_path / "serve.sh", tmp_path / "serve.yaml"
    assert main(["export", PLAN, "--task", TASK, "--to", target, "-o", str(script), "--model", "org/ckpt"]) == 0
    assert main(["export", PLAN, "--task", TASK, "--to", target, "--format", "config", "-o", str(config)]) == 0
    assert "org/ckpt" in script.read_text() and "$MODEL" not in script.read_text()
    data = yaml.safe_load(config.read_text())
    assert isinstance(data, dict) and data
    capsys.readouterr()
    assert main(["export", PLAN, "--task", TASK, "--to", target]) == 0
    assert capsys.readouterr().out == script.read_text().replace("org/ckpt", '"$MODEL"').replace(
        "set -euo pipefail\n", 'set -euo pipefail\n: "${MODEL:?set MODEL to the checkpoint (Hugging Face id or path)}"\n')


def test_the_header_names_the_engine_versions(problem):
    plan = load_serving_plan(PLAN)
    assert "vLLM 0.33.0, commit 4ba787ec9" in export_serving(problem, plan, "vllm").text
    assert "SGLang 0.5.23" in export_serving(problem, plan, "sglang").text
    assert "serve.py@00209af14, llm_args.py@000439672" in export_serving(problem, plan, "trtllm").text


GOLDEN = PROBLEMS.parent / "tests" / "golden" / "export"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_golden(problem, target, fmt):
    """The shipped plan's exports, byte for byte (rewritten only with PLANNER_REGENERATE_GOLDEN=1)."""
    import os

    text = export_serving(problem, load_serving_plan(PLAN), target, fmt).text
    path = GOLDEN / f"llama3-70b-vllm-tp4.{target}-{fmt}.txt"
    if os.environ.get("PLANNER_REGENERATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with PLANNER_REGENERATE_GOLDEN=1"
    assert text == path.read_text()


# -- precisions: what each engine is told, and what it cannot express --------------------------

def precision_problem(tmp_path, weights: str, kv: str):
    path = task_with(tmp_path, "weight_precision: fp8\n  kv_cache_dtype: fp8",
                     f"weight_precision: {weights}\n  kv_cache_dtype: {kv}",
                     cluster="gb200-nvl72" if weights == "fp4" else None)
    return load_task(path)


@pytest.mark.parametrize("weights, kv, vllm_flags, sglang_flags, trt_kv", [
    ("bf16", "bf16", ["--dtype bfloat16", "--kv-cache-dtype bfloat16"], ["--dtype bfloat16", "--kv-cache-dtype bf16"],
     "bfloat16"),
    ("fp8", "fp8", ["--quantization fp8", "--kv-cache-dtype fp8"], ["--quantization fp8", "--kv-cache-dtype fp8_e4m3"],
     "fp8"),
    ("fp4", "fp8", ["--quantization modelopt_fp4", "--kv-cache-dtype fp8"],
     ["--quantization modelopt_fp4", "--kv-cache-dtype fp8_e4m3"], "fp8"),
    ("fp16", "fp16", ["--dtype float16", "--kv-cache-dtype float16"], ["--dtype float16", "--kv-cache-dtype auto"],
     "float16"),
])
def test_precisions_map_to_each_engine(tmp_path, weights, kv, vllm_flags, sglang_flags, trt_kv):
    p = precision_problem(tmp_path, weights, kv)
    plan = serving_plan(tp=4, pp=1, dp=p.cluster.num_devices // 4, max_num_seqs=32)
    assert check_plan(plan, p) == []
    v = export_serving(p, plan, "vllm").text
    s = export_serving(p, plan, "sglang").text
    t = export_serving(p, plan, "trtllm")
    for flag in vllm_flags:
        assert flag in v
    for flag in sglang_flags:
        assert flag in s
    assert ("--quantization" in v) == (weights in ("fp8", "fp4"))
    config = yaml.safe_load(export_serving(p, plan, "trtllm", "config").text)
    assert config["kv_cache_config"]["dtype"] == trt_kv
    if weights in ("fp8", "fp4"):
        assert "dtype" not in config
        assert any("reads the quantization from the checkpoint" in n for n in t.approximations)
    else:
        assert config["dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[weights]


def test_sglang_refuses_an_fp16_kv_cache_beside_bf16_weights(tmp_path):
    p = precision_problem(tmp_path, "bf16", "fp16")
    plan = serving_plan(tp=8, pp=1, dp=1, max_num_seqs=16)
    with pytest.raises(ExportError, match=r"SGLang 0\.5\.23 has no float16 KV cache beside bf16 weights"):
        export_serving(p, plan, "sglang")
    assert "--kv-cache-dtype float16" in export_serving(p, plan, "vllm").text  # vLLM has one


def test_a_quantization_the_recorded_version_lacks_is_refused(tmp_path, monkeypatch):
    """The refusal follows the table: a vLLM without modelopt_fp4 cannot serve fp4 weights."""
    import planner.export.vllm as vllm_export

    p = precision_problem(tmp_path, "fp4", "fp8")
    recorded = table("vllm")
    older = {**recorded, "validated_values": {**recorded["validated_values"], "--quantization": ["fp8", "awq"]}}
    monkeypatch.setattr(vllm_export, "table", lambda engine: older)
    plan = serving_plan(tp=4, pp=1, dp=p.cluster.num_devices // 4, max_num_seqs=32)
    with pytest.raises(ExportError, match=r"inference.weight_precision: vLLM 0\.33\.0.* has no --quantization "
                                          r"modelopt_fp4 \(it takes fp8, awq\)"):
        export_serving(p, plan, "vllm")


def test_engine_memory_fractions_keep_the_planned_kv_pool(problem):
    from planner.export.serving_base import settings

    plan = load_serving_plan(PLAN)
    s = settings(problem, plan)
    hbm = problem.cluster.device.hbm_bytes
    for stage in s.estimate.memory:
        pool = stage.capacity_bytes - stage.weights_bytes - stage.workspace_bytes - stage.overhead_bytes
        # SGLang: weights + KV pool over the whole GPU; TensorRT-LLM: KV pool over what is left.
        assert s.kv_pool_fraction_of_total * hbm <= stage.weights_bytes + pool + 1e-6 * hbm
        assert s.kv_pool_fraction_of_total * hbm >= stage.weights_bytes + pool - 0.002 * hbm
        free = hbm - stage.weights_bytes - stage.workspace_bytes - stage.overhead_bytes
        assert s.kv_pool_fraction_of_free * free <= pool + 1e-6 * hbm
    assert f"--gpu-memory-utilization {problem.task.engine.gpu_memory_utilization}" in export_serving(
        problem, plan, "vllm").text
    assert 0 < s.kv_pool_fraction_of_total < problem.task.engine.gpu_memory_utilization


# -- mixture-of-experts layouts ----------------------------------------------------------------

@pytest.fixture(scope="module")
def moe_problem():
    return load_task(str(PROBLEMS / "tasks" / "qwen3-235b-nvl72-serving.yaml"))


def test_expert_parallelism_per_engine(moe_problem):
    grouped = serving_plan(tp=1, pp=1, dp=72, ep=8, max_num_seqs=32)
    assert check_plan(grouped, moe_problem) == []
    text = export_serving(moe_problem, grouped, "vllm").text
    assert "--enable-expert-parallel" in text and "--data-parallel-size 8" in text and "# servers: 9" in text
    assert read_back("vllm", text, "command")[0]["ep"] == 8
    for target in ("sglang", "trtllm"):
        with pytest.raises(ExportError, match="one server's TP group"):
            export_serving(moe_problem, grouped, target)
    inside = serving_plan(tp=8, pp=1, dp=9, ep=8, max_num_seqs=64)
    assert check_plan(inside, moe_problem) == []
    assert "--ep-size 8" in export_serving(moe_problem, inside, "sglang").text
    assert "--ep_size 8" in export_serving(moe_problem, inside, "trtllm").text
    assert yaml.safe_load(export_serving(moe_problem, inside, "trtllm", "config").text)["moe_expert_parallel_size"] == 8
    vllm_text = export_serving(moe_problem, inside, "vllm").text  # ep = tp: servers of one replica each
    assert "--data-parallel-size 1" in vllm_text and "# servers: 9" in vllm_text


def test_a_dense_plan_has_no_expert_flags(problem):
    plan = load_serving_plan(PLAN)
    assert "expert" not in export_serving(problem, plan, "vllm").text
    assert "--ep-size" not in export_serving(problem, plan, "sglang").text
    assert "ep_size" not in export_serving(problem, plan, "trtllm").text


# -- the checker can fail ----------------------------------------------------------------------

@pytest.mark.parametrize("target, old, new, says", [
    ("vllm", "--tensor-parallel-size 4", "--tensor-parallel-size 2", "reads tp = 2, the plan says 4"),
    ("vllm", "--max-num-seqs 64", "--max-num-seq 64", "--max-num-seq: not an option of vllm 0.33.0"),
    ("vllm", "--kv-cache-dtype fp8", "--kv-cache-dtype fp9", "--kv-cache-dtype fp9: not one of vllm"),
    ("vllm", "--dtype bfloat16", "--dtype bf16", "--dtype bf16: not one of"),
    ("vllm", "--block-size 16", "--block-size sixteen", "--block-size sixteen: not an integer"),
    ("sglang", "--dp-size 2", "--dp-size 4", "reads dp = 4, the plan says 2"),
    ("sglang", "--mem-fraction-static 0.856", "--mem-fraction-static most", "not a number"),
    ("trtllm", "--tp_size 4", "--tp-size 4", "--tp-size: not an option of trtllm"),
    ("trtllm", "  free_gpu_memory_fraction: 0.862", "  free_gpu_memory_fraction: 1.5", "not in [0, 1]"),
    ("trtllm", "max_input_len: 2048", "max_input_length: 2048", "max_input_length: not a field"),
    ("trtllm", "  tokens_per_block: 16", "  tokens_per_block: 16\n  tokens_per_page: 16", "kv_cache_config.tokens_per_page"),
    ("trtllm", "max_batch_size: 64\n", "max_batch_size: 32\n", "--max_batch_size 64 and max_batch_size: 32 disagree"),
])
def test_the_check_finds_a_tampered_export(problem, target, old, new, says):
    plan = load_serving_plan(PLAN)
    text = export_serving(problem, plan, target).text
    assert old in text, old
    problems = check_serving_export(problem, plan, target, text.replace(old, new), "command")
    assert any(says in p for p in problems), problems


def test_a_tampered_config_is_caught(problem):
    plan = load_serving_plan(PLAN)
    text = export_serving(problem, plan, "vllm", "config").text
    assert check_serving_export(problem, plan, "vllm", text.replace("data-parallel-size: 2", "data-parallel-size: 3"),
                                "config")
    assert check_serving_export(problem, plan, "vllm", text + "bogus-flag: 1\n", "config")


def test_the_tables_record_what_the_exports_use():
    v, s, t = table("vllm"), table("sglang"), table("trtllm")
    assert (v["version"], v["commit"], s["version"]) == ("0.33.0", "g4ba787ec9", "0.5.23")
    assert v["options"]["--tensor-parallel-size"]["aliases"] == ["-tp"]
    assert "fp8" in v["validated_values"]["--quantization"] and "fp8" in v["validated_values"]["--kv-cache-dtype"]
    assert s["options"]["--kv-cache-dtype"]["choices"] and "float16" not in s["options"]["--kv-cache-dtype"]["choices"]
    assert t["options"]["--tp_size"]["dest"] == "tensor_parallel_size"
    assert {"dtype", "free_gpu_memory_fraction", "tokens_per_block"} <= set(t["kv_cache_config"])
    assert check_llm_args({"max_batch_size": 8, "kv_cache_config": {"dtype": "nvfp4"}}) == []
    assert check_flags("sglang", ["--tp-size", "2", "--enable-mixed-chunk"])[1] == []
    assert config_argv({"a-b": 1, "c": True, "d": False, "e": [1, 2]}) == ["--a-b", "1", "--c", "--e", "1", "2"]


# -- the engines' own parsers (an interpreter with vLLM and SGLang; skipped without) ------------

@pytest.mark.skipif(serving_python() is None, reason="PLANNER_SERVING_PYTHON not set (an interpreter where vLLM 0.33.0 "
                    "and SGLang 0.5.23 import: see planner/frameworks/serving_flags.py)")
@pytest.mark.parametrize("target", ["vllm", "sglang"])
def test_the_engines_own_parser_reads_the_plan(problem, target, tmp_path):
    from planner.export import sglang, vllm

    plan = load_serving_plan(PLAN)
    program = vllm.PROGRAM if target == "vllm" else sglang.PROGRAM
    argv = command_argv(export_serving(problem, plan, target, model="org/ckpt").text, program)
    config = tmp_path / "config.yaml"
    config.write_text(export_serving(problem, plan, target, "config", model="org/ckpt").text)
    for args in (argv, (["org/ckpt"] if target == "vllm" else []) + ["--config", str(config)]):
        result = check_with_engine(target, args)
        assert "error" not in result, result
        got = result["args"]
        names = (("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_num_seqs",
                  "max_num_batched_tokens") if target == "vllm" else
                 ("tp_size", "pp_size", "dp_size", "max_running_requests", "chunked_prefill_size"))
        assert [got[n] for n in names] == [4, 1, 2, 64, 8192], json.dumps(got)[:500]


@pytest.mark.skipif(serving_python() is None, reason="PLANNER_SERVING_PYTHON not set (see above)")
@pytest.mark.parametrize("task, layout, target, want", [
    ("qwen3-235b-nvl72-serving", dict(tp=1, pp=1, dp=72, ep=8, max_num_seqs=32), "vllm",
     {"tensor_parallel_size": 1, "data_parallel_size": 8, "enable_expert_parallel": True, "max_num_seqs": 32}),
    ("qwen3-235b-nvl72-serving", dict(tp=8, pp=1, dp=9, ep=8, max_num_seqs=64), "sglang",
     {"tp_size": 8, "dp_size": 9, "ep_size": 8, "max_running_requests": 64}),
    ("deepseek-v3-96xh100-serving", dict(tp=8, pp=1, dp=12, ep=8, dp_attention=True, max_num_seqs=64), "sglang",
     {"tp_size": 8, "dp_size": 1, "ep_size": 8, "attn_dp_size": 8, "max_running_requests": 64}),
])
def test_the_engines_own_parser_reads_moe_layouts(task, layout, target, want):
    from planner.export import sglang, vllm

    p = load_task(str(PROBLEMS / "tasks" / f"{task}.yaml"))
    plan = serving_plan(**layout)
    assert check_plan(plan, p) == []
    program = vllm.PROGRAM if target == "vllm" else sglang.PROGRAM
    result = check_with_engine(target, command_argv(export_serving(p, plan, target, model="org/ckpt").text, program))
    assert "error" not in result, result
    assert {k: result["args"][k] for k in want} == want
