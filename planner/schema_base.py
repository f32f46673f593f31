"""Shared pydantic base and unit-carrying field types for every input schema."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from planner.units import parse_quantity


class Spec(BaseModel):
    """Frozen input model that rejects unknown keys (a misspelt YAML key is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _unit(kind: str) -> BeforeValidator:
    return BeforeValidator(lambda value: parse_quantity(value, kind))


Bytes = Annotated[float, _unit("bytes"), Field(ge=0)]
"""Bytes; YAML may say "80GiB", "40GB", or a plain number of bytes."""

PositiveBytes = Annotated[float, _unit("bytes"), Field(gt=0)]

BytesPerSecond = Annotated[float, _unit("bandwidth"), Field(gt=0)]
"""Bytes per second; YAML may say "900GB/s", "400Gbps" (bits), or a number of bytes/s."""

FlopsPerSecond = Annotated[float, _unit("flops"), Field(gt=0)]
"""FLOP/s; YAML may say "989TFLOPS" or a number."""

Seconds = Annotated[float, _unit("time"), Field(ge=0)]
"""Seconds; YAML may say "10us", "2ms", or a number of seconds."""

Fraction = Annotated[float, Field(gt=0, le=1)]
"""A fraction in (0, 1]."""
