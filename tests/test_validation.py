"""Accuracy against published runs: the thresholds of the foundation issue, as regression tests.

Numbers are recomputed from the shipped copy of ../shared/data/measured_runs.yaml on every run,
so a change to the cost model that loses accuracy fails here.
"""

import json

import pytest
import yaml

from planner.cli import main
from planner.fidelity.validate import DEFAULT_RUNS, mape, validate

KNOWN_OUTLIERS = {
    # Two BLOOM rows with the same plan (m = 128 and m = 1 micro-batches) imply a per-stage
    # micro-batch time of 0.71 s (we predict 0.69 s) and a fixed per-step cost of ~6.7 s
    # (DeepSpeed optimizer step, gradient and tied-embedding sync, logging); we model ~2.6 s.
    "bloom-176b-384a100-gbs16-rampup": 40.0,
}


MOE_ROWS = ("mbridge-25.11-h100-gpt-oss", "mbridge-25.11-h100-qwen3", "mbridge-26.04.01-h100-gpt-oss",
            "mbridge-26.04.01-h100-qwen3", "mbridge-25.09-h100-deepseek-v3")
OTHER_FRAMEWORKS = ("torchtitan-",)
"""torchtitan runs (FSDP2 eager/compile/float8, async TP) are priced as Megatron-Core runs until
framework profiles exist (issue 11); their errors are reported, not yet bounded here."""


@pytest.fixture(scope="module")
def everything():
    return [r for r in validate() if r.skipped is None]


@pytest.fixture(scope="module")
def results(everything):
    """The dense Megatron-family rows."""
    return [r for r in everything if not r.id.startswith(MOE_ROWS + OTHER_FRAMEWORKS)]


@pytest.fixture(scope="module")
def moe_results(everything):
    return [r for r in everything if r.id.startswith(MOE_ROWS)]


def test_dense_training_mape_within_15_percent(results):
    assert len(results) >= 50
    assert mape([r.error_pct for r in results]) <= 15.0


def test_no_row_off_by_more_than_35_percent_except_named_outliers(results):
    for r in results:
        limit = KNOWN_OUTLIERS.get(r.id, 35.0)
        assert abs(r.error_pct) <= limit, (r.id, r.error_pct)


def test_korthikanti_table5_within_5_percent(results):
    """Calculon (Isaev et al. SC'23) reaches 3.65% on these 8 rows."""
    rows = [r for r in results if r.id.startswith("korthikanti22-t5")]
    assert len(rows) == 8
    assert mape([r.error_pct for r in rows]) <= 5.0


def test_memory_mape_within_20_percent(results):
    rows = [r for r in results if r.memory_error_pct is not None]
    assert len(rows) >= 7
    assert mape([r.memory_error_pct for r in rows]) <= 20.0


MOE_KNOWN_OUTLIERS = {
    # Megatron-Bridge's performance-summary archive lists the same H100 plan (16 GPUs, PP 2,
    # VP 12, EP 8, MBS 1) at 5113 tokens/s/GPU in the 26.02 container and 9058 in 26.02.01: a
    # software fix worth 1.77x; this 25.11 row (5275) was measured before it.
    "mbridge-25.11-h100-qwen3-30b-a3b-16gpu-gbs512": 150.0,
}


def test_moe_rows_within_the_current_bounds(moe_results):
    """Today: MAPE 24% over the five rows without a known software outlier, every one within
    40% (issue 8 asks for 20% and 35%; the remaining gap is listed in the README)."""
    rows = [r for r in moe_results if r.id not in MOE_KNOWN_OUTLIERS]
    assert len(rows) == 5
    assert mape([r.error_pct for r in rows]) <= 25.0
    for r in moe_results:
        assert abs(r.error_pct) <= MOE_KNOWN_OUTLIERS.get(r.id, 40.0), (r.id, r.error_pct)


def test_every_moe_row_is_predicted_with_its_recipe_settings(moe_results):
    assert len(moe_results) == 6
    for r in moe_results:
        assert any(a.startswith("recipe settings") for a in r.assumptions), r.id
        assert any("preset" in a for a in r.assumptions), r.id


def test_every_prediction_states_its_preset_and_assumptions(everything):
    for r in everything:
        assert r.preset and r.plan and r.assumptions


def test_rows_that_cannot_be_priced_are_skipped_with_a_reason():
    skipped = [r for r in validate() if r.skipped]
    reasons = {r.skipped for r in skipped}
    assert any("inference" in s for s in reasons)
    assert any("global batch size not stated" in s for s in reasons)


def test_validate_accepts_any_path_and_emits_json(tmp_path, capsys):
    rows = yaml.safe_load(DEFAULT_RUNS.read_text())[:3]
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(rows))
    assert main(["validate", "--runs", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in data["rows"]] == [r["id"] for r in rows]
    for record in data["rows"]:
        assert {"id", "predicted", "measured", "error_pct"} <= set(record)


def test_a_row_missing_fields_is_skipped_with_its_reason(tmp_path, capsys):
    path = tmp_path / "runs.yaml"
    path.write_text("- id: x\n  workload: training\n")
    assert main(["validate", "--runs", str(path)]) == 3  # nothing could be predicted
    out = capsys.readouterr().out
    assert "no row could be predicted" in out
    assert "x: bad row: model: field required" in out


def test_validate_text_report(capsys):
    assert main(["validate", "-v"]) == 0
    out = capsys.readouterr().out
    assert "MAPE" in out and "skipped" in out and "assumptions per row" in out
