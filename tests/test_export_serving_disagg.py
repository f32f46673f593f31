"""`planner export` of a disaggregated serving plan: one script with a prefill and a decode
command, each read back through the engine's recorded flag table (degrees equal to its pool's,
the disaggregation flags accepted and set), valid bash; what cannot be exported is refused."""

import json
import subprocess

import pytest

from planner.cli import main
from planner.export.serving_check import check_flags
from planner.export.serving_disagg import KV_TRANSFER_CONFIG, role_argv

from .conftest import PROBLEMS

TASK = str(PROBLEMS / "tasks" / "llama3-70b-8xh100-serving.yaml")
PLAN = """family: serving
prefill: {tp: 1, pp: 2, dp: 2, max_num_batched_tokens: 4096}
decode: {tp: 4, pp: 1, dp: 1, max_num_seqs: 128, max_num_batched_tokens: 128}
"""


def ints(values: dict, *names: str) -> tuple[int, ...]:
    """The read-back values of `names` as integers (the table's parser keeps the words as written)."""
    return tuple(int(values[n]) for n in names)


@pytest.fixture
def plan_path(tmp_path):
    path = tmp_path / "disagg.yaml"
    path.write_text(PLAN)
    return str(path)


def _export(capsys, plan_path, target, *extra):
    assert main(["export", plan_path, "--task", TASK, "--to", target, *extra]) == 0
    return capsys.readouterr().out


def test_sglang_script_has_both_pools_read_back_by_the_flag_table(capsys, plan_path):
    text = _export(capsys, plan_path, "sglang")
    assert "disaggregated prefill and decode" in text and "sglang_router.launch_router --pd-disaggregation" in text
    prefill, problems = check_flags("sglang", role_argv(text, "sglang", "prefill"))
    assert not problems
    assert ints(prefill, "tp_size", "pp_size", "dp_size", "chunked_prefill_size") == (1, 2, 2, 4096)
    assert prefill["disaggregation_mode"] == "prefill"
    decode, problems = check_flags("sglang", role_argv(text, "sglang", "decode"))
    assert not problems
    assert ints(decode, "tp_size", "pp_size", "max_running_requests") == (4, 1, 128)
    assert int(decode.get("dp_size", 1)) == 1 and decode["disaggregation_mode"] == "decode"


def test_vllm_script_sets_the_nixl_connector_on_both_pools(capsys, plan_path):
    text = _export(capsys, plan_path, "vllm")
    for role, (tp, pp, dp) in (("prefill", (1, 2, 2)), ("decode", (4, 1, 1))):
        values, problems = check_flags("vllm", role_argv(text, "vllm", role))
        assert not problems
        assert ints(values, "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size") == (tp, pp, dp)
        assert json.loads(values["kv_transfer_config"]) == KV_TRANSFER_CONFIG
    assert "predicted: 487.4 output tokens/s per GPU" in text


@pytest.mark.parametrize("target", ["sglang", "vllm"])
def test_the_script_is_valid_bash(capsys, plan_path, tmp_path, target):
    script = tmp_path / "serve.sh"
    assert main(["export", plan_path, "--task", TASK, "--to", target, "-o", str(script)]) == 0
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    # without a role it stops with the usage line, before launching anything
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"MODEL": "m", "PATH": "/bin"})
    assert run.returncode != 0 and "prefill|decode" in run.stderr


@pytest.mark.parametrize(("extra", "needle"), [
    (["--to", "trtllm"], "exports to sglang or vllm"),
    (["--to", "vllm", "--format", "config"], "--format config: a disaggregated plan is two servers"),
])
def test_what_is_not_exported_is_refused_with_exit_4(capsys, plan_path, extra, needle):
    assert main(["export", plan_path, "--task", TASK, *extra]) == 4
    assert needle in capsys.readouterr().err


def test_a_bad_disaggregated_plan_names_the_pool(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(PLAN.replace("tp: 4, pp: 1, dp: 1", "tp: 4, pp: 1, dp: 2"))
    assert main(["export", str(path), "--task", TASK, "--to", "sglang"]) == 2
    err = capsys.readouterr().err
    assert "4 + 8 = 12 GPUs, but the task has 8" in err and "Traceback" not in err


def test_an_expert_layout_sglang_cannot_express_is_refused(capsys, tmp_path):
    task = str(PROBLEMS / "tasks" / "deepseek-v3-96xh100-serving.yaml")
    path = tmp_path / "ds.yaml"
    path.write_text("family: serving\nprefill: {tp: 1, pp: 16, dp: 2, max_num_batched_tokens: 16384}\n"
                    "decode: {tp: 1, dp: 64, ep: 64, max_num_seqs: 64, max_num_batched_tokens: 64}\n")
    assert main(["export", str(path), "--task", task, "--to", "sglang"]) == 4
    assert "ep 64" in capsys.readouterr().err
    assert main(["export", str(path), "--task", task, "--to", "vllm"]) == 0
    text = capsys.readouterr().out
    values, problems = check_flags("vllm", role_argv(text, "vllm", "decode"))
    assert not problems and values["enable_expert_parallel"]
