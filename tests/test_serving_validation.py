"""The serving cost against the 12 TensorRT-LLM H100 rows of the measured-runs file (issue 10:
MAPE <= 20% on throughput and on TTFT, no row off by more than 35%). Nothing is fitted to these
rows: the engine behaviour comes from TensorRT-LLM's documentation (static batching in
gptSessionBenchmark, the pre-XQA decode kernel), the constants from the device and cluster presets."""

import json

import pytest
import yaml

from planner.cli import main
from planner.fidelity.validate import DEFAULT_RUNS, inference_summary, mape, validate


@pytest.fixture(scope="module")
def rows():
    return [r for r in validate() if r.id.startswith("trtllm-")]


def test_every_tensorrt_llm_row_is_predicted(rows):
    assert len(rows) == 12
    assert all(r.skipped is None and r.workload == "inference" for r in rows), [r.skipped for r in rows]
    assert sum(r.metric == "output_tokens_per_s_per_gpu" for r in rows) == 8
    assert sum(r.metric == "ttft_ms" for r in rows) == 4


def test_throughput_and_ttft_within_the_issue_targets(rows):
    """Today: throughput MAPE 15.6% (max 22.7%), TTFT MAPE 16.5% (max 27.2%); all under-predicted."""
    throughput = [r.error_pct for r in rows if r.metric == "output_tokens_per_s_per_gpu"]
    ttft = [r.error_pct for r in rows if r.metric == "ttft_ms"]
    assert mape(throughput) <= 20.0
    assert mape(ttft) <= 20.0
    assert max(abs(e) for e in throughput + ttft) <= 35.0


def test_each_row_states_the_engine_behaviour_it_assumed(rows):
    for r in rows:
        assert r.preset == "h100-sxm5-80gb"
        if r.metric == "output_tokens_per_s_per_gpu":
            assert any("static batching" in a for a in r.assumptions), r.id
            assert any("predates XQA" in a for a in r.assumptions), r.id
        else:
            assert any("one request alone" in a for a in r.assumptions), r.id


def test_inference_rows_are_summarised_apart_from_training(capsys):
    results = validate()
    summary = inference_summary(results)
    assert summary["throughput"]["num_rows"] == 8 and summary["ttft"]["num_rows"] == 4
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "inference output tokens/s per GPU MAPE" in out and "inference time to first token MAPE" in out
    assert main(["validate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inference"]["ttft"]["mape_pct"] == pytest.approx(summary["ttft"]["mape_pct"])
    assert all(r["workload"] == "training" or r["id"].startswith("trtllm-") for r in data["rows"])


def _inference_row(**measured):
    row = next(r for r in yaml.safe_load(DEFAULT_RUNS.read_text()) if r["id"].startswith("trtllm-"))
    row["measured"].update(measured)
    return row


@pytest.mark.parametrize(("change", "says"), [
    ({"infer_batch_size": None}, "measured.infer_batch_size"),
    ({"infer_input_len": 0}, "measured.infer_input_len"),
    ({"output_tokens_per_s_per_gpu": None}, "measured.output_tokens_per_s_per_gpu: field required"),
    ({"first_token_latency_ms": "fast"}, "measured.first_token_latency_ms"),
])
def test_a_malformed_inference_row_is_skipped_naming_the_field(tmp_path, capsys, change, says):
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump([_inference_row(**change)]))
    assert main(["validate", "--runs", str(path)]) == 3
    out = capsys.readouterr().out
    assert "no row could be predicted" in out and says in out


def test_an_inference_row_of_an_unknown_engine_is_skipped_with_the_reason(tmp_path, capsys):
    row = _inference_row()
    row["plan"]["framework"] = "my own server"
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump([row]))
    assert main(["validate", "--runs", str(path)]) == 3
    assert "plan.framework: 'my own server' names no serving engine" in capsys.readouterr().out
