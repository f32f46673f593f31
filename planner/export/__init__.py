"""Exporters: a plan as the configuration a training framework takes.

One module per framework, all behind `export(problem, plan, target, version)`. Anything a
target cannot express is either an ExportError (the plan cannot be run there as planned) or an
explicit approximation that is printed in the header and returned to the caller.
"""

from __future__ import annotations

from planner.export.base import Exported, ExportError, header
from planner.export.bridge import export_megatron_bridge
from planner.export.deepspeed import export_deepspeed
from planner.export.megatron import export_megatron
from planner.export.torchtitan import export_torchtitan

TARGETS = {
    "megatron": export_megatron,
    "megatron-bridge": export_megatron_bridge,
    "deepspeed": export_deepspeed,
    "torchtitan": export_torchtitan,
}


def export(problem, plan, target: str, version: str | None = None) -> Exported:
    """Renders `plan` for `target` (see TARGETS); raises ExportError when it cannot."""
    if target not in TARGETS:
        raise ExportError(f"unknown export target {target!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[target](problem, plan, version)


__all__ = ["TARGETS", "Exported", "ExportError", "export", "header"]
