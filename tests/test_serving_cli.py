"""`planner estimate` on inference tasks (the shipped presets), and the commands that do not
handle them yet saying so."""

import json
from pathlib import Path

import pytest

from planner.cli import main

from .conftest import PROBLEMS, SERVING_PLANS, SERVING_TASKS

TASK = str(PROBLEMS / "tasks" / "llama3-70b-8xh100-serving.yaml")
PLAN = str(PROBLEMS / "plans" / "llama3-70b-vllm-tp4.yaml")


def test_the_serving_presets_ship():
    assert [p.stem for p in SERVING_TASKS] == ["deepseek-v3-96xh100-serving", "llama3-70b-8xh100-serving",
                                               "qwen3-235b-nvl72-serving"]
    assert [p.stem for p in SERVING_PLANS] == ["llama3-70b-vllm-tp4"]


def test_estimate_prints_the_breakdown(capsys):
    assert main(["estimate", "llama3-70b-8xh100-serving", "--plan", "llama3-70b-vllm-tp4"]) == 0
    out = capsys.readouterr().out
    for text in ("problem  Llama-3 70B on 8 x H100-SXM5-80GB", "plan     TP4 PP1 DP2", "output throughput",
                 "TTFT", "TPOT", "(target 50.00 ms: met)", "decode step", "prefill (time to first token)",
                 "TP communication per decode step by tier", "nvlink", "memory per GPU by pipeline stage",
                 "160.0 KiB per token"):
        assert text in out, text


def test_estimate_json_matches_the_text(capsys):
    assert main(["estimate", TASK, "--plan", PLAN, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["tp"] == 4 and data["plan"]["dp"] == 2
    assert data["batch_per_replica"] == 64 and data["fits"] is True
    assert sum(data["decode_parts_s"].values()) == pytest.approx(data["tpot_s"])
    assert sum(data["prefill_parts_s"].values()) == pytest.approx(data["ttft_max_s"])
    assert data["output_tokens_per_s"] == pytest.approx(2 * 64 / data["tpot_s"])
    assert data["targets"] == {"ttft_s": 1.0, "tpot_s": 0.05, "ttft_met": True, "tpot_met": True}
    assert data["kv_cache_bytes_per_token"] == 163_840
    assert data["memory"][0]["kv_cache_bytes"] > 0


def test_plan_flags_override_and_default(capsys):
    assert main(["estimate", TASK, "--plan", PLAN, "--tp", "8", "--dp", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["plan"]["tp"], data["plan"]["dp"], data["batch_per_replica"]) == (8, 1, 64)
    assert main(["estimate", TASK, "--tp", "2", "--json"]) == 0  # dp = 8 / 2, batch = 128 / 4
    data = json.loads(capsys.readouterr().out)
    assert (data["plan"]["dp"], data["batch_per_replica"]) == (4, 32)


def test_a_plan_that_does_not_fit_exits_3_and_says_why(capsys):
    assert main(["estimate", TASK, "--tp", "1", "--dp", "8"]) == 3  # 70 GB of fp8 weights, 16 sequences each
    out = capsys.readouterr().out
    assert "fits" in out and "NO" in out
    assert "warning: stage 0 needs" in out and "over by" in out


def test_a_missed_target_is_reported(tmp_path, capsys):
    task = tmp_path / "task.yaml"
    task.write_text(Path(TASK).read_text().replace("tpot_s: 50ms", "tpot_s: 1ms"))
    assert main(["estimate", str(task), "--plan", PLAN]) == 0
    out = capsys.readouterr().out
    assert "(target 1.00 ms: MISSED)" in out and "misses the 1.00 ms target" in out


@pytest.mark.parametrize("argv", [
    ["export", PLAN, "--task", TASK, "--to", "megatron"],
])
def test_commands_without_a_serving_path_say_so(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "llama3-70b-8xh100-serving.yaml: inference: --to megatron exports training plans" in err
