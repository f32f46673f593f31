"""Accuracy against published runs: the thresholds of the foundation issue, as regression tests.

Numbers are recomputed from the shipped copy of ../shared/data/measured_runs.yaml on every run,
so a change to the cost model that loses accuracy fails here.
"""

import json

import pytest
import yaml

from planner.cli import main
from planner.fidelity.validate import DEFAULT_RUNS, mape, validate, validation_json

KNOWN_OUTLIERS: dict[str, float] = {}
"""Rows allowed past the per-row bound (none since the BLOOM ramp-up row, -32.8%, came to -24.5%
with DeepSpeed's bf16 gradient all-reduce priced)."""


MOE_ROWS = ("mbridge-25.11-h100-gpt-oss", "mbridge-25.11-h100-qwen3", "mbridge-26.04.01-h100-gpt-oss",
            "mbridge-26.04.01-h100-qwen3", "mbridge-25.09-h100-deepseek-v3")
OTHER_FRAMEWORKS = ("torchtitan-",)
LONG_CONTEXT = ("nemo-longseq-",)
"""NeMo 24.03 long-sequence rows (Llama-2 7B fp8, 4k-1M tokens, CP up to 32): priced since issue 11's
second slice (no global batch stated: one micro-batch per DP rank, PP 1 only), bounded apart below
(issue 11's per-row target) rather than in the foundation issue's set."""
"""torchtitan runs (FSDP2 eager/compile/float8, async TP) are priced with the torchtitan framework
profiles (tests/test_framework_profiles.py checks their orderings, tests/test_torchtitan_fidelity.py
their facts) and bounded apart (issue 11: MAPE <= 15%)."""


@pytest.fixture(scope="module")
def everything():
    return [r for r in validate() if r.skipped is None]


@pytest.fixture(scope="module")
def results(everything):
    """The dense Megatron-family rows."""
    return [r for r in everything if not r.id.startswith(MOE_ROWS + OTHER_FRAMEWORKS + LONG_CONTEXT)
            and r.family != "dlrm" and r.workload == "training"]


def test_long_context_rows_are_priced_with_their_batch_assumption():
    """The eight PP-1 long-sequence rows are priced (their batch assumption named); the PP-2 row,
    whose bubble depends on the unstated batch, is skipped with the reason."""
    rows = {r.id: r for r in validate() if r.id.startswith(LONG_CONTEXT)}
    assert len(rows) == 9
    skipped = [r for r in rows.values() if r.skipped]
    assert [r.id for r in skipped] == ["nemo-longseq-h100-llama2-7b-seq8k-8gpu"]
    assert skipped[0].skipped == "global batch size not stated"
    for r in rows.values():
        if not r.skipped:
            assert any(a.startswith("global batch size not stated: one micro-batch") for a in r.assumptions)
            # Transformer Engine's flash backend (NeMo 24.03's NVTE_FUSED_ATTN=0) at FlashAttention-2's
            # measured rate, CP as TE's ring: -0.1% to +6.6% (README, Long context).
            assert abs(r.error_pct) <= 10.0, (r.id, r.error_pct)


@pytest.fixture(scope="module")
def moe_results(everything):
    return [r for r in everything if r.id.startswith(MOE_ROWS)]


def test_dense_training_mape_within_15_percent(results):
    assert len(results) >= 50
    assert mape([r.error_pct for r in results]) <= 15.0


def test_no_row_off_by_more_than_30_percent_except_named_outliers(results):
    """Issue 11's per-row bound (the dense Megatron-family rows; worst today: the Megatron-Core
    weak-scaling 1.7B row, +29.3%)."""
    for r in results:
        limit = KNOWN_OUTLIERS.get(r.id, 30.0)
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


REGRESSED = {"mbridge-25.11-h100-qwen3-30b-a3b-16gpu-gbs512": "https://github.com/NVIDIA-NeMo/Megatron-Bridge/issues/1998"}
"""Rows measured under a regression the maintainers filed (planner/fidelity/regressions.yaml). The
Qwen3-30B 25.11 row (+133%): Megatron-Bridge's archive lists the same H100 columns at 10,494
tokens/s/GPU in 25.09 (token drop) and 5275 in 25.11 (dropless), and issue #1998 states the 25.11
dropless schedule is 2x slower than 25.09's."""


def test_a_row_under_a_documented_regression_is_predicted_but_counted_apart(everything):
    rows = {r.id: r for r in everything if r.regression}
    assert {i: r.regression for i, r in rows.items()} == REGRESSED
    for r in rows.values():
        assert r.predicted and r.error_pct is not None and not r.counted
        assert abs(r.error_pct) <= 150.0, (r.id, r.error_pct)  # today +130.8%: still bounded
    summary = validation_json(validate())
    assert [g["id"] for g in summary["regressions"]] == list(REGRESSED)
    training = [r for r in everything if r.workload == "training"]
    assert summary["mape_pct"] == pytest.approx(mape([r.error_pct for r in training if r.counted]))
    assert summary["with_regressions"]["mape_pct"] == pytest.approx(mape([r.error_pct for r in training]))
    assert summary["num_predicted"] == len(training) - len(REGRESSED)


def test_moe_rows_within_the_current_bounds(moe_results):
    """Today: MAPE 19.4% over the five rows not under a documented regression, every one within
    31.3% (gpt-oss 26.04.01; issue 11 asks 30%, the remaining gap is listed in the README)."""
    rows = [r for r in moe_results if r.counted]
    assert len(rows) == 5
    assert mape([r.error_pct for r in rows]) <= 20.0
    for r in rows:
        assert abs(r.error_pct) <= 32.0, (r.id, r.error_pct)


def test_llm_rows_of_the_shared_file_within_the_current_bound(everything):
    """Issue 11's "all priced rows of the shared file" (its 87 rows are the LLM training and
    serving rows; the DLRM rows are ours): today MAPE 10.5% over 85 rows (one skipped, one under
    a documented regression), max 31.3%."""
    rows = [r for r in everything if r.counted and r.family != "dlrm"]
    assert len(rows) == 85
    assert mape([r.error_pct for r in rows]) <= 11.0
    assert validation_json(validate())["llm"]["mape_pct"] == pytest.approx(mape([r.error_pct for r in rows]))


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
    assert any("global batch size not stated" in s for s in reasons)
    assert not any(r.workload == "inference" for r in skipped)  # serving rows are priced (test_serving_validation)


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
    assert "LLM rows (training and serving) MAPE" in out
    assert "measured under a documented regression (predicted, not in the MAPE figures):" in out
    assert "+130.8% (regression)" in out and "issues/1998" in out
    assert "    measured under a documented regression (https://github.com/NVIDIA-NeMo/Megatron-Bridge/issues/1998)" in out


# -- DLRM rows (planner/fidelity/dlrm_rows.py) ---------------------------------------------------

DLRM_FIXED_OVERHEAD_ROWS = "torchrec-mlc-readme-"
"""TorchRec's 2022 README runs on 8x A100-40GB: the measured step is 7.2 ms at 256 samples per GPU,
9.8 ms at 2048 and 12.2 ms at 8192, an intercept of ~7 ms that the cost model has no term for
(per-step framework overhead); we predict 0.8-4.0 ms (+205% to +754%)."""

DLRM_SKIPPED = {
    "torchrec-mlc-readme-dlrm-onehot-1xa100-40g-lb16384": "host memory (UVM)",
    "dle-pyt-dlrm-large-16xv100-32g-amp": "has no device preset",
}


@pytest.fixture(scope="module")
def dlrm_results(everything):
    return [r for r in everything if r.family == "dlrm"]


def test_dlrm_rows_within_the_current_bounds(dlrm_results):
    """Today: MAPE 131.2% over 23 rows, max |error| 754% (the TorchRec README rows, see
    DLRM_FIXED_OVERHEAD_ROWS); the other 19 rows: MAPE 57.3%, max 89.6%, mostly under-predicted
    because the greedy plan assumed for unpublished shardings leaves MLPerf DCNv2's 100-id table on
    one GPU, and HugeCTR's hybrid embedding is not expressible. Bounds a little above today's."""
    assert len(dlrm_results) == 23
    assert mape([r.error_pct for r in dlrm_results]) <= 140.0
    assert max(abs(r.error_pct) for r in dlrm_results) <= 780.0
    others = [r for r in dlrm_results if not r.id.startswith(DLRM_FIXED_OVERHEAD_ROWS)]
    assert len(others) == 19
    assert mape([r.error_pct for r in others]) <= 60.0
    assert max(abs(r.error_pct) for r in others) <= 92.0


def test_dlrm_rows_compare_samples_per_second_predicted_minus_measured(dlrm_results):
    for r in dlrm_results:
        assert r.metric == "samples_per_s"
        assert r.error_pct == pytest.approx(100.0 * (r.predicted - r.measured) / r.measured)
        assert r.breakdown and r.breakdown["step_time_s"] > 0
        assert any(a.startswith(("sharding", "published sharding")) for a in r.assumptions), r.id
    greedy = [r for r in dlrm_results if any("TorchRec-style greedy plan assumed" in a for a in r.assumptions)]
    assert any(a.startswith("sharding not stated: TorchRec-style greedy plan assumed")
               for r in greedy for a in r.assumptions)


def test_dlrm_rows_that_cannot_be_priced_say_why():
    skipped = {r.id: r.skipped for r in validate() if r.skipped and r.id in DLRM_SKIPPED}
    assert set(skipped) == set(DLRM_SKIPPED)
    for row, reason in DLRM_SKIPPED.items():
        assert reason in skipped[row], (row, skipped[row])


DLRM_RUN = """\
- id: tiny-dlrm
  workload: training
  model: {family: dlrm, preset: null, num_dense_features: 13, num_tables: 3, embedding_dim: 64,
          rows: [1000000, 50000, 100], pooling: [1, 2, 1], bottom_mlp: [13, 256, 64],
          top_mlp: [70, 256, 1], interaction: dot, embedding_dtype: fp32}
  hardware: {gpu: A100-SXM4-80GB, num_gpus: 2, gpus_per_node: 8, peak_dense_tflops_per_gpu: 312}
  plan: {global_batch_size: 8192, precision: fp16 AMP, embedding_optimizer: SGD, dense_optimizer: SGD,
         embedding_sharding: null, framework: TorchRec}
  measured: {samples_per_s: 1000000}
"""


def _run_validate(tmp_path, capsys, text):
    path = tmp_path / "runs.yaml"
    path.write_text(text)
    code = main(["validate", "--runs", str(path), "-v"])
    return code, capsys.readouterr().out


def test_a_well_formed_dlrm_row_is_predicted(tmp_path, capsys):
    code, out = _run_validate(tmp_path, capsys, DLRM_RUN)
    assert code == 0, out
    assert "tiny-dlrm" in out and "samples_per_s" in out and "dlrm" in out
    assert "sharding not stated: TorchRec-style greedy plan assumed" in out


@pytest.mark.parametrize("change, field", [
    (("rows: [1000000, 50000, 100]", "rows: [1000000, 50000]"), "model.rows"),
    (("embedding_dim: 64", "embedding_dim: wide"), "model.embedding_dim"),
    (("interaction: dot", "interaction: [dot]"), "model.interaction"),
    (("bottom_mlp: [13, 256, 64]", "bottom_mlp: [256, 64]"), "model.bottom_mlp"),
    (("num_gpus: 2", "num_gpus: 0"), "hardware.num_gpus"),
    (("global_batch_size: 8192, ", ""), "plan.global_batch_size"),
    (("samples_per_s: 1000000", "samples_per_s: -5"), "measured.samples_per_s"),
    (("measured: {samples_per_s: 1000000}", "measured: {}"), "measured.samples_per_s"),
])
def test_a_malformed_dlrm_row_is_refused_with_the_field_named(tmp_path, capsys, change, field):
    text = DLRM_RUN.replace(*change)
    assert text != DLRM_RUN
    code, out = _run_validate(tmp_path, capsys, text)
    assert code == 3, out  # nothing could be predicted
    assert "tiny-dlrm: bad row" in out and field in out, out


def test_a_published_per_gpu_table_list_is_priced_as_published(tmp_path, capsys):
    code, out = _run_validate(tmp_path, capsys, DLRM_RUN.replace("embedding_sharding: null",
                                                                 "embedding_sharding: 'GPU lists [[0], [1, 2]]'"))
    assert code == 0, out
    assert "sharding: the published per-GPU table lists" in out and "tables: TW 3; dense DDP" in out
    code, out = _run_validate(tmp_path, capsys, DLRM_RUN.replace("embedding_sharding: null",
                                                                 "embedding_sharding: 'GPU lists [[0, 1], [1, 2]]'"))
    assert code == 0, out
    assert "tables: TW 2, RW 1; dense DDP" in out


def test_the_dell_plan_splitting_a_table_over_four_of_eight_gpus_falls_back_to_greedy(dlrm_results):
    row = next(r for r in dlrm_results if r.id == "mlperf-v3.0-dell-dcnv2-8xa100-80g")
    assert any(a.startswith("published sharding not expressible in the plan format (table 20 is split over GPUs 1-4")
               for a in row.assumptions)


def test_a_dlrm_row_whose_batch_does_not_split_is_skipped_with_the_reason(tmp_path, capsys):
    code, out = _run_validate(tmp_path, capsys, DLRM_RUN.replace("global_batch_size: 8192", "global_batch_size: 8193"))
    assert code == 3
    assert "tiny-dlrm: plan.global_batch_size: 8193 samples do not split evenly over 2 GPUs" in out


def test_a_dlrm_row_that_disagrees_with_its_preset_is_skipped(tmp_path, capsys):
    text = DLRM_RUN.replace("preset: null", "preset: mlperf-dlrm-dcnv2")
    code, out = _run_validate(tmp_path, capsys, text)
    assert code == 3
    assert "differs from the preset mlperf-dlrm-dcnv2" in out


def _heldout_row(row_id: str) -> dict:
    from pathlib import Path

    rows = yaml.safe_load((Path(__file__).resolve().parent.parent / "benchmarks" / "heldout_runs.yaml").read_text())
    return next(row for row in rows if row["id"] == row_id)


def test_b200_rows_run_on_the_dgx_b200_preset_and_partial_gb200_racks_are_priced():
    from planner.fidelity.validate import validate_row

    b200 = validate_row(_heldout_row("mbridge-25.11-b200-llama31-405b-128gpu-gbs64"))
    assert b200.skipped is None and b200.preset == "b200-sxm-180gb"
    # 128 GB200 GPUs in 4-GPU trays do not fill NVL72 racks: equal blocks of trays, 64 per rack
    gb200 = validate_row(_heldout_row("mbridge-25.09-gb200-llama31-405b-128gpu-gbs64"))
    assert gb200.skipped is None
    assert any("NVLink domain: 64 GPUs" in note for note in gb200.assumptions), gb200.assumptions


def test_torchtitan_rows_within_issue_11_targets(everything):
    """Issue 11: the torchtitan rows' MAPE <= 15% (14.5% today) and none off by more than 30%
    (worst today: the 8B compiled row, +19.4%)."""
    rows = [r for r in everything if r.id.startswith("torchtitan-")]
    assert len(rows) == 7
    assert mape([r.error_pct for r in rows]) <= 15.0
    assert all(abs(r.error_pct) <= 30.0 for r in rows), [(r.id, r.error_pct) for r in rows]


def test_a_row_whose_recompute_conflicts_with_its_recipe_is_skipped_naming_both():
    """The gpt-oss recipe recomputes layernorm and moe_act selectively; a row copy that states
    full recompute is refused rather than priced with either."""
    from planner.fidelity.validate import load_runs, validate_row

    row = next(r for r in load_runs(DEFAULT_RUNS) if r["id"] == "mbridge-25.11-h100-gpt-oss-120b-64gpu-gbs512")
    row = json.loads(json.dumps(row))
    row["plan"]["recompute"] = "full"
    skipped = validate_row(row).skipped
    assert "plan.recompute: 'full' conflicts with the recipe's selective recompute of layernorm, moe_act" in skipped


def _shipped(row_id: str) -> dict:
    from planner.fidelity.validate import load_runs

    return json.loads(json.dumps(next(r for r in load_runs(DEFAULT_RUNS) if r["id"] == row_id)))


def test_a_run_reusing_a_shipped_id_gets_neither_its_recipe_nor_its_regression(tmp_path):
    """Recipes and documented regressions belong to the shipped measurement of an id: a dense
    row renamed to the regressed id is counted, and DeepSeek-V3 renamed to a gpt-oss id is not
    priced with gpt-oss's recipe; both say why."""
    regressed = "mbridge-25.11-h100-qwen3-30b-a3b-16gpu-gbs512"
    dense = _shipped("nemo-24.07-h100-llama3-8b-8gpu") | {"id": regressed}
    deepseek = _shipped("mbridge-25.09-h100-deepseek-v3-1024gpu-gbs8192") | {
        "id": "mbridge-25.11-h100-gpt-oss-120b-64gpu-gbs512"}
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump([dense, deepseek]))
    first, second = validate(path)
    assert first.regression is None and first.counted
    assert any("not the shipped measurement of that id" in a for a in first.assumptions)
    assert any("no recipe settings are taken" in a for a in second.assumptions)
    assert not any(a.startswith("recipe settings") for a in second.assumptions)
    shipped = tmp_path / "shipped.yaml"
    shipped.write_text(yaml.safe_dump([_shipped(regressed)]))
    (only,) = validate(shipped)
    assert only.regression is not None and not only.counted


def test_the_summary_prints_no_figure_it_has_no_line_for(tmp_path, capsys):
    """A file of serving rows and the regressed row: no training MAPE line, so no training
    figure "with them"; training and serving rows together get the LLM line."""
    rows = [r for r in yaml.safe_load(DEFAULT_RUNS.read_text()) if r["workload"] == "inference"][:2]
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(rows + [_shipped("mbridge-25.11-h100-qwen3-30b-a3b-16gpu-gbs512")]))
    assert main(["validate", "--runs", str(path)]) == 0
    out = capsys.readouterr().out
    assert "throughput/step-time MAPE" not in out and "with them" not in out
    assert "measured under a documented regression" in out
    path.write_text(yaml.safe_dump(rows + [_shipped("nemo-24.07-h100-llama3-8b-8gpu")]))
    assert main(["validate", "--runs", str(path)]) == 0
    assert "LLM rows (training and serving) MAPE" in capsys.readouterr().out


def test_a_row_may_state_its_own_recompute_modules():
    from planner.fidelity.validate import validate_row

    row = _shipped("nemo-24.07-h100-llama3-8b-8gpu")
    row["plan"] |= {"recompute": "selective", "recompute_modules": ["mlp"]}
    result = validate_row(row)
    assert result.skipped is None and "rc:selective(mlp)" in result.plan
    gpt_oss = _shipped("mbridge-25.11-h100-gpt-oss-120b-64gpu-gbs512")
    gpt_oss["plan"]["recompute_modules"] = ["moe_act"]
    assert "conflicts with the recipe's ['layernorm', 'moe_act']" in validate_row(gpt_oss).skipped
