"""`planner estimate` on DLRM tasks, and the bad inputs of the DLRM files (errors name the file
and the field)."""

from __future__ import annotations

import json

import pytest

from planner.cli import main

from .conftest import DLRM_PLANS, DLRM_TASKS, PROBLEMS

TASK = str(PROBLEMS / "tasks" / "madmax-dlrm-a-zionex128.yaml")
PLAN = str(PROBLEMS / "plans" / "madmax-dlrm-a-mp128.yaml")


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_there_are_shipped_dlrm_tasks_and_plans():
    assert DLRM_TASKS and DLRM_PLANS


def test_estimate_prices_the_shipped_plan(capsys):
    code, out, _ = run(["estimate", TASK, "--plan", PLAN], capsys)
    assert code == 0
    for text in ("step time", "samples/s", "where the step time goes", "output all-to-all fwd", "lookup imbalance"):
        assert text in out


def test_estimate_json(capsys):
    code, out, _ = run(["estimate", "madmax-dlrm-a-zionex128", "--plan", "madmax-dlrm-a-mp128", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["family"] == "dlrm"
    assert sum(data["breakdown"].values()) == pytest.approx(data["step_time_s"])
    assert len(data["ranks"]["shards"]) == 128


def test_solve_proves_the_shipped_task_and_the_saved_plan_reprices(tmp_path, capsys):
    out_file = tmp_path / "plan.yaml"
    code, out, _ = run(["solve", TASK, "-o", str(out_file), "--time-limit", "60"], capsys)
    assert code == 0
    assert "OPTIMAL" in out and "gap 0.00%" in out and "where the step time goes" in out
    code, out, _ = run(["solve", TASK, "--json", "--time-limit", "60"], capsys)
    objective = json.loads(out)["objective_s"]
    code, out, _ = run(["estimate", TASK, "--plan", str(out_file), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["step_time_s"] == pytest.approx(objective, abs=1e-6)


def test_compare_puts_the_solver_beside_the_rules_and_the_published_plan(capsys):
    code, out, _ = run(["compare", TASK, "--plan", PLAN, "--json", "--time-limit", "60"], capsys)
    rows = {r["method"]: r for r in json.loads(out)["rows"]}
    assert code == 0
    assert set(rows) == {"cpsat", "greedy", "madmax-mp", "row-wise", f"plan {PLAN}"}
    best = rows["cpsat"]["step_time_s"]
    assert all(r["step_time_s"] is None or r["step_time_s"] >= best - 1e-9 for r in rows.values())


@pytest.mark.parametrize(("args", "needle"), [
    (["solve", TASK, "--solver", "megatron-rules"], "not a DLRM solver"),
    (["compare", TASK, "--solvers", "cpsat,fsdp-only"], "not a DLRM solver"),
    (["solve", TASK, "--max-vpp", "8"], "--max-vpp"),
    (["solve", TASK, "--export", "megatron"], "exports to torchrec"),
    (["export", PLAN, "--task", TASK, "--to", "megatron"], "DLRM"),
])
def test_dlrm_commands_refuse_what_does_not_apply(capsys, args, needle):
    code, _, err = run(args, capsys)
    assert code == 2 and needle in err


def test_llm_flags_and_a_missing_plan_are_refused(capsys):
    code, _, err = run(["estimate", TASK, "--tp", "2"], capsys)
    assert code == 2 and "--tp" in err
    code, _, err = run(["estimate", TASK], capsys)
    assert code == 2 and "--plan" in err


def test_plans_of_the_other_family_are_refused(capsys):
    code, _, err = run(["estimate", TASK, "--plan", str(PROBLEMS / "plans" / "gpt3-175b-megatron.yaml")], capsys)
    assert code == 2 and "family" in err
    code, _, err = run(["estimate", str(PROBLEMS / "tasks" / "gpt3-175b-1024xa100.yaml"), "--plan", PLAN], capsys)
    assert code == 2 and "DLRM" in err


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


MODEL = """family: dlrm
name: bad
num_dense_features: 13
bottom_mlp: [64, 16]
interaction: {type: concat}
top_mlp: [64, 1]
tables:
  - {name: a, num_rows: ROWS, dim: 16, pooling_factor: 2}
  - {name: b, count: 4, num_rows: 1000, dim: 16, pooling_factor: 1}
"""


def task_with(tmp_path, rows="1000", devices=8, batch=64, extra=""):
    write(tmp_path, "m.yaml", MODEL.replace("ROWS", rows))
    return write(tmp_path, "task.yaml", f"model: m.yaml\ncluster: dgx-a100-80gb\nnum_devices: {devices}\n"
                 f"training: {{global_batch_size: {batch}{extra}}}\n")


PLAN_OK = """family: dlrm
tables:
  - {table: a, sharding: row_wise}
  - {table: b, count: 4, sharding: table_wise, ranks: [1]}
"""


def test_a_valid_hand_written_plan_prices(tmp_path, capsys):
    code, out, _ = run(["estimate", task_with(tmp_path), "--plan", write(tmp_path, "p.yaml", PLAN_OK)], capsys)
    assert code == 0 and "TW 4" in out


@pytest.mark.parametrize(("rows", "devices", "batch", "extra", "field"), [
    ("0", 8, 64, "", "tables.0.num_rows"),
    ("1000", 8, 63, "", "training.global_batch_size"),
    ("1000", 8, 64, ", embedding_optimizer: lion", "training.embedding_optimizer"),
    ("1000", 8, 64, ", dense_precision: fp32", "training.dense_precision"),
    ("30000000000", 8, 64, "", "model.tables"),
])
def test_bad_tasks_name_the_field(tmp_path, capsys, rows, devices, batch, extra, field):
    task = task_with(tmp_path, rows, devices, batch, extra)
    code, _, err = run(["estimate", task, "--plan", write(tmp_path, "p.yaml", PLAN_OK)], capsys)
    assert code == 2, err
    assert field in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("plan", "needle"), [
    (PLAN_OK.replace("row_wise}", "column_wise, ranks: [0, 1, 2]}"), "do not divide"),
    (PLAN_OK.replace("count: 4", "count: 3"), "cover 3"),
    (PLAN_OK.replace("table: a,", "table: zz,"), "no table 'zz'"),
    (PLAN_OK.replace("ranks: [1]", "ranks: [8]"), "rank 8 does not exist"),
    (PLAN_OK.replace("ranks: [1]", "ranks: [1, 2]"), "exactly one rank"),
    (PLAN_OK.replace("sharding: row_wise", "sharding: table_row_wise, host: 5"), "host 5 does not exist"),
    (PLAN_OK.replace("sharding: row_wise", "sharding: table_row_wise"), "needs host"),
    (PLAN_OK.replace("sharding: row_wise", "sharding: grid"), "sharding"),
    (PLAN_OK + "dense: {strategy: tp, tp: 3}\n", "dense.tp"),
    (PLAN_OK + "dense: {strategy: ddp, tp: 2}\n", "only strategy tp takes a TP degree"),
])
def test_bad_plans_name_the_entry(tmp_path, capsys, plan, needle):
    code, _, err = run(["estimate", task_with(tmp_path), "--plan", write(tmp_path, "p.yaml", plan)], capsys)
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err


def test_a_plan_that_does_not_fit_exits_3_and_names_the_rank(tmp_path, capsys):
    task = task_with(tmp_path, rows="400000000")  # 400 M x 16 fp32 rows + state: 27 GB on one rank
    write(tmp_path, "m.yaml", MODEL.replace("ROWS", "400000000").replace("dim: 16, pooling_factor: 2",
                                                                           "dim: 64, pooling_factor: 2"))
    plan = PLAN_OK.replace("{table: a, sharding: row_wise}", "{table: a, sharding: table_wise, ranks: [0]}")
    code, out, _ = run(["estimate", task, "--plan", write(tmp_path, "p.yaml", plan)], capsys)
    assert code == 3
    assert "warning: rank 0 needs" in out


def test_solve_export_json_carries_the_export_as_on_an_llm_task(tmp_path, capsys):
    """`solve --export torchrec --json` holds {"export": {target, text, error}} as the LLM path does; an export the
    target cannot express is its error (exit 4), with the plan still in the JSON and saved."""
    code, out, err = run(["solve", task_with(tmp_path), "--solver", "greedy", "--export", "torchrec", "--json"],
                         capsys)
    data = json.loads(out)
    assert code == 0, err
    assert data["export"]["target"] == "torchrec" and data["export"]["error"] is None
    assert json.loads(data["export"]["text"])["format"] == "planner torchrec sharding plan"

    write(tmp_path, "m.yaml", MODEL.replace("ROWS", "1000").replace("dim: 16", "dim: 18"))
    saved = tmp_path / "plan.yaml"
    code, out, err = run(["solve", str(tmp_path / "task.yaml"), "--solver", "greedy", "--export", "torchrec-python",
                          "--json", "-o", str(saved)], capsys)
    data = json.loads(out)
    assert code == 4
    assert data["plan"] is not None and saved.exists()
    assert data["export"]["text"] is None and "multiples of 4" in data["export"]["error"]
    assert "error: --export torchrec-python" in err
