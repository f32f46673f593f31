"""Command line: one module per command (estimate, solve, compare, export, validate/calibrate).

Exit codes (every command): 0 done; 2 bad input (the message names the file or flag and the
field), including an output path that cannot be written; 3 no result (estimate: the plan does
not fit in memory; solve: no plan found; compare: no method found a plan that fits; validate: no
row could be predicted); 4 the export target cannot express the plan; 70 an internal error (a
bug: please report it with the command line); 74 standard output could not be written (disk
full, I/O error); 130 interrupted (Ctrl-C); 141 standard output was closed (e.g. `| head`).

This module imports only the standard library at load time: the commands (numpy, pydantic,
OR-Tools: about 0.6 s) are imported inside `main`, where a Ctrl-C is an "interrupted" exit and
not a traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import time
import traceback

EXIT_OK, EXIT_BAD_INPUT, EXIT_NO_RESULT, EXIT_NOT_EXPRESSIBLE = 0, 2, 3, 4
EXIT_INTERNAL, EXIT_OUTPUT_FAILED, EXIT_INTERRUPTED, EXIT_CLOSED_OUTPUT = 70, 74, 130, 141


def build_parser() -> argparse.ArgumentParser:
    from planner.cli import compare, estimate, export, fidelity, report, solve, sweep

    parser = argparse.ArgumentParser(
        prog="planner", description="Parallelism planner for large-model training (cost model and solvers).",
        epilog="Exit codes: 0 done, 2 bad input, 3 no result (no plan / does not fit), 4 not expressible in "
        "the export target, 70 internal error, 74 output not written, 130 interrupted, 141 output closed.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    estimate.add_parser(sub)
    solve.add_parser(sub)
    compare.add_parser(sub)
    export.add_parser(sub)
    fidelity.add_parsers(sub)
    report.add_parser(sub)
    sweep.add_parser(sub)
    return parser


PATH_ARGUMENTS = {"task": "task", "plan": "plan file (--plan)", "runs": "--runs", "data": "--data", "output": "--output",
                  "input": "TASK_OR_SWEEP_RESULT", "sweep": "sweep"}
"""Arguments that name a file (an empty string would otherwise be read as the current directory)."""


def _refuse_empty_paths(args) -> None:
    from planner.core.errors import InputError

    for attr, name in PATH_ARGUMENTS.items():
        value = getattr(args, attr, None)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            raise InputError(f"{name}: empty path; give a file (or, where allowed, a shipped preset's name)")


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns its exit code (argparse's own errors exit 2 via SystemExit)."""
    started = time.perf_counter()
    real_out, real_err = sys.stdout, sys.stderr
    if real_err is None:  # started with standard error closed: messages go nowhere
        real_err = io.StringIO()
    if real_out is None:  # started with standard output closed
        print("error: standard output is closed", file=real_err)
        return EXIT_CLOSED_OUTPUT
    from planner.cli.output import SafeStream

    sys.stdout, sys.stderr = SafeStream(real_out), SafeStream(real_err)
    try:
        from planner.cli import common
        from planner.core.errors import PlannerError
        from planner.export.base import ExportError

        # --time-limit counts from the process start for a real command line, from this call in-process.
        common.COMMAND_START[0] = common.process_start() if argv is None else started
        args = build_parser().parse_args(argv)
        try:
            _refuse_empty_paths(args)
            code = args.func(args)
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = EXIT_NOT_EXPRESSIBLE
        except PlannerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = EXIT_BAD_INPUT
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout(real_out)
        return EXIT_CLOSED_OUTPUT
    except (SystemExit, GeneratorExit):
        raise
    except OSError as exc:  # the only OSErrors left are writes to standard output (inputs are checked)
        _silence_stdout(real_out)
        print(f"error: cannot write standard output ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_OUTPUT_FAILED
    except BaseException as exc:  # noqa: BLE001 (the last line of defence: a bug, reported as one)
        if os.environ.get("PLANNER_DEBUG"):
            traceback.print_exc()
        print(f"internal error (a bug in planner; please report it with the command line): "
              f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
              + ("" if os.environ.get("PLANNER_DEBUG") else "; set PLANNER_DEBUG=1 for the traceback"),
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        sys.stdout, sys.stderr = real_out, real_err
        if argv is None:  # a real command: its answer is out; a Ctrl-C now must not turn the exit into a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _silence_stdout(stream) -> None:
    """After a failed or closed standard output: point it at /dev/null (and drop what is buffered)
    so that the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


__all__ = ["build_parser", "main"]
