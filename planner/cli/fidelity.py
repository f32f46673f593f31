"""`planner validate` (predict published runs) and `planner calibrate` (re-fit efficiencies)."""

from __future__ import annotations

import argparse

from planner.cli.common import dump_json


def run_validate(args: argparse.Namespace) -> int:
    from planner.fidelity.validate import DEFAULT_RUNS, render_validation, validate, validation_json

    results = validate(args.runs or DEFAULT_RUNS)
    if args.json:
        print(dump_json(validation_json(results)))
    else:
        print(render_validation(results, verbose=args.verbose))
    return 0 if any(r.skipped is None for r in results) else 3


def run_calibrate(args: argparse.Namespace) -> int:
    from planner.fidelity.calibrate import DEFAULT_EFFICIENCY, calibrate, render_calibration

    result = calibrate(args.data or DEFAULT_EFFICIENCY)
    print(dump_json(result) if args.json else render_calibration(result))
    return 0


def add_parsers(sub) -> None:
    val = sub.add_parser(
        "validate",
        help="predict published measured runs and report the error (MAPE)",
        description="Predict every usable row of a measured-runs file and compare with the measurement.",
    )
    val.add_argument("--runs", help="measured-runs YAML (default: the copy shipped in planner/data)")
    val.add_argument("--json", action="store_true")
    val.add_argument("--verbose", "-v", action="store_true", help="list each row's assumptions")
    val.set_defaults(func=run_validate)

    cal = sub.add_parser(
        "calibrate",
        help="re-fit GEMM and collective efficiencies from published measurements",
        description="Fit the hardware-efficiency constants used by the device and cluster presets.",
    )
    cal.add_argument("--data", help="efficiency YAML (default: planner/data/efficiency.yaml)")
    cal.add_argument("--json", action="store_true")
    cal.set_defaults(func=run_calibrate)
