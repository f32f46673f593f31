"""The README's deterministic command outputs are today's: the worked example (`planner estimate`)
and the validation table (`planner validate`) are re-run and compared line by line, so a cost-model
change that moves a figure fails here until the README is re-run with it."""

from __future__ import annotations

from pathlib import Path

from planner.cli import main

from .conftest import PROBLEMS

README = Path(__file__).resolve().parent.parent / "README.md"


def block_starting(first: str) -> list[str]:
    """The lines of the README code block whose first line starts with `first`."""
    lines = README.read_text().split("\n")
    for i, line in enumerate(lines):
        if line.startswith(first) and lines[i - 1].startswith("```"):
            end = next(j for j in range(i, len(lines)) if lines[j].startswith("```"))
            return lines[i:end]
    raise AssertionError(f"no README block starts with {first!r}")


def output_of(argv: list[str], capsys) -> list[str]:
    main(argv)
    return capsys.readouterr().out.rstrip("\n").split("\n")


def test_the_worked_example_is_todays_estimate(capsys):
    """README "Worked example": every shown line in order (the block elides middle stages as '...')."""
    shown = block_starting("problem  GPT-3 175B on 1024 x A100-SXM4-80GB (DGX-A100-80GB)")
    live = output_of(["estimate", str(PROBLEMS / "tasks" / "gpt3-175b-1024xa100.yaml"), "--plan",
                      str(PROBLEMS / "plans" / "gpt3-175b-megatron.yaml")], capsys)
    position = 0
    for line in shown:
        if line == "...":
            continue
        assert line in live[position:], f"README line not in today's output (or out of order): {line!r}"
        position = live.index(line, position) + 1


def test_the_validation_table_is_todays(capsys):
    """README "Accuracy against published runs": the whole `planner validate` output."""
    shown = block_starting("row                                                metric")
    assert shown == output_of(["validate"], capsys)
