"""Files and streams we write: atomic plan/export files, byte-identical plans, strict JSON."""

from __future__ import annotations

import json
import os

import pytest

from planner.core import files
from planner.cli import main
from planner.core.errors import InputError

from .conftest import PROBLEMS

LLAMA8 = str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml")


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "plan.yaml"
    target.write_text("the old plan\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(InputError, match=r"plan.yaml: cannot write file \(No space left on device\); nothing"):
        files.write_atomic(target, "the new plan\n")
    assert target.read_text() == "the old plan\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]  # no temporary file left behind


def test_a_write_replaces_the_file_and_keeps_its_mode(tmp_path):
    target = tmp_path / "plan.yaml"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    files.write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert (target.stat().st_mode & 0o777) == 0o640


def test_solve_prints_the_plan_before_a_write_that_fails(tmp_path, monkeypatch, capsys):
    def refuse(path, text, inputs=()):
        raise InputError(f"{path}: cannot write file (Read-only file system); nothing was changed")

    monkeypatch.setattr(files, "write_atomic", refuse)
    code = main(["solve", LLAMA8, "-o", str(tmp_path / "plan.yaml")])
    out, err = capsys.readouterr()
    assert code == 2
    assert "solver cpsat: OPTIMAL" in out and "step time" in out  # the answer is not lost
    assert "Read-only file system" in err


def test_the_output_path_is_checked_before_the_search(tmp_path, capsys, monkeypatch):
    import solvers

    def never(*_):
        raise AssertionError("the solver ran")

    monkeypatch.setattr(solvers.SOLVERS["cpsat"], "solve", never)
    assert main(["solve", LLAMA8, "-o", str(tmp_path / "no" / "plan.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_the_same_problem_gives_a_byte_identical_plan_file(tmp_path, capsys, suffix):
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    assert main(["solve", LLAMA8, "--seed", "3", "--workers", "2", "-o", str(first)]) == 0
    assert main(["solve", LLAMA8, "--seed", "3", "--workers", "2", "-o", str(second)]) == 0
    capsys.readouterr()
    assert first.read_bytes() == second.read_bytes()
    assert b"wall_time" not in first.read_bytes()


def test_export_writes_atomically_and_refuses_its_own_input(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text((PROBLEMS / "plans" / "llama3-70b-nemo.yaml").read_text())
    task = str(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")
    before = plan.read_text()
    assert main(["export", str(plan), "--task", task, "--to", "megatron", "-o", str(plan)]) == 2
    assert plan.read_text() == before
    out = tmp_path / "args.sh"
    assert main(["export", str(plan), "--task", task, "--to", "megatron", "-o", str(out)]) == 0
    assert "--tensor-model-parallel-size" in out.read_text()
    capsys.readouterr()


def test_json_outputs_are_strict(capsys):
    assert main(["estimate", LLAMA8, "--tp", "8", "--sp", "--json"]) in (0, 3)
    strict_json(capsys.readouterr().out)
    assert main(["solve", LLAMA8, "--json"]) == 0
    solved = strict_json(capsys.readouterr().out)
    assert solved["status"] == "OPTIMAL" and solved["plan"]["tp"] >= 1
    assert main(["compare", LLAMA8, "--solvers", "megatron-rules,fsdp-only", "--json"]) == 0
    strict_json(capsys.readouterr().out)
    assert main(["validate", "--json"]) == 0
    strict_json(capsys.readouterr().out)


def test_solve_json_with_export_is_one_json_document(capsys):
    assert main(["solve", LLAMA8, "--json", "--export", "torchtitan"]) == 0
    document = strict_json(capsys.readouterr().out)
    assert document["export"]["target"] == "torchtitan" and "[parallelism]" in document["export"]["text"]


def test_finite_replaces_non_finite_numbers():
    from planner.cli.common import dump_json

    assert strict_json(dump_json({"a": float("inf"), "b": [float("nan"), 1.0]})) == {"a": None, "b": [None, 1.0]}


def test_an_output_symlink_is_written_through(tmp_path, capsys):
    real = tmp_path / "real.yaml"
    real.write_text("old\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    assert main(["solve", LLAMA8, "-o", str(link)]) == 0
    capsys.readouterr()
    assert link.is_symlink() and "format_version" in real.read_text()


def test_the_json_suffix_is_case_insensitive(tmp_path, capsys):
    out = tmp_path / "plan.JSON"
    assert main(["solve", LLAMA8, "-o", str(out)]) == 0
    capsys.readouterr()
    assert strict_json(out.read_text())["format_version"] == 1


def test_a_plan_the_export_cannot_express_is_still_printed_and_saved(tmp_path, capsys):
    """Llama-3 70B's optimum interleaves its pipeline (and recomputes a different number of layers
    per stage): DeepSpeed's pipeline engine can express neither."""
    out = tmp_path / "plan.yaml"
    code = main(["solve", str(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml"), "--export", "deepspeed", "-o", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 4
    assert "solver cpsat: OPTIMAL" in stdout and "step time" in stdout
    assert "error: --export deepspeed:" in err and ("cannot be expressed" in err or "not available in DeepSpeed" in err)
    assert "format_version" in out.read_text()


def test_the_search_log_goes_to_standard_error(capsys):
    assert main(["solve", LLAMA8, "--log", "--json"]) == 0
    out, err = capsys.readouterr()
    assert strict_json(out)["status"] == "OPTIMAL"
    assert "CP-SAT" in err


@pytest.mark.parametrize(("redirect", "code", "says"), [
    (">&-", 141, "standard output is closed"),
    ("> /dev/full", 74, "cannot write standard output (No space left on device)"),
])
def test_an_unwritable_standard_output_is_an_exit_code_not_a_traceback(redirect, code, says):
    import subprocess
    import sys

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    command = f"{sys.executable} -m planner.cli estimate {LLAMA8} --tp 8 --sp {redirect}"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
