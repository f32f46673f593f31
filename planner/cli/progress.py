"""One updating status line on a terminal's standard error, for long commands.

Shown only when standard error is a terminal and the command does not print JSON or a search
log there (`wanted`); each update rewrites the line in place (carriage return) and `clear`
erases it before the result is printed, so piped or redirected output never carries it.
"""

from __future__ import annotations

import sys

WIDTH = 160


def wanted(args) -> bool:
    """Whether a status line belongs on this command's standard error."""
    if getattr(args, "json", False) or getattr(args, "log", False):
        return False
    return is_terminal(sys.stderr)


def is_terminal(stream) -> bool:
    """Whether `stream` is a terminal (False for a closed or unusual stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class StatusLine:
    """`update(text)` rewrites the line; `clear()` erases it."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.width = 0

    def update(self, text: str) -> None:
        text = text[:WIDTH]
        try:
            self.stream.write("\r" + text.ljust(self.width))
            self.stream.flush()
        except (OSError, ValueError):
            return
        self.width = len(text)

    def clear(self) -> None:
        if not self.width:
            return
        try:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        self.width = 0


def search_text(event: dict) -> str:
    """A solver progress event (solvers.base.SolveOptions.progress) as one line."""
    parts = [f"solve: {event['phase']}"]
    if event.get("configurations") is not None:
        parts.append(f"{event['configurations']:,} configurations")
    if event.get("left") is not None:
        parts.append(f"{event['left']:,} left")
    best, bound = event.get("best_s"), event.get("bound_s")
    if best is not None:
        parts.append(f"best {best:.4g} s")
    if bound is not None:
        parts.append(f"bound {bound:.4g} s")
    if best is not None and bound is not None and best > 0:
        parts.append(f"gap {100 * max(0.0, (best - bound) / best):.2f}%")
    parts.append(f"{event['elapsed_s']:.1f} s")
    return " | ".join(parts)
