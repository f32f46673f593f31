"""Exports: golden files, round trips through parsers, and the promised errors.

Golden files are regenerated only with PLANNER_REGENERATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
import shlex
import tomllib

import pytest

from planner.cli import main
from planner.core.errors import PlannerError
from planner.export import TARGETS, ExportError, export
from planner.export.megatron import MEGATRON_FLAGS
from planner.export.megatron_check import check_megatron_export, parse_export
from planner.llm.plan import Plan
from planner.llm.problem import load_plan, load_problem

from .conftest import LLM_TASKS, PROBLEMS, ROOT

GOLDEN = ROOT / "tests" / "golden" / "export"
REGENERATE = os.environ.get("PLANNER_REGENERATE_GOLDEN") == "1"
PUBLISHED = [
    ("gpt3-175b-1024xa100", "gpt3-175b-megatron"),
    ("llama3-70b-64xh100", "llama3-70b-nemo"),
    ("llama3-405b-16384xh100", "llama3-405b-meta"),
]
FORMATS = [("megatron", None), ("megatron-bridge", None), ("deepspeed", None), ("torchtitan", "0.2"),
           ("torchtitan", "0.3")]


def render(problem, plan, target, version) -> str:
    try:
        return export(problem, plan, target, version).text
    except ExportError as exc:
        return f"ERROR: {exc}\n"


@pytest.mark.parametrize(("task", "plan_name"), PUBLISHED)
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


# -- parsers: read an export back into degrees --------------------------------------------

def parse_megatron(text: str) -> dict:
    argv = parse_export(text)[0]
    flags, i = {}, 0
    while i < len(argv):
        assert argv[i] in MEGATRON_FLAGS, argv[i]
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            flags[argv[i]] = argv[i + 1]
            i += 2
        else:
            flags[argv[i]] = True
            i += 1
    return flags


def degrees_megatron(text: str, world: int) -> dict:
    f = parse_megatron(text)
    tp, pp, cp = int(f["--tensor-model-parallel-size"]), int(f["--pipeline-model-parallel-size"]), int(
        f["--context-parallel-size"])
    return {"tp": tp, "pp": pp, "cp": cp, "dp": world // (tp * pp * cp), "mbs": int(f["--micro-batch-size"]),
            "gbs": int(f["--global-batch-size"])}


def bridge_items(text: str) -> dict:
    lines = [line.rstrip(" \\").strip('"') for line in text.splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def degrees_bridge(text: str) -> dict:
    items = bridge_items(text)
    return {"tp": int(items["model.tensor_model_parallel_size"]), "pp": int(items["model.pipeline_model_parallel_size"]),
            "cp": int(items["model.context_parallel_size"]), "mbs": int(items["train.micro_batch_size"]),
            "gbs": int(items["train.global_batch_size"])}


def degrees_deepspeed(text: str) -> dict:
    config = json.loads(text)
    dp = config["train_batch_size"] // (config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"])
    assert dp * config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] == config["train_batch_size"]
    return {"dp": dp, "mbs": config["train_micro_batch_size_per_gpu"], "gbs": config["train_batch_size"],
            "zero": config["zero_optimization"]["stage"]}


def degrees_torchtitan(text: str, version: str) -> dict:
    if version == "0.2":
        config = tomllib.loads(text)
    else:
        config: dict = {}
        for token in shlex.split(" ".join(line.rstrip(" \\") for line in text.splitlines() if line.startswith("--"))):
            if token.startswith("--"):
                section, name = token[2:].split(".", 1)
                config.setdefault(section, {})[name] = True
                last = (section, name)
            else:
                config[last[0]][last[1]] = token
    par = config["parallelism"]
    dp = int(par["data_parallel_replicate_degree"]) * int(par["data_parallel_shard_degree"])
    return {"tp": int(par["tensor_parallel_degree"]), "pp": int(par["pipeline_parallel_degree"]),
            "cp": int(par["context_parallel_degree"]), "dp": dp, "gbs": int(config["training"]["global_batch_size"])}


TASKS = sorted(p.stem for p in LLM_TASKS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(("target", "version"), FORMATS)
def test_round_trip_of_solved_plans(solved, task, target, version):
    problem, plan = solved[task]
    try:
        text = export(problem, plan, target, version).text
    except ExportError:
        pytest.skip(f"{plan.summary()} is not expressible in {target} (covered by the error tests)")
    world = problem.cluster.num_devices
    expected = {"tp": plan.tp, "pp": plan.pp, "cp": plan.cp, "dp": plan.dp, "mbs": plan.micro_batch_size,
                "gbs": plan.sequences(problem.task), "zero": plan.zero_stage}
    if target == "megatron":
        got = degrees_megatron(text, world)
    elif target == "megatron-bridge":
        got = degrees_bridge(text)
    elif target == "deepspeed":
        got = degrees_deepspeed(text)
    else:
        got = degrees_torchtitan(text, version)
    assert {k: expected[k] for k in got} == got
    assert problem.hash in text or problem.hash in json.dumps(text)


def problem70():
    return load_problem(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")


@pytest.mark.parametrize(
    ("target", "plan", "message"),
    [
        ("deepspeed", Plan(tp=8, pp=2, dp=4, stage_layers=[30, 50]), "non-uniform pipeline stages"),
        ("deepspeed", Plan(tp=8, pp=2, dp=4, schedule="interleaved", virtual_stages=2), "interleaved"),
        ("deepspeed", Plan(tp=8, pp=2, dp=4, zero_stage=1, zero_shard_size=2), "HSDP with ZeRO-1/2"),
        ("deepspeed", Plan(tp=8, pp=2, dp=4, zero_stage=2), "ZeRO-2 and ZeRO-3 are incompatible with pipeline"),
        ("deepspeed", Plan(tp=8, pp=2, dp=4, zero_stage=3), "ZeRO-2 and ZeRO-3 are incompatible with pipeline"),
        ("megatron", Plan(tp=8, pp=2, dp=4, zero_stage=2), None),
        ("megatron", Plan(tp=8, pp=2, dp=4, zero_stage=1, zero_shard_size=2), None),
        ("megatron-bridge", Plan(tp=8, pp=4, dp=2, stage_layers=[18, 22, 22, 18], schedule="interleaved",
                                 virtual_stages=2), None),
        ("torchtitan", Plan(tp=8, pp=2, dp=4), None),
    ],
)
def test_unsupported_combinations_are_errors(target, plan, message):
    problem = problem70()
    if message is None:
        export(problem, plan, target)  # expressible: no error
        return
    with pytest.raises(ExportError, match=message):
        export(problem, plan, target)


def test_torchtitan_03_refuses_fp8_with_the_reason():
    with pytest.raises(ExportError, match="rowwise only"):
        export(problem70(), Plan(tp=8, pp=2, dp=4), "torchtitan", "0.3")


def test_approximations_are_printed_not_dropped():
    problem = problem70()
    plan = Plan(tp=8, pp=4, dp=2, recompute="full", recompute_num_layers=[20, 10, 5, 0], zero_stage=1)
    megatron = export(problem, plan, "megatron")
    assert megatron.approximations and "APPROXIMATION" in megatron.text
    assert "--recompute-num-layers 20" in megatron.text
    titan = export(problem, plan, "torchtitan")
    assert any("ZeRO-1 exported as FSDP" in a for a in titan.approximations)


def test_non_uniform_stages_in_megatron():
    problem = problem70()
    edges = export(problem, Plan(tp=8, pp=4, dp=2, stage_layers=[18, 22, 22, 18]), "megatron").text
    assert "--decoder-first-pipeline-num-layers 18" in edges and "--decoder-last-pipeline-num-layers 18" in edges
    layout = export(problem, Plan(tp=8, pp=4, dp=2, stage_layers=[16, 24, 24, 16], schedule="interleaved",
                                  virtual_stages=2), "megatron").text
    assert '--pipeline-model-parallel-layout "Et*8|t*12|t*12|t*8|t*8|t*12|t*12|t*8L"' in layout
    # odd stage sizes over 2 chunks: the larger chunk first (the Llama-3 405B plan's 7-layer edge stages)
    odd = export(problem, Plan(tp=8, pp=4, dp=2, stage_layers=[19, 21, 21, 19], schedule="interleaved",
                               virtual_stages=2), "megatron").text
    assert '"Et*10|t*11|t*11|t*10|t*9|t*10|t*10|t*9L"' in odd


def test_megatron_zero_stages_and_hsdp():
    """ZeRO-1 = distributed optimizer, ZeRO-2/3 = Megatron FSDP (with its checkpoint format); HSDP =
    distributed-optimizer instances = DP / shard size."""
    problem = problem70()
    flags = {z: parse_megatron(export(problem, Plan(tp=8, pp=2, dp=4, zero_stage=z), "megatron").text) for z in range(4)}
    assert not {"--use-distributed-optimizer", "--use-megatron-fsdp"} & set(flags[0])
    assert "--use-distributed-optimizer" in flags[1] and "--use-megatron-fsdp" not in flags[1]
    assert flags[2]["--data-parallel-sharding-strategy"] == "optim_grads"
    assert flags[3]["--data-parallel-sharding-strategy"] == "optim_grads_params"
    for z in (2, 3):
        assert flags[z]["--use-megatron-fsdp"] is True and flags[z]["--ckpt-format"] == "fsdp_dtensor"
    for z in (1, 2, 3):
        hsdp = parse_megatron(export(problem, Plan(tp=8, pp=2, dp=4, zero_stage=z, zero_shard_size=2), "megatron").text)
        assert hsdp["--num-distributed-optimizer-instances"] == "2"


def test_megatron_launch_environment():
    problem = problem70()
    assert "export CUDA_DEVICE_MAX_CONNECTIONS=1\n" in export(problem, Plan(tp=8, pp=2, dp=4), "megatron").text
    fsdp = export(problem, Plan(tp=8, pp=2, dp=4, zero_stage=3), "megatron").text
    assert "unset CUDA_DEVICE_MAX_CONNECTIONS\n" in fsdp and "export CUDA" not in fsdp
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in export(problem, Plan(pp=8, dp=8), "megatron").text


def test_fp8_recipe_is_explicit_everywhere():
    problem, plan = problem70(), Plan(tp=8, pp=2, dp=4)
    assert parse_megatron(export(problem, plan, "megatron").text)["--fp8-recipe"] == "tensorwise"
    assert bridge_items(export(problem, plan, "megatron-bridge").text)["mixed_precision"] == (
        "bf16_with_fp8_current_scaling_mixed")
    titan = tomllib.loads(export(problem, plan, "torchtitan", "0.2").text)
    assert titan["model"]["converters"] == ["quantize.linear.float8"]
    assert titan["quantize"]["linear"]["float8"]["recipe_name"] == "tensorwise"
    assert "Float8CurrentScaling" in export(problem, plan, "deepspeed").text


def test_bridge_writes_the_keys_that_win():
    problem = problem70()
    items = bridge_items(export(problem, Plan(tp=8, sp=True, tp_comm_overlap=True, pp=2, dp=4), "megatron-bridge").text)
    assert not any(k in items for k in ("model.fp8", "model.bf16", "model.fp16"))  # mixed_precision overwrites them
    assert items["comm_overlap.tp_comm_overlap"] == "true" and items["model.tp_comm_overlap"] == "true"
    assert items["model.seq_length"] == items["dataset.sequence_length"] == "8192"
    ddp = bridge_items(export(problem, Plan(tp=8, pp=2, dp=4, zero_stage=0), "megatron-bridge").text)
    assert ddp["ddp.use_distributed_optimizer"] == ddp["optimizer.use_distributed_optimizer"] == "false"
    layout = bridge_items(export(problem, Plan(tp=8, pp=4, dp=2, stage_layers=[16, 24, 24, 16], schedule="interleaved",
                                              virtual_stages=2), "megatron-bridge").text)
    assert layout["model.pipeline_model_parallel_layout"] == "'Et*8|t*12|t*12|t*8|t*8|t*12|t*12|t*8L'"
    zero2 = bridge_items(export(problem, Plan(tp=8, pp=2, dp=4, zero_stage=2, zero_shard_size=2), "megatron-bridge").text)
    assert zero2["ddp.data_parallel_sharding_strategy"] == "optim_grads"
    assert zero2["ddp.num_distributed_optimizer_instances"] == "2" and zero2["checkpoint.ckpt_format"] == "fsdp_dtensor"


def test_torchtitan_local_batch_is_one_forward_pass():
    """Without PP torchtitan accumulates global / (local x DP) passes of local_batch_size sequences: local is
    the micro-batch. With PP one pass is cut into micro-batches: local is micro-batch x micro-batches."""
    problem = problem70()  # 128 sequences
    flat = tomllib.loads(export(problem, Plan(tp=8, dp=8, micro_batch_size=1), "torchtitan").text)
    assert flat["training"]["local_batch_size"] == 1
    piped = tomllib.loads(export(problem, Plan(tp=8, pp=2, dp=4, micro_batch_size=2), "torchtitan").text)
    assert piped["training"]["local_batch_size"] == 32 and piped["parallelism"]["pipeline_parallel_microbatch_size"] == 2


def test_torchtitan_selective_recompute_is_none_with_the_reason():
    result = export(problem70(), Plan(tp=8, pp=2, dp=4, recompute="selective"), "torchtitan")
    assert tomllib.loads(result.text)["activation_checkpoint"]["mode"] == "none"
    assert "core attention" in result.text and "different policy" in result.text


def test_check_megatron_export_refuses_an_unusable_checkout(tmp_path):
    text = export(problem70(), load_plan(PROBLEMS / "plans" / "llama3-70b-nemo.yaml"), "megatron").text
    with pytest.raises(PlannerError, match="megatron/training/arguments.py"):
        check_megatron_export(text, str(tmp_path))
    with pytest.raises(PlannerError, match="not a planner Megatron export"):
        parse_export("--tensor-model-parallel-size 2")


def test_cli_export_and_solve_export(tmp_path, capsys):
    plan = str(PROBLEMS / "plans" / "gpt3-175b-megatron.yaml")
    task = str(PROBLEMS / "tasks" / "gpt3-175b-1024xa100.yaml")
    out = tmp_path / "args.sh"
    assert main(["export", plan, "--task", task, "--to", "megatron", "-o", str(out)]) == 0
    assert "--tensor-model-parallel-size 8" in out.read_text()
    capsys.readouterr()
    assert main(["solve", str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml"), "--export", "megatron"]) == 0
    text = capsys.readouterr().out
    assert "--global-batch-size 128" in text


def test_every_target_is_registered():
    assert set(TARGETS) == {"megatron", "megatron-bridge", "deepspeed", "torchtitan"}
