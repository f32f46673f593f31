"""Exports parsed by the frameworks' own code, degrees and batch read back equal to the plan:
DeepSpeed 0.19's DeepSpeedConfig (batch triangle checked against the plan's data-parallel size,
through a single-process gloo group and an `mpu` reporting that size), torchtitan 0.2.2's
ConfigManager + ParallelDims + converter registry + async-TP rule, and torchtitan 0.3.0's
ConfigManager (tyro flags) + ParallelDims. Megatron-LM: tests/test_export_megatron.py;
Megatron-Bridge: tests/test_export_bridge.py.

Cases: every shipped plan with its task (mixture-of-experts ones included: torchtitan builds
their expert meshes and model flavors, see tests/test_export_moe.py), and the CP-SAT plan of
every shipped task. Each export is also checked with a world (or DP) size one larger, which the
framework must refuse.

The frameworks pin torch/protobuf versions that clash with OR-Tools, so they live in their own
environments, built by .ci/run: .venv-frameworks (DeepSpeed, torchtitan 0.2.2; or
PLANNER_FRAMEWORKS_PYTHON) and .venv-torchtitan03 (torchtitan 0.3.0, whose requirements differ;
or PLANNER_TORCHTITAN03_PYTHON). Without them these tests skip and say why.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

from planner.export import ExportError, export
from planner.llm.plan import Plan
from planner.llm.problem import load_plan, load_problem

from .conftest import LLM_PLANS, LLM_TASKS, PROBLEMS, ROOT

CHECK = ROOT / "planner" / "frameworks" / "framework_check.py"
PYTHON = Path(os.environ.get("PLANNER_FRAMEWORKS_PYTHON", ROOT / ".venv-frameworks" / "bin" / "python"))
PYTHON_TT03 = Path(os.environ.get("PLANNER_TORCHTITAN03_PYTHON", ROOT / ".venv-torchtitan03" / "bin" / "python"))
PUBLISHED = [("gpt3-175b-1024xa100", "gpt3-175b-megatron"), ("llama3-70b-64xh100", "llama3-70b-nemo"),
             ("llama3-405b-16384xh100", "llama3-405b-meta"), ("deepseek-v3-1024xh100", "deepseek-v3-bridge"),
             ("qwen3-30b-a3b-16xh100", "qwen3-30b-a3b-bridge"), ("deepseek-v3-2048xh800", "deepseek-v3-paper")]
CHECK_TIMEOUT_S = 300


def with_published(solved: dict) -> dict:
    """The solved plan of every task plus the published plans shipped in problems/plans."""
    cases = dict(solved)
    for task, plan in PUBLISHED:
        cases[f"published-{plan}"] = (load_problem(PROBLEMS / "tasks" / f"{task}.yaml"),
                                      load_plan(PROBLEMS / "plans" / f"{plan}.yaml"))
    return cases


def test_every_shipped_plan_is_a_case(solved):
    assert {p.stem for p in LLM_PLANS} == {plan for _, plan in PUBLISHED}
    assert {p.stem for p in LLM_TASKS} <= set(with_published(solved))


@functools.cache
def available(python: Path, module: str) -> bool:
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0


def exported_files(solved, tmp_path, target, version, size, suffix):
    """(items, expected, refused): every expressible export written to a file, checked with the
    right size and with size + 1 (which the framework must refuse, expected None)."""
    items, expected, refused = [], [], []
    for name, (problem, plan) in with_published(solved).items():
        try:
            text = export(problem, plan, target, version).text
        except ExportError as exc:
            refused.append((name, str(exc)))
            continue
        path = tmp_path / f"{name}{suffix}"
        path.write_text(text)
        n = size(problem, plan)
        items += [f"{path}:{n}", f"{path}:{n + 1}"]
        expected += [(problem, plan), None]
    return items, expected, refused


def run_check(python: Path, framework: str, items: list[str]) -> list[dict]:
    try:
        out = subprocess.run([str(python), str(CHECK), framework, *items], capture_output=True, text=True,
                             timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{framework} check did not finish in {CHECK_TIMEOUT_S} s: {(exc.stderr or b'')[-2000:]!r}")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def module_parts(problem, plan, head: str) -> list[list[str]] | None:
    if plan.pp == 1:
        return None
    from planner.export.megatron import chunk_layers

    sizes = chunk_layers(plan.layers_per_stage(problem.model.num_layers), plan.virtual_stages,
                         extra_last=problem.model.family == "moe")
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    parts = [[f"layers.{n}" for n in range(s, s + size)] for s, size in zip(starts, sizes, strict=True)]
    parts[0].insert(0, "tok_embeddings")
    parts[-1] += ["norm", head]
    return parts


def expected_torchtitan(problem, plan, head: str) -> dict:
    m = plan.num_micro_batches(plan.sequences(problem.task))  # the plan's batch (a range task's choice)
    return {"tp": plan.tp, "cp": plan.cp, "pp": plan.pp, "ep": plan.ep, "dp": plan.dp,
            "global_batch_size": plan.sequences(problem.task), "seq_len": problem.task.seq_len,
            "local_batch_size": plan.micro_batch_size * (m if plan.pp > 1 else 1),
            # Megatron's module-level selective recompute is exported as full checkpointing (approximation)
            "activation_checkpoint": "full" if plan.recompute == "full" or (
                plan.recompute == "selective" and plan.recompute_modules_list != ["core_attn"]) else "none",
            "module_fqns_per_model_part": module_parts(problem, plan, head),
            "compile": plan.tp_comm_overlap and plan.tp > 1}


def read_torchtitan(result: dict, plan) -> dict:
    got = {k: result[k] for k in ("tp", "cp", "pp", "ep", "global_batch_size", "seq_len", "local_batch_size",
                                  "activation_checkpoint")}
    got["dp"] = result["dp_replicate"] * result["dp_shard"]
    got["module_fqns_per_model_part"] = result["module_fqns_per_model_part"] if plan.pp > 1 else None
    got["compile"] = result["compile"] and result["async_tp"]
    return got


@pytest.mark.skipif(not available(PYTHON, "deepspeed"), reason=f"DeepSpeed environment not installed ({PYTHON})")
def test_deepspeed_reads_every_expressible_export(solved, tmp_path):
    # Beside the solved and published plans (most of whose optima use what DeepSpeed's engine
    # cannot express: interleaving, uneven stages), a ZeRO-3 data-parallel plan of its own.
    zero3 = (load_problem(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml"),
             Plan(tp=1, cp=1, pp=1, dp=8, zero_stage=3, micro_batch_size=1, recompute="none"))
    cases = {**solved, "zero3-llama3-8b-8xh100": zero3}
    items, expected, refused = exported_files(cases, tmp_path, "deepspeed", None, lambda pr, pl: pl.dp, ".json")
    assert len([e for e in expected if e]) >= 2
    for result, want in zip(run_check(PYTHON, "deepspeed", items), expected, strict=True):
        if want is None:
            assert "train_batch_size is not equal" in result["error"]
            continue
        problem, plan = want
        assert "error" not in result, result
        assert result["world_size"] == plan.dp
        assert result["train_batch_size"] == plan.sequences(problem.task)
        assert result["train_micro_batch_size_per_gpu"] == plan.micro_batch_size
        assert result["gradient_accumulation_steps"] == plan.num_micro_batches(plan.sequences(problem.task))
        assert result["zero_stage"] == plan.zero_stage
        assert (result["fp16"], result["bf16"]) == (problem.task.precision == "fp16", problem.task.precision != "fp16")
    for name, reason in refused:  # DeepSpeed's own limits, named
        assert any(s in reason for s in ("non-uniform", "per-stage recompute", "interleaved", "incompatible with pipeline",
                                         "HSDP", "mixture-of-experts")), name


@pytest.mark.skipif(not available(PYTHON, "torchtitan"), reason=f"torchtitan 0.2 environment not installed ({PYTHON})")
def test_torchtitan_02_reads_every_expressible_export(solved, tmp_path):
    items, expected, refused = exported_files(solved, tmp_path, "torchtitan", "0.2",
                                              lambda pr, pl: pr.cluster.num_devices, ".toml")
    # only torchtitan's MoE limits (expert grid, FlexAttention with CP), named
    assert all(any(s in reason for s in ("EP", "FlexAttention", "no model flavor")) for _, reason in refused), refused
    for result, want in zip(run_check(PYTHON, "torchtitan", items), expected, strict=True):
        if want is None:
            assert "Invalid parallel dims" in result["error"]
            continue
        problem, plan = want
        assert "error" not in result, result
        assert read_torchtitan(result, plan) == expected_torchtitan(problem, plan, "output")
        fp8 = problem.task.precision == "fp8"
        assert result["converters"] == (["quantize.linear.float8"] if fp8 else [])
        assert result["float8_recipe"] == ("tensorwise" if fp8 else None)


@pytest.mark.skipif(not available(PYTHON_TT03, "torchtitan"),
                    reason=f"torchtitan 0.3 environment not installed ({PYTHON_TT03})")
def test_torchtitan_03_reads_every_expressible_export(solved, tmp_path):
    items, expected, refused = exported_files(solved, tmp_path, "torchtitan", "0.3",
                                              lambda pr, pl: pr.cluster.num_devices, ".txt")
    assert len([e for e in expected if e]) >= 3
    assert all("fp8" in reason for _, reason in refused)
    for result, want in zip(run_check(PYTHON_TT03, "torchtitan03", items), expected, strict=True):
        if want is None:
            assert "Invalid parallel dims" in result["error"]
            continue
        problem, plan = want
        assert "error" not in result, result
        got = read_torchtitan(result, plan)
        got["activation_checkpoint"] = {"FullAC": "full", "none": "none"}.get(got["activation_checkpoint"])
        assert got == expected_torchtitan(problem, plan, "lm_head")


@pytest.mark.skipif(not available(PYTHON_TT03, "torchtitan"),
                    reason=f"torchtitan 0.3 environment not installed ({PYTHON_TT03})")
def test_torchtitan_03_rejects_the_old_flags(tmp_path):
    """The flags of the previous 0.3 export (0.2 names) are refused by torchtitan 0.3.0 itself."""
    old = tmp_path / "old.txt"
    old.write_text("--parallelism.enable_async_tensor_parallel true \\\n--activation_checkpoint.mode none \\\n"
                   "--model.converters float8\n")
    (result,) = run_check(PYTHON_TT03, "torchtitan03", [f"{old}:1"])
    assert "Unrecognized options" in result["error"]


@pytest.mark.skipif(not available(PYTHON, "torchtitan"), reason=f"torchtitan 0.2 environment not installed ({PYTHON})")
def test_torchtitan_02_check_rejects_what_torchtitan_would_refuse_at_run_time(tmp_path):
    """The previous 0.2 export named its converter "float8" (registered as quantize.linear.float8) and
    asked for async TP without torch.compile; torchtitan's own registry and rule refuse both."""
    base = "[parallelism]\ntensor_parallel_degree = 2\ndata_parallel_shard_degree = 1\n"
    converter = tmp_path / "converter.toml"
    converter.write_text(base + '[model]\nconverters = ["float8"]\n')
    async_tp = tmp_path / "async.toml"
    async_tp.write_text(base + "enable_async_tensor_parallel = true\n")
    first, second = run_check(PYTHON, "torchtitan", [f"{converter}:2", f"{async_tp}:2"])
    assert "not registered" in first["error"] and "Async TP requires" in second["error"]


@pytest.mark.skipif(not available(PYTHON, "deepspeed"), reason=f"DeepSpeed environment not installed ({PYTHON})")
def test_deepspeed_check_ignores_a_stale_build_lock(tmp_path):
    """A run killed while DeepSpeed JIT-built its shm op left a lock in the extensions cache and every later
    run waited on it; the check builds nothing there (and nothing at all for a config)."""
    cache = tmp_path / "torch_extensions"
    lock = cache / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 1,
                                  "gradient_accumulation_steps": 4}))
    out = subprocess.run([str(PYTHON), str(CHECK), "deepspeed", f"{config}:2"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "TORCH_EXTENSIONS_DIR": str(cache)})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [{
        "world_size": 2, "train_batch_size": 8, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 4,
        "zero_stage": 0, "hpz_partition_size": 1, "bf16": False, "fp16": False}]
    assert "built successfully" not in out.stdout + out.stderr
