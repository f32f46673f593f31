"""Price and power per device (planner/data/device_costs.yaml), and the cost and energy of a step.

Accounting only, no cost model: the step time comes from the solver (which prices plans with
planner.llm.cost); this module multiplies it by what the GPUs cost and draw.

Cost:    usd_per_step  = num_gpus x usd_per_gpu_hour x step_time_s / 3600
Energy:  joules_per_step = num_gpus x board_power_w x step_time_s
Per 1M tokens: divide by tokens_per_step / 1e6 (kWh = J / 3.6e6).

The energy model's assumption, stated: every GPU draws its maximum board power (TDP/TGP, from the
datasheet) for the whole step -- an upper bound on the GPUs' own energy (a GPU waiting in a
pipeline bubble or on a collective draws less). Host CPUs, memory, NICs, switches and cooling
(PUE) are not counted. No constant is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from planner.core.inputs import build, read_yaml
from planner.core.schema import Name, Note, Spec

COSTS_FILE = Path(__file__).resolve().parent.parent / "data" / "device_costs.yaml"
"""The shipped price and power list."""

JOULES_PER_KWH = 3.6e6
SECONDS_PER_HOUR = 3600.0


class DevicePower(Spec):
    """One device's maximum board power."""

    device: Name = Field(description="The device's `name` (problems/devices/*.yaml), matched exactly.")
    board_power_w: float = Field(gt=0, le=100_000, description="Maximum board power (TDP/TGP), watts, datasheet.")
    source: Note = Field(min_length=1, description="Datasheet or secondary source of the figure.")


class PriceList(Spec):
    """One provider's list price per GPU-hour."""

    provider: Name = Field(description="Name used in sweep files (`provider:` axis).")
    kind: Literal["on-demand", "reserved"] = Field(description="No commitment, or a term commitment.")
    read_on: str = Field(description="Date the list was read, YYYY-MM-DD.")
    source: Note = Field(min_length=1, description="URL of the price list (and of any transcription used).")
    note: Note = ""
    usd_per_gpu_hour: dict[Name, float] = Field(description="Device name -> US dollars per GPU-hour.")

    @field_validator("read_on")
    @classmethod
    def _date(cls, value: str) -> str:
        date.fromisoformat(value)
        return value

    @field_validator("usd_per_gpu_hour")
    @classmethod
    def _prices(cls, value: dict[str, float]) -> dict[str, float]:
        for device, price in value.items():
            if not 0 < price <= 10_000:
                raise ValueError(f"{device}: a price per GPU-hour must be in (0, 10000] US dollars, got {price}")
        return value


class DeviceCosts(Spec):
    """The whole file."""

    schema_version: Literal[1]
    devices: list[DevicePower]
    providers: list[PriceList] = Field(min_length=1)

    def power(self, device: str) -> DevicePower | None:
        return next((d for d in self.devices if d.device == device), None)

    def provider(self, name: str) -> PriceList | None:
        return next((p for p in self.providers if p.provider == name), None)


def load_costs(path: str | Path = COSTS_FILE) -> DeviceCosts:
    """The price and power list (InputError naming the file and field when it is bad)."""
    return build(DeviceCosts, read_yaml(Path(path)), str(path))


@dataclass(frozen=True)
class StepEconomics:
    """Cost and energy of one step and per million tokens (None where no price is listed)."""

    usd_per_step: float | None
    usd_per_mtok: float | None
    joules_per_step: float
    kwh_per_mtok: float


def step_economics(num_gpus: int, step_time_s: float, tokens_per_step: int, board_power_w: float,
                   usd_per_gpu_hour: float | None) -> StepEconomics:
    """The formulas of the module docstring."""
    mtok = tokens_per_step / 1e6
    joules = num_gpus * board_power_w * step_time_s
    usd = None if usd_per_gpu_hour is None else num_gpus * usd_per_gpu_hour * step_time_s / SECONDS_PER_HOUR
    return StepEconomics(
        usd_per_step=usd,
        usd_per_mtok=None if usd is None else usd / mtok,
        joules_per_step=joules,
        kwh_per_mtok=joules / JOULES_PER_KWH / mtok,
    )
