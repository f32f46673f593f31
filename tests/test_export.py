"""Exports: golden files, round trips through parsers, and the promised errors.

Golden files are regenerated only with PLANNER_REGENERATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
import shlex
import tomllib

import pytest

from planner.cli import check_megatron_flags, main
from planner.export import TARGETS, ExportError, export
from planner.export.megatron import MEGATRON_FLAGS
from planner.plan import Plan
from planner.problem import load_plan, load_problem

from .conftest import PROBLEMS, ROOT

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
    start = text.index("MEGATRON_PARALLEL_ARGS=(") + len("MEGATRON_PARALLEL_ARGS=(")
    body = text[start : text.rindex(")")]
    tokens = shlex.split(body)
    flags, i = {}, 0
    while i < len(tokens):
        assert tokens[i] in MEGATRON_FLAGS, tokens[i]
        if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            flags[tokens[i]] = tokens[i + 1]
            i += 2
        else:
            flags[tokens[i]] = True
            i += 1
    return flags


def degrees_megatron(text: str, world: int) -> dict:
    f = parse_megatron(text)
    tp, pp, cp = int(f["--tensor-model-parallel-size"]), int(f["--pipeline-model-parallel-size"]), int(
        f["--context-parallel-size"])
    return {"tp": tp, "pp": pp, "cp": cp, "dp": world // (tp * pp * cp), "mbs": int(f["--micro-batch-size"]),
            "gbs": int(f["--global-batch-size"])}


def degrees_bridge(text: str) -> dict:
    items = dict(line.rstrip(" \\").split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
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
        for line in text.splitlines():
            if line.startswith("--"):
                key, value = line.rstrip(" \\").split(" ", 1)
                section, name = key[2:].split(".", 1)
                config.setdefault(section, {})[name] = value
    par = config["parallelism"]
    dp = int(par["data_parallel_replicate_degree"]) * int(par["data_parallel_shard_degree"])
    return {"tp": int(par["tensor_parallel_degree"]), "pp": int(par["pipeline_parallel_degree"]),
            "cp": int(par["context_parallel_degree"]), "dp": dp, "gbs": int(config["training"]["global_batch_size"])}


TASKS = sorted(p.stem for p in (PROBLEMS / "tasks").glob("*.yaml"))


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
                "gbs": problem.task.num_sequences, "zero": plan.zero_stage}
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
        ("megatron", Plan(tp=8, pp=2, dp=4, zero_stage=2), "ZeRO-2 has no Megatron-LM equivalent"),
        ("megatron", Plan(tp=8, pp=2, dp=4, zero_stage=1, zero_shard_size=2), "HSDP"),
        ("deepspeed", Plan(tp=8, pp=2, dp=4, stage_layers=[30, 50]), "non-uniform pipeline stages"),
        ("deepspeed", Plan(tp=8, pp=2, dp=4, schedule="interleaved", virtual_stages=2), "interleaved"),
        ("deepspeed", Plan(tp=8, pp=2, dp=4, zero_stage=1, zero_shard_size=2), "HSDP with ZeRO-1/2"),
        ("megatron-bridge", Plan(tp=8, pp=4, dp=2, stage_layers=[18, 22, 22, 18], schedule="interleaved",
                                 virtual_stages=2), "first/last stage"),
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


def test_check_with_a_megatron_checkout(tmp_path, capsys):
    args = tmp_path / "megatron" / "training"
    args.mkdir(parents=True)
    args.joinpath("arguments.py").write_text("\n".join(f"group.add_argument('{f}')" for f in sorted(MEGATRON_FLAGS)))
    text = export(problem70(), load_plan(PROBLEMS / "plans" / "llama3-70b-nemo.yaml"), "megatron").text
    assert check_megatron_flags(text, str(tmp_path)) == []
    args.joinpath("arguments.py").write_text("group.add_argument('--tensor-model-parallel-size')")
    assert "--pipeline-model-parallel-size" in check_megatron_flags(text, str(tmp_path))
    plan = str(PROBLEMS / "plans" / "llama3-70b-nemo.yaml")
    task = str(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")
    assert main(["export", plan, "--task", task, "--to", "megatron", "--check-with", str(tmp_path)]) == 2
    assert "flags not defined by" in capsys.readouterr().err


def test_cli_export_and_solve_export(tmp_path, capsys):
    plan = str(PROBLEMS / "plans" / "gpt3-175b-megatron.yaml")
    task = str(PROBLEMS / "tasks" / "gpt3-175b-1024xa100.yaml")
    out = tmp_path / "args.sh"
    assert main(["export", plan, "--task", task, "--to", "megatron", "-o", str(out)]) == 0
    assert "--tensor-model-parallel-size 8" in out.read_text()
    capsys.readouterr()
    assert main(["solve", str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml"), "--export", "deepspeed"]) == 0
    text = capsys.readouterr().out
    assert '"train_batch_size": 128' in text


def test_every_target_is_registered():
    assert set(TARGETS) == {"megatron", "megatron-bridge", "deepspeed", "torchtitan"}
