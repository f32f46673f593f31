"""Bad input gets a clear error naming the file and the field, never a traceback."""

from pathlib import Path

import pytest

from planner.cli import main
from planner.core.errors import InputError, PlanError
from planner.llm.plan import Plan
from planner.llm.problem import load_plan, load_problem

from .conftest import PROBLEMS, make_problem


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


TASK = """
model: llama3-8b
cluster: dgx-h100
num_devices: 8
training:
  global_batch_size: 128
  seq_len: 8192
"""


def test_misspelt_key_names_file_and_field(tmp_path):
    path = write(tmp_path, "task.yaml", TASK.replace("seq_len", "seq_lenght"))
    with pytest.raises(InputError) as err:
        load_problem(path)
    message = str(err.value)
    assert str(path) in message
    assert "training.seq_lenght: unknown field" in message


def test_misspelt_top_level_key(tmp_path):
    path = write(tmp_path, "task.yaml", TASK.replace("cluster:", "clutser:"))
    with pytest.raises(InputError, match=r"task.yaml: clutser: unknown field"):
        load_problem(path)


def test_negative_size_in_a_device_file(tmp_path):
    device = (PROBLEMS / "devices" / "h100-sxm5-80gb.yaml").read_text().replace("hbm_bytes: 80GB", "hbm_bytes: -80GB")
    write(tmp_path, "dev.yaml", device)
    cluster = (PROBLEMS / "clusters" / "dgx-h100.yaml").read_text().replace("device: h100-sxm5-80gb", "device: dev.yaml")
    write(tmp_path, "cluster.yaml", cluster)
    path = write(tmp_path, "task.yaml", TASK.replace("cluster: dgx-h100", "cluster: cluster.yaml"))
    with pytest.raises(InputError) as err:
        load_problem(path)
    assert "dev.yaml: hbm_bytes:" in str(err.value)
    assert ">= 0" in str(err.value)


def test_unknown_unit_names_field(tmp_path):
    text = TASK + "  framework:\n    framework_overhead_bytes: 2GiBs\n"
    path = write(tmp_path, "task.yaml", text)
    with pytest.raises(InputError, match=r"training.framework.framework_overhead_bytes: .*unknown bytes unit 'GiBs'"):
        load_problem(path)


def test_unknown_preset_lists_presets(tmp_path):
    path = write(tmp_path, "task.yaml", TASK.replace("llama3-8b", "llama9-8b"))
    with pytest.raises(InputError, match=r"model: 'llama9-8b' is neither a file nor a preset.*llama3-8b"):
        load_problem(path)


def test_degree_that_does_not_divide_heads():
    problem = make_problem(num_devices=48)
    with pytest.raises(PlanError, match=r"num_heads \(16\) is not divisible by tp \(3\)"):
        from planner.llm.cost.step import evaluate

        evaluate(problem, Plan(tp=3, dp=16))


def test_degrees_must_multiply_to_device_count():
    from planner.llm.cost.step import evaluate

    with pytest.raises(PlanError, match=r"tp\*cp\*pp\*dp = 2\*1\*1\*4 = 8 != num_devices \(16\)"):
        evaluate(make_problem(num_devices=16), Plan(tp=2, dp=4))


def test_bad_plan_file_names_field(tmp_path):
    path = write(tmp_path, "plan.yaml", "tp: 0\npp: 2\n")
    with pytest.raises(InputError, match=r"plan.yaml: tp: Input should be greater than 0"):
        load_plan(path)


def test_not_yaml_mapping(tmp_path):
    path = write(tmp_path, "task.yaml", "- just\n- a list\n")
    with pytest.raises(InputError, match="expected a mapping"):
        load_problem(path)


def test_missing_file_is_clear():
    with pytest.raises(InputError, match="cannot read file"):
        load_problem("/nonexistent/task.yaml")


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    path = write(tmp_path, "task.yaml", TASK.replace("seq_len", "seqlen"))
    assert main(["estimate", str(path), "--tp", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert "training.seqlen: unknown field" in err


def test_batch_must_be_given_once(tmp_path):
    path = write(tmp_path, "task.yaml", TASK + "  global_batch_tokens: 1048576\n")
    with pytest.raises(InputError, match="exactly one of global_batch_size"):
        load_problem(path)


def test_inconsistent_gqa_heads_rejected(tmp_path):
    from .conftest import small_model

    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        small_model(num_kv_heads=5)
