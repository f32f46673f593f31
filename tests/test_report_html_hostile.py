"""`planner report` on bad input: one clear message naming the file, flag or field, exit 2, no
traceback, and nothing written (the output path is checked before any work)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.cli import main

SWEEP = Path(__file__).parent / "report_fixtures" / "sweep-small.json"


def run(args, capsys) -> tuple[int, str]:
    code = main(["report", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return code, err


def sweep_with(tmp_path, change) -> str:
    doc = json.loads(SWEEP.read_text())
    change(doc)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def _set(path, value):
    def change(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return change


SWEEP_CASES = {
    "kind": (_set(["kind"], "solve"), "kind: 'solve' is not a result this report reads"),
    "scenarios missing": (_set(["scenarios"], KeyError), "scenarios: Field required"),
    "scenarios not a list": (_set(["scenarios"], {"a": 1}), "scenarios: Input should be a valid list"),
    "name missing": (_set(["scenarios", 1, "name"], KeyError), "scenarios[1].name: Field required"),
    "name with a newline": (_set(["scenarios", 0, "name"], "a\nb"), "scenarios[0].name: Value error, must be one line"),
    "step time a string": (_set(["scenarios", 2, "step_time_s"], "2.6"), "scenarios[2].step_time_s: Input should be a valid number"),
    "negative cost": (_set(["scenarios", 3, "usd_per_mtok"], -1.0), "scenarios[3].usd_per_mtok: Input should be greater than or equal to 0"),
    "pareto not a flag": (_set(["scenarios", 0, "pareto"], "yes"), "scenarios[0].pareto: Input should be a valid boolean"),
    "axes not a mapping": (_set(["scenarios", 0, "axes"], [1, 2]), "scenarios[0].axes: Input should be a valid dictionary"),
}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_bad_sweep_result_names_the_field(case, tmp_path, capsys):
    change, expected = SWEEP_CASES[case]
    path = sweep_with(tmp_path, change)
    code, err = run([path, "-o", str(tmp_path / "r.html")], capsys)
    assert code == 2 and f"{path}: {expected}" in err, err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("text,expected", [
    ('{"kind": "sweep", "scenarios": [], "kind": "x"}', "duplicate"),
    ('{"kind": "sweep", "scenarios": [{"name": "a", "status": "OPTIMAL", "step_time_s": NaN}]}', "NaN"),
    ('{"kind": "sweep", "scenarios": [', ""),
    (b"\xff\xfe{}", "UTF-8"),
])
def test_unreadable_json_names_the_file(text, expected, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = run([str(path), "-o", str(tmp_path / "r.html")], capsys)
    assert code == 2 and str(path) in err and expected in err, err


@pytest.mark.parametrize("args,expected", [
    (["--max-vpp", "8"], "--max-vpp: an LLM search flag; it does not apply to a DLRM task"),
    (["--solvers", "megatron-rules"], "--solvers: 'megatron-rules' is not a DLRM solver"),
    (["--plan", "gpt3-175b-megatron"], "gpt3-175b-megatron"),
])
def test_dlrm_report_refuses_llm_flags_and_plans(args, expected, tmp_path, capsys):
    code, err = run(["mlperf-dlrm-dcnv2-8xh100", *args, "-o", str(tmp_path / "r.html")], capsys)
    assert code == 2 and expected in err, err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("args,expected", [
    (["--plan", "llama3-70b-nemo"], "--plan: llama3-70b-8xh100-serving is an inference task"),
    (["--solvers", "greedy"], "--solvers: llama3-70b-8xh100-serving is an inference task"),
])
def test_inference_report_refuses_training_flags(args, expected, tmp_path, capsys):
    code, err = run(["llama3-70b-8xh100-serving", *args, "-o", str(tmp_path / "r.html")], capsys)
    assert code == 2 and expected in err, err


@pytest.mark.parametrize("output,expected", [
    ("missing/r.html", "directory {tmp}/missing does not exist"),
    (".", "is a directory"),
])
def test_unwritable_output_is_refused_before_any_work(output, expected, tmp_path, capsys, monkeypatch):
    import solvers

    def no_work(*args, **kwargs):  # pragma: no cover (reached only if the check came too late)
        raise AssertionError("solvers ran before the output path was checked")

    monkeypatch.setattr(solvers, "run_solvers", no_work)
    target = output if output == "." else str(tmp_path / output)
    code, err = run(["gpt3-175b-1024xa100", "-o", target], capsys)
    assert code == 2 and "-o/--output:" in err and expected.format(tmp=tmp_path) in err, err


def test_output_cannot_overwrite_an_input(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(SWEEP.read_text())
    code, err = run([str(path), "-o", str(path)], capsys)
    assert code == 2 and "is an input of this command" in err
    assert path.read_text() == SWEEP.read_text()


@pytest.mark.parametrize("args,expected", [
    (["gpt3-175b-1024xa100", "--solvers", "cpsat,nope"], "--solvers: unknown solver 'nope'"),
    (["gpt3-175b-1024xa100", "--solvers", ","], "--solvers: no solver named"),
    (["gpt3-175b-1024xa100", "--solvers", "greedy,greedy"], "--solvers: a solver is named twice"),
    (["no-such-task"], "no-such-task"),
    (["gpt3-175b-1024xa100", "--plan", "no-such-plan"], "no-such-plan"),
    (["gpt3-175b-1024xa100", "--plan", "llama3-70b-nemo"], "llama3-70b-nemo"),
    ([str(SWEEP), "--plan", "gpt3-175b-megatron"], "--plan: "),
    (["gpt3-175b-1024xa100", "--time-limit", "nan"], "--time-limit"),
])
def test_bad_flags_and_files(args, expected, tmp_path, capsys):
    code = None
    try:
        code, err = run([*args, "-o", str(tmp_path / "r.html")], capsys)
    except SystemExit as exc:  # argparse's own usage errors
        code, err = exc.code, capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert not (tmp_path / "r.html").exists()
