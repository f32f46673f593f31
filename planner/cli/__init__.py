"""Command line: one module per command (estimate, solve, compare, export, validate/calibrate)."""

from __future__ import annotations

import argparse
import sys

from planner.cli import compare, estimate, export, fidelity, solve
from planner.cli.export import check_megatron_flags
from planner.errors import PlannerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planner", description="Parallelism planner for large-model training (cost model and solvers)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    estimate.add_parser(sub)
    solve.add_parser(sub)
    compare.add_parser(sub)
    export.add_parser(sub)
    fidelity.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PlannerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "check_megatron_flags", "main"]
