"""Human units in YAML ("80GiB", "900GB/s", "400Gbps", "989TFLOPS", "10us") converted once.

Every quantity inside the planner is in base SI units: bytes, bytes per second, FLOP/s,
seconds. Strings are accepted only at the input boundary (pydantic validators call these
functions); numbers pass through unchanged and are taken to be in the base unit already.
"""

from __future__ import annotations

import math
import re

_NUMBER = r"(-?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_PATTERN = re.compile(r"^\s*" + _NUMBER + r"\s*([A-Za-z/]*)\s*$")

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}

BYTE_UNITS: dict[str, float] = {"B": 1.0}
for _p, _f in _DECIMAL.items():
    if _p:
        BYTE_UNITS[_p + "B"] = _f
for _p, _f in _BINARY.items():
    BYTE_UNITS[_p + "B"] = float(_f)

BANDWIDTH_UNITS: dict[str, float] = {}
for _p, _f in _DECIMAL.items():
    BANDWIDTH_UNITS[_p + "B/s"] = _f
    BANDWIDTH_UNITS[_p + "bps"] = _f / 8.0
    BANDWIDTH_UNITS[_p + "bit/s"] = _f / 8.0
for _p, _f in _BINARY.items():
    BANDWIDTH_UNITS[_p + "B/s"] = float(_f)

FLOPS_UNITS: dict[str, float] = {}
for _p, _f in _DECIMAL.items():
    FLOPS_UNITS[_p + "FLOPS"] = _f
    FLOPS_UNITS[_p + "FLOP/s"] = _f

TIME_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}

COUNT_UNITS: dict[str, float] = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}

KINDS: dict[str, dict[str, float]] = {
    "bytes": BYTE_UNITS,
    "bandwidth": BANDWIDTH_UNITS,
    "flops": FLOPS_UNITS,
    "time": TIME_UNITS,
    "count": COUNT_UNITS,
}


def parse_quantity(value: object, kind: str) -> float:
    """Converts a number or a string with a unit of the given kind to the base unit.

    Args:
        value: a number (already in the base unit) or a string such as "80GiB".
        kind: one of "bytes", "bandwidth", "flops", "time", "count".

    Returns:
        The value in the base unit (bytes, bytes/s, FLOP/s, seconds, or a plain count).

    Raises:
        ValueError: unknown unit, malformed string, or a negative value; the message lists
            the accepted units.
    """
    units = KINDS[kind]
    if isinstance(value, bool):
        raise ValueError(f"expected a {kind} quantity, got a boolean")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    elif isinstance(value, str):
        match = _PATTERN.match(value) if len(value) <= 100 else None
        if not match:
            raise ValueError(f"cannot read {_shown(value)} as a {kind} quantity (e.g. {_example(kind)})")
        number_text, unit = match.groups()
        if unit not in units:
            accepted = ", ".join(sorted(u for u in units if u))
            raise ValueError(f"unknown {kind} unit {_shown(unit)} in {_shown(value)}; accepted: {accepted}")
        number = float(number_text) * units[unit]
    else:
        raise ValueError(f"expected a number or a string with a unit, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError(f"{_shown(value)} is not a finite {kind} quantity")
    if number < 0:
        raise ValueError(f"{kind} quantity must be >= 0, got {_shown(value)}")
    return number


def _shown(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= 60 else text[:60] + "...")


def _example(kind: str) -> str:
    return {
        "bytes": '"80GiB"',
        "bandwidth": '"900GB/s" or "400Gbps"',
        "flops": '"989TFLOPS"',
        "time": '"10us"',
        "count": '"4M"',
    }[kind]


def format_bytes(num_bytes: float) -> str:
    """Formats bytes in GiB (two decimals), MiB or KiB (one) or bytes (binary units, as nvidia-smi
    and torch do); a size under 1 MiB keeps its digits (a nearly full headroom leaves KiB, not
    "0.0 MiB")."""
    if num_bytes >= 2**30:
        return f"{num_bytes / 2**30:.2f} GiB"
    if num_bytes >= 2**20 or num_bytes == 0:
        return f"{num_bytes / 2**20:.1f} MiB"
    if num_bytes >= 2**10:
        return f"{num_bytes / 2**10:.1f} KiB"
    return f"{num_bytes:.0f} B"


def format_seconds(seconds: float) -> str:
    """Formats a duration with a unit that keeps three significant figures readable."""
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
