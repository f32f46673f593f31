"""Shared pydantic base and unit-carrying field types for every input schema.

Inputs are strict: an integer field takes an integer (not `true`, not "8", not 8.5), a number
field a finite number, a flag a boolean. Quantities with units are converted once, here, and
bounded to physically meaningful ranges, so that nothing downstream meets inf or nan.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from planner.core.units import parse_quantity


class Spec(BaseModel):
    """Frozen input model that rejects unknown keys (a misspelt YAML key is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True,
                              allow_inf_nan=False)


def omit_legacy_defaults(data: Any, defaults: dict[str, Any]) -> Any:
    """A dump without the fields added after inputs were first hashed, where they hold the value
    named in `defaults`: problems that do not use them read (and hash, which plan files carry) as
    they did before the fields existed. For `model_serializer(mode="wrap")` methods."""
    if isinstance(data, dict):
        for key, value in defaults.items():
            if key in data and data[key] == value and type(data[key]) is type(value):
                data.pop(key)
    return data


def _unit(kind: str) -> BeforeValidator:
    return BeforeValidator(lambda value: parse_quantity(value, kind))


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got a boolean ({str(value).lower()})")
    return value


NotBool = BeforeValidator(_no_bool)
"""For Literal integer fields (True == 1 in Python, so Literal[1] would accept true)."""

def _one_line(text: str) -> str:
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        raise ValueError(f"must be one line of printable text (found {bad!r})")
    return text


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_one_line)]
"""A name shown in reports and written into exported files: one printable line (a newline or an
escape sequence in it could forge report lines or break out of a comment in a launch script)."""

Note = Annotated[str, Field(max_length=10_000), AfterValidator(_one_line)]
"""A one-line free-text note (sources, descriptions)."""

Count = Annotated[int, Field(gt=0, le=2**40)]
"""A positive count (layers, heads, sequences...); bounded so products stay exact."""

Bytes = Annotated[float, _unit("bytes"), Field(ge=0, le=2**60)]
"""Bytes; YAML may say "80GiB", "40GB", or a plain number of bytes."""

PositiveBytes = Annotated[float, _unit("bytes"), Field(ge=2**20, le=2**60)]
"""A memory capacity: at least 1 MiB, at most 1 EiB."""

BytesPerSecond = Annotated[float, _unit("bandwidth"), Field(ge=1e3, le=1e16)]
"""Bytes per second; YAML may say "900GB/s", "400Gbps" (bits), or a number of bytes/s (1 kB/s..10 PB/s)."""

FlopsPerSecond = Annotated[float, _unit("flops"), Field(ge=1e6, le=1e21)]
"""FLOP/s; YAML may say "989TFLOPS" or a number (1 MFLOP/s..1 ZFLOP/s)."""

Seconds = Annotated[float, _unit("time"), Field(ge=0, le=1e6)]
"""Seconds; YAML may say "10us", "2ms", or a number of seconds (at most 1e6 s)."""

Fraction = Annotated[float, Field(ge=1e-4, le=1)]
"""A fraction in [0.0001, 1] (an efficiency: zero would make a time infinite)."""


def repeated(items) -> list:
    """The items that occur more than once, sorted (for "given twice" errors)."""
    items = list(items)
    return sorted({x for x in items if items.count(x) > 1})
