"""The hostile-input corpus of `planner sweep`: every new field and flag, a clear error naming the
file (or flag) and the field, exit 2, and never a traceback or an internal error."""

from __future__ import annotations

import json

import pytest

from planner.cli import main

from .conftest import PROBLEMS

BASE = PROBLEMS / "catalogue" / "pipeline-needed.yaml"
GOOD = f"""task: {BASE}
provider: hyperstack
axes:
  num_devices: [8]
"""


def sweep(axes: str = "  num_devices: [8]\n", head: str = f"task: {BASE}\nprovider: hyperstack\n") -> str:
    return f"{head}axes:\n{axes}"


CASES = {
    # file-level faults
    "empty file": ("", ("sweep.yaml", "mapping")),
    "a list": ("- 1\n", ("sweep.yaml", "mapping")),
    "misspelt top-level key": (GOOD + "axis: {}\n", ("sweep.yaml", "axis", "unknown field")),
    "no axes": (f"task: {BASE}\nprovider: hyperstack\n", ("sweep.yaml", "axes", "required")),
    "no task": ("provider: hyperstack\naxes: {num_devices: [8]}\n", ("sweep.yaml", "task", "required")),
    "duplicate key": (GOOD + "provider: aws\n", ("sweep.yaml", "provider")),
    # axes
    "unknown axis": (sweep("  nvlink_bw_scale: [2]\n"), ("sweep.yaml", "axes.nvlink_bw_scale", "unknown field")),
    "empty axis": (sweep("  num_devices: []\n"), ("sweep.yaml", "axes.num_devices", "at least 1")),
    "axis not a list": (sweep("  num_devices: 8\n"), ("sweep.yaml", "axes.num_devices", "list")),
    "repeated value": (sweep("  num_devices: [8, 8]\n"), ("sweep.yaml", "axes.num_devices", "listed twice")),
    "zero devices": (sweep("  num_devices: [0]\n"), ("sweep.yaml", "axes.num_devices", "from 1")),
    "boolean devices": (sweep("  num_devices: [true]\n"), ("sweep.yaml", "axes.num_devices.0",)),
    "fractional devices": (sweep("  num_devices: [8.5]\n"), ("sweep.yaml", "axes.num_devices.0",)),
    "text scale": (sweep("  ib_bandwidth_scale: ['2']\n"), ("sweep.yaml", "axes.ib_bandwidth_scale.0",)),
    "zero scale": (sweep("  nvlink_bandwidth_scale: [0]\n"), ("sweep.yaml", "axes.nvlink_bandwidth_scale", "scale")),
    "negative scale": (sweep("  hbm_scale: [-1]\n"), ("sweep.yaml", "axes.hbm_scale", "scale")),
    "huge scale": (sweep("  hbm_scale: [1e9]\n"), ("sweep.yaml", "axes.hbm_scale", "1000")),
    "zero batch": (sweep("  global_batch_size: [0]\n"), ("sweep.yaml", "axes.global_batch_size", "from 1")),
    "domain size zero": (sweep("  nvlink_domain_size: [0]\n"), ("sweep.yaml", "axes.nvlink_domain_size", "from 1")),
    "unknown cluster": (sweep("  cluster: [dgx-h900]\n"), ("sweep.yaml", "axes.cluster[0]", "dgx-h900", "presets")),
    "unknown device": (sweep("  device: [h100, b300]\n"), ("sweep.yaml", "axes.device[0]", "h100")),
    "bad cluster file": (sweep("  cluster: [broken.yaml]\n"), ("broken.yaml", "tiers")),
    # task
    "unknown task": (sweep(head="task: llama9-70b\nprovider: hyperstack\n"), ("sweep.yaml", "task", "llama9-70b")),
    "task not a name": (sweep(head="task: 5\nprovider: hyperstack\n"), ("sweep.yaml", "task",)),
    "inference task": (sweep(head="task: llama3-70b-8xh100-serving\nprovider: hyperstack\n"),
                       ("sweep.yaml", "task", "inference")),
    "dlrm task": (sweep(head="task: madmax-dlrm-a-zionex128\nprovider: hyperstack\n"), ("sweep.yaml", "task", "DLRM")),
    "inline task misspelt": (sweep(head="task: {model: llama3-8b, cluster: dgx-h100, training: {seq_lenght: 8}}\n"
                                        "provider: hyperstack\n"), ("sweep.yaml", "task.training.seq_lenght")),
    "inline task unknown key": (sweep(head="task: {model: llama3-8b, cluster: dgx-h100, num_device: 8, training: {}}\n"
                                           "provider: hyperstack\n"), ("sweep.yaml", "task.num_device", "unknown field")),
    "inline task no model": (sweep(head="task: {cluster: dgx-h100, training: {}}\nprovider: hyperstack\n"),
                             ("sweep.yaml", "task.model", "required")),
    "inline task boolean count": (sweep(head="task: {model: llama3-8b, cluster: dgx-h100, num_devices: true, "
                                             "training: {}}\nprovider: hyperstack\n"), ("sweep.yaml", "task.num_devices")),
    "inline inference task": (sweep(head="task: {model: llama3-8b, cluster: dgx-h100, inference: {}}\n"
                                         "provider: hyperstack\n"), ("sweep.yaml", "the inline task", "inference")),
    # prices
    "no provider": (sweep(head=f"task: {BASE}\n"), ("sweep.yaml", "provider", "required")),
    "unknown provider": (sweep(head=f"task: {BASE}\nprovider: azure\n"), ("sweep.yaml", "provider", "azure", "lambda")),
    "unknown provider axis": (sweep("  provider: [aws, gcp]\n", head=f"task: {BASE}\n"),
                              ("sweep.yaml", "axes.provider[1]", "gcp")),
    "provider twice": (sweep("  provider: [aws]\n"), ("sweep.yaml", "provider", "not both")),
    # size
    "absurd grid": (sweep("  num_devices: [" + ", ".join(str(8 * i) for i in range(1, 101)) + "]\n"
                          "  hbm_scale: [" + ", ".join(str(1 + i / 100) for i in range(20)) + "]\n"),
                    ("sweep.yaml", "axes", "100 num_devices x 20 hbm_scale = 2,000 scenarios", "--max-scenarios")),
}
BROKEN_CLUSTER = "name: broken\ndevice: h100-sxm5-80gb\nnum_devices: 8\ntiers: []\n"


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_bad_sweep_file_names_the_file_and_the_field(case, tmp_path, capsys):
    text, says = CASES[case]
    (tmp_path / "broken.yaml").write_text(BROKEN_CLUSTER)
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    for word in says:
        assert word in err, (word, err)


FLAGS = {
    "--jobs 0": (["--jobs", "0"], "--jobs"),
    "--jobs text": (["--jobs", "two"], "--jobs"),
    "--time-limit nan": (["--time-limit", "nan"], "--time-limit"),
    "--time-limit 0": (["--time-limit", "0"], "--time-limit"),
    "--max-scenarios 0": (["--max-scenarios", "0"], "--max-scenarios"),
    "--workers -1": (["--workers", "-1"], "--workers"),
}


@pytest.mark.parametrize("case", FLAGS, ids=list(FLAGS))
def test_a_bad_flag_is_a_usage_error(case, tmp_path, capsys):
    argv, flag = FLAGS[case]
    path = tmp_path / "sweep.yaml"
    path.write_text(GOOD)
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(path), *argv])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_max_scenarios_lowers_the_limit(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep("  num_devices: [8, 16]\n  hbm_scale: [1, 2]\n"))
    assert main(["sweep", str(path), "--max-scenarios", "3"]) == 2
    assert "2 num_devices x 2 hbm_scale = 4 scenarios, more than the 3 allowed" in capsys.readouterr().err


def test_a_missing_sweep_file_is_bad_input(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_an_unwritable_output_is_refused_before_any_solve(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(GOOD)
    assert main(["sweep", str(path), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "-o/--output" in err
    assert main(["sweep", str(path), "-o", str(path)]) == 2
    assert "-o/--output" in capsys.readouterr().err and path.read_text() == GOOD


COSTS = {
    "negative price": ("usd_per_gpu_hour: {H100-SXM5-80GB: -1}", ("costs.yaml", "providers.0.usd_per_gpu_hour")),
    "bad kind": ("kind: spot", ("costs.yaml", "providers.0.kind")),
    "bad date": ("read_on: yesterday", ("costs.yaml", "providers.0.read_on")),
    "no source": ("source: ''", ("costs.yaml", "providers.0.source")),
}


@pytest.mark.parametrize("case", COSTS, ids=list(COSTS))
def test_a_bad_price_list_names_the_file_and_the_field(case, tmp_path, capsys):
    line, says = COSTS[case]
    key = line.split(":")[0]
    provider = {"provider": "hyperstack", "kind": "on-demand", "read_on": "2026-08-26", "source": "x",
                "usd_per_gpu_hour": "{H100-SXM5-80GB: 3.2}"}
    provider[key] = line.split(": ", 1)[1]
    body = "\n".join(f"    {k}: {v}" for k, v in provider.items())
    costs = tmp_path / "costs.yaml"
    costs.write_text(f"schema_version: 1\ndevices: []\nproviders:\n  - {body.lstrip()}\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(GOOD)
    assert main(["sweep", str(path), "--costs", str(costs)]) == 2
    err = capsys.readouterr().err
    for word in says:
        assert word in err, (word, err)


def test_an_inconsistent_scenario_is_a_row_not_an_error(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep("  ib_bandwidth_scale: [1, 1000]\n  nvlink_domain_size: [8, 3]\n"))
    assert main(["sweep", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["scenarios"]
    assert [r["status"] for r in rows] == ["OPTIMAL", "INVALID", "OPTIMAL", "INVALID"]
    assert all("use a multiple of 3" in r["reason"] for r in rows[1::2])


def test_a_model_the_search_cannot_cut_is_bad_input_as_for_solve(tmp_path, capsys):
    pattern = [0, 1, 1, 0, 1, 0, 1, 1] * 4  # MoE layers not a dense prefix then every P-th
    task = tmp_path / "task.yaml"
    task.write_text("model: {preset: mixtral-8x7b, ffn_hidden_size: 14336, moe: {num_experts: 8, top_k: 2, "
                    f"ffn_hidden_size: 14336, layer_pattern: {pattern}}}}}\n"
                    "cluster: dgx-h100\nnum_devices: 16\ntraining: {global_batch_size: 64, seq_len: 4096}\n")
    path = tmp_path / "sweep.yaml"
    path.write_text("task: task.yaml\nprovider: aws\naxes:\n  ib_bandwidth_scale: [1, 2]\n")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.moe.layer_pattern" in err and str(task) in err
