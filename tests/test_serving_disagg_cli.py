"""`planner solve --disaggregated`, `planner estimate` on a disaggregated plan file, `compare
--disaggregated`, and the bad inputs of the new flag and plan format: one-line errors naming the
file and field, never a traceback."""

import json

import pytest

from planner.cli import main

from .conftest import PROBLEMS

TASK = str(PROBLEMS / "tasks" / "llama3-70b-8xh100-serving.yaml")
TRAINING = str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml")


def test_solve_disaggregated_prints_the_proof_the_plan_and_the_colocated_optimum(capsys, tmp_path):
    out_path = tmp_path / "plan.yaml"
    assert main(["solve", TASK, "--disaggregated", "--pareto", "-o", str(out_path)]) == 0
    out = capsys.readouterr().out
    for text in ("solver serving-disaggregated: OPTIMAL", "gap 0.00%", "prefill/decode splits",
                 "colocated (serving-exhaustive, OPTIMAL)", "disaggregated is", "plan     disaggregated: prefill TP",
                 "KV transfer", "decode round", "memory per GPU by pool", "Pareto front", "plan written to"):
        assert text in out, text
    assert out_path.exists()


def test_the_saved_plan_reprices_to_the_objective(capsys, tmp_path):
    out_path = tmp_path / "plan.json"
    assert main(["solve", TASK, "--disaggregated", "--json", "-o", str(out_path)]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert solved["status"] == "OPTIMAL" and solved["disaggregated"] is True
    assert solved["colocated"]["status"] == "OPTIMAL"
    assert solved["vs_colocated"] == pytest.approx(
        solved["objective_tokens_per_s_per_gpu"] / solved["colocated"]["objective_tokens_per_s_per_gpu"] - 1)
    assert main(["estimate", TASK, "--plan", str(out_path), "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)
    assert priced["disaggregated"] is True
    assert priced["output_tokens_per_s_per_gpu"] == pytest.approx(solved["objective_tokens_per_s_per_gpu"], rel=1e-12)
    assert sum(priced["decode_parts_s"].values()) == pytest.approx(priced["tpot_s"])
    assert sum(priced["prefill_parts_s"].values()) == pytest.approx(priced["ttft_max_s"])


def test_compare_adds_the_disaggregated_row(capsys):
    assert main(["compare", TASK, "--disaggregated", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    methods = [r["method"] for r in rows]
    assert methods[:2] == ["serving-exhaustive", "serving-disaggregated"]
    best = max(r["output_tokens_per_s_per_gpu"] for r in rows if r["feasible"])
    assert any(r["vs_best"] == 0 for r in rows if r["feasible"])
    assert all(r["output_tokens_per_s_per_gpu"] <= best for r in rows if r["feasible"])


def _write_plan(tmp_path, text: str, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("text", "needle"), [
    ("family: serving\nprefill: [1, 2]\ndecode: {tp: 4, max_num_seqs: 8}\n", "prefill"),
    ("family: serving\nprefill: {tp: 0}\ndecode: {tp: 4, max_num_seqs: 8}\n", "prefill.tp"),
    ("family: serving\nprefill: {tp: x}\ndecode: {tp: 4, max_num_seqs: 8}\n", "prefill.tp"),
    ("family: serving\nprefill: {tp: 4, tensor: 2}\ndecode: {tp: 4, max_num_seqs: 8}\n", "prefill.tensor"),
    ("family: serving\nprefill: {tp: 4}\n", "decode"),
    ("family: dlrm\nprefill: {tp: 4}\ndecode: {tp: 4, max_num_seqs: 8}\n", "family"),
    ("family: serving\nprefill: {tp: 4}\ndecode: {tp: 4, max_num_seqs: 8}\ntp: 2\n", "tp"),
    ("family: serving\nprefill: {tp: 4}\ndecode: {tp: 2, max_num_seqs: 8}\n", "4 + 2 = 6 GPUs"),
    ("family: serving\nprefill: {tp: 4, max_num_seqs: 3}\ndecode: {tp: 4, max_num_seqs: 8}\n",
     "prefill.max_num_seqs"),
    ("family: serving\nprefill: {tp: 4}\ndecode: {tp: 4, max_num_seqs: 0}\n", "decode.max_num_seqs"),
    ("family: serving\nprefill: {tp: 4}\ndecode: {tp: 4, max_num_seqs: 99999999999}\n", "decode.max_num_seqs"),
    ("family: serving\nprefill: {tp: 4, max_num_batched_tokens: -1}\ndecode: {tp: 4, max_num_seqs: 8}\n",
     "prefill.max_num_batched_tokens"),
])
def test_bad_disaggregated_plans_are_one_line_errors(capsys, tmp_path, text, needle):
    path = _write_plan(tmp_path, text)
    assert main(["estimate", TASK, "--plan", path]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and needle in err, err
    assert path in err or "bad.yaml" in err


def test_plan_flags_with_a_disaggregated_plan_are_refused(capsys, tmp_path):
    path = _write_plan(tmp_path, "family: serving\nprefill: {tp: 4}\ndecode: {tp: 4, max_num_seqs: 8}\n")
    assert main(["estimate", TASK, "--plan", path, "--tp", "2"]) == 2
    assert "prefill and decode blocks" in capsys.readouterr().err


def test_a_plan_made_for_another_problem_is_refused(capsys, tmp_path):
    out_path = tmp_path / "plan.yaml"
    assert main(["solve", TASK, "--disaggregated", "-o", str(out_path)]) == 0
    capsys.readouterr()
    other = tmp_path / "other.yaml"
    other.write_text(open(TASK).read().replace("concurrency: 128", "concurrency: 64"))
    assert main(["estimate", str(other), "--plan", str(out_path)]) == 2
    assert "made for problem" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [
    (["solve", TRAINING, "--disaggregated"], "for inference tasks"),
    (["solve", TASK, "--disaggregated", "--solver", "greedy"], "--solver"),
    (["solve", TASK, "--disaggregated", "--export", "megatron"], "--export"),
    (["compare", TRAINING, "--disaggregated"], "for inference tasks"),
])
def test_refused_flag_combinations(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_an_infeasible_disaggregated_search_names_the_constraint(capsys, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text(open(TASK).read().replace("tpot_s: 50ms", "tpot_s: 1ms"))
    assert main(["solve", str(task), "--disaggregated"]) == 3
    out = capsys.readouterr().out
    assert "INFEASIBLE" in out and "tpot: no decode pool meets the 1.00 ms TPOT target" in out and "ttft:" not in out.split("colocated")[0]


def test_a_time_limit_too_short_says_no_plan_was_found(capsys):
    assert main(["solve", TASK, "--disaggregated", "--time-limit", "0.001"]) == 3
    out = capsys.readouterr().out
    assert "serving-disaggregated: UNKNOWN" in out and "no plan was found" in out


def test_compare_prices_a_given_disaggregated_plan(capsys, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("family: serving\nprefill: {tp: 1, pp: 2, dp: 2, max_num_batched_tokens: 4096}\n"
                    "decode: {tp: 4, dp: 1, max_num_seqs: 128, max_num_batched_tokens: 128}\n")
    assert main(["compare", TASK, "--plan", str(plan), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    given = next(r for r in rows if r["status"] == "GIVEN")
    assert given["output_tokens_per_s_per_gpu"] == pytest.approx(487.4, abs=0.1) and given["feasible"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(plan.read_text().replace("dp: 1, max", "dp: 2, max"))
    assert main(["compare", TASK, "--plan", str(bad)]) == 2
    assert "4 + 8 = 12 GPUs" in capsys.readouterr().err
