"""`planner estimate` on an inference task takes --ep and --dp-attention beside --tp, --pp and
--dp (mixture-of-experts plans without a plan file); training and DLRM tasks refuse them."""

import json

import pytest

from planner.cli import main

from .conftest import PROBLEMS

DEEPSEEK = str(PROBLEMS / "tasks" / "deepseek-v3-96xh100-serving.yaml")
LLAMA = str(PROBLEMS / "tasks" / "llama3-70b-8xh100-serving.yaml")


def test_ep_and_dp_attention_build_the_plan(capsys, tmp_path):
    assert main(["estimate", DEEPSEEK, "--tp", "8", "--dp", "12", "--ep", "8", "--dp-attention", "--json"]) in (0, 3)
    data = json.loads(capsys.readouterr().out)
    assert (data["plan"]["tp"], data["plan"]["dp"], data["plan"]["ep"], data["plan"]["dp_attention"]) == (8, 12, 8, True)
    # the same plan from a file prices the same
    plan = tmp_path / "plan.yaml"
    plan.write_text("family: serving\ntp: 8\ndp: 12\nep: 8\ndp_attention: true\n")
    assert main(["estimate", DEEPSEEK, "--plan", str(plan), "--json"]) in (0, 3)
    assert json.loads(capsys.readouterr().out)["output_tokens_per_s_per_gpu"] == data["output_tokens_per_s_per_gpu"]


def test_flags_override_a_plan_file(capsys, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("family: serving\ntp: 1\ndp: 96\nep: 16\n")
    assert main(["estimate", DEEPSEEK, "--plan", str(plan), "--ep", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"]["ep"] == 32


@pytest.mark.parametrize(("argv", "code", "needle"), [
    (["estimate", "llama3-8b-8xh100", "--ep", "2"], 2, "--ep: serving plan flags apply to inference tasks"),
    (["estimate", "llama3-8b-8xh100", "--dp-attention"], 2, "--dp-attention: serving plan flags apply"),
    (["estimate", "mlperf-dlrm-dcnv2-8xh100", "--ep", "2"], 2, "is a DLRM task"),
    ([ "estimate", LLAMA, "--tp", "4", "--dp", "2", "--ep", "2"], 2, "ep (2) applies to mixture-of-experts models"),
    (["estimate", LLAMA, "--dp-attention"], 2, "dp_attention applies to multi-head latent attention"),
    (["estimate", DEEPSEEK, "--tp", "1", "--dp", "96", "--ep", "7"], 2, "ep (7) must divide the model's 256"),
])
def test_bad_uses_are_one_line_errors(capsys, argv, code, needle):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err


@pytest.mark.parametrize(("value", "needle"), [("0", "must be from 1"), ("x", "expected an integer")])
def test_bad_ep_values_are_usage_errors(capsys, value, needle):
    with pytest.raises(SystemExit) as stopped:
        main(["estimate", DEEPSEEK, "--ep", value])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --ep: {needle}" in err and "Traceback" not in err
