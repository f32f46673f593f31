"""Exports parsed by the frameworks' own code: DeepSpeed's DeepSpeedConfig (batch triangle
checked against the plan's data-parallel size, through a single-process gloo group and an
`mpu` reporting that size) and torchtitan 0.2's ConfigManager + ParallelDims (degrees checked
against the world size).

The frameworks pin torch/protobuf versions that clash with OR-Tools, so they live in their own
environment (.venv-frameworks, built by .ci/run; or PLANNER_FRAMEWORKS_PYTHON). Without it these
tests skip.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

from planner.export import ExportError, export

from planner.problem import load_plan, load_problem

from .conftest import PROBLEMS, ROOT


def with_published(solved: dict) -> dict:
    """The solved plans plus the published plans shipped in problems/plans."""
    cases = dict(solved)
    for task, plan in (("gpt3-175b-1024xa100", "gpt3-175b-megatron"), ("llama3-70b-64xh100", "llama3-70b-nemo")):
        cases[f"published-{plan}"] = (load_problem(PROBLEMS / "tasks" / f"{task}.yaml"),
                                      load_plan(PROBLEMS / "plans" / f"{plan}.yaml"))
    return cases

CHECK = ROOT / "planner" / "frameworks" / "framework_check.py"
PYTHON = Path(os.environ.get("PLANNER_FRAMEWORKS_PYTHON", ROOT / ".venv-frameworks" / "bin" / "python"))


@functools.cache
def available(module: str) -> bool:
    if not PYTHON.exists():
        return False
    return subprocess.run([str(PYTHON), "-c", f"import {module}"], capture_output=True).returncode == 0


def exported_files(solved, tmp_path, target, version, size, suffix):
    """(items, expected): every expressible export written to a file, checked with the right
    size and with size + 1 (which the framework must refuse, expected None)."""
    items, expected = [], []
    for task, (problem, plan) in with_published(solved).items():
        try:
            text = export(problem, plan, target, version).text
        except ExportError:
            continue
        path = tmp_path / f"{task}{suffix}"
        path.write_text(text)
        n = size(problem, plan)
        items += [f"{path}:{n}", f"{path}:{n + 1}"]
        expected += [(problem, plan), None]
    return items, expected


def run_check(framework: str, items: list[str]) -> list[dict]:
    out = subprocess.run([str(PYTHON), str(CHECK), framework, *items], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not available("deepspeed"), reason="DeepSpeed environment not installed")
def test_deepspeed_reads_every_expressible_export(solved, tmp_path):
    items, expected = exported_files(solved, tmp_path, "deepspeed", None, lambda pr, pl: pl.dp, ".json")
    assert len([e for e in expected if e]) >= 2
    for result, want in zip(run_check("deepspeed", items), expected, strict=True):
        if want is None:
            assert "train_batch_size is not equal" in result["error"]
            continue
        problem, plan = want
        assert "error" not in result, result
        assert result["world_size"] == plan.dp
        assert result["train_batch_size"] == problem.task.num_sequences
        assert result["train_micro_batch_size_per_gpu"] == plan.micro_batch_size
        assert result["gradient_accumulation_steps"] == plan.num_micro_batches(problem.task.num_sequences)
        assert result["zero_stage"] == plan.zero_stage


@pytest.mark.skipif(not available("torchtitan"), reason="torchtitan environment not installed")
def test_torchtitan_reads_every_expressible_export(solved, tmp_path):
    items, expected = exported_files(solved, tmp_path, "torchtitan", "0.2",
                                     lambda pr, pl: pr.cluster.num_devices, ".toml")
    for result, want in zip(run_check("torchtitan", items), expected, strict=True):
        if want is None:
            assert "Invalid parallel dims" in result["error"]
            continue
        problem, plan = want
        assert "error" not in result, result
        assert result["dp_replicate"] * result["dp_shard"] == plan.dp
        assert (result["tp"], result["cp"], result["pp"]) == (plan.tp, plan.cp, plan.pp)
        assert result["global_batch_size"] == problem.task.num_sequences
        assert result["activation_checkpoint"] == plan.recompute
