"""Rows measured under a performance regression that the framework's maintainers documented
(planner/fidelity/regressions.yaml).

`planner validate` still predicts such a row and prints its error, but counts it apart from the
MAPE lines: the cost model prices an implementation working as its maintainers intend, and a
slowdown they filed as a bug is not a fact about the hardware or the implementation. Each entry
cites the public report and the measurement of the same configuration without the regression.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field

from planner.core import files, schema
from planner.core.schema import Spec
from planner.core.errors import InputError
from planner.core.inputs import build

REGRESSIONS = Path(__file__).resolve().parent / "regressions.yaml"


class Regression(Spec):
    id: str = Field(min_length=1)
    source: str = Field(pattern=r"^https://\S+$", description="the maintainers' public report (URL)")
    statement: str = Field(min_length=1, description="what the maintainers state there")
    reference: str = Field(min_length=1, description="the same configuration measured without the regression")


class Regressions(Spec):
    regressions: list[Regression]


def load_regressions(path: Path = REGRESSIONS) -> dict[str, Regression]:
    """The table by row id; a malformed file or a repeated id is an InputError naming the file."""
    data = files.read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with a `regressions` list at the top level, got "
                         f"{'nothing' if data is None else type(data).__name__}")
    table = build(Regressions, data, str(path)).regressions
    ids = [r.id for r in table]
    repeated = schema.repeated(ids)
    if repeated:
        raise InputError(f"{path}: regressions[].id repeated: {', '.join(repeated)}")
    return {r.id: r for r in table}


@cache
def regressions() -> dict[str, Regression]:
    return load_regressions()
