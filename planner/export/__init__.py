"""Exporters: a plan as the configuration a training framework takes.

One module per framework, all behind `export(problem, plan, target, version)`. Anything a
target cannot express is either an ExportError (the plan cannot be run there as planned) or an
explicit approximation that is printed in the header and returned to the caller.
"""

from __future__ import annotations

from planner.core.errors import InputError
from planner.export.base import Exported, ExportError, header, memory_warning
from planner.export.bridge import BRIDGE_VERSIONS, export_megatron_bridge
from planner.export.deepspeed import DEEPSPEED_VERSIONS, export_deepspeed
from planner.export.megatron import MEGATRON_VERSIONS, export_megatron
from planner.export.torchtitan import VERSIONS as TORCHTITAN_VERSIONS
from planner.export.torchtitan import export_torchtitan

TARGETS = {
    "megatron": export_megatron,
    "megatron-bridge": export_megatron_bridge,
    "deepspeed": export_deepspeed,
    "torchtitan": export_torchtitan,
}


VERSIONS = {
    "megatron": MEGATRON_VERSIONS,
    "megatron-bridge": BRIDGE_VERSIONS,
    "deepspeed": DEEPSPEED_VERSIONS,
    "torchtitan": TORCHTITAN_VERSIONS,
}
"""Framework versions each target writes for (each exporter names its default)."""


def check_version(target: str, version: str | None) -> None:
    """A --target-version the target does not write for is bad input (InputError)."""
    if version is not None and version not in VERSIONS[target]:
        raise InputError(f"--target-version: {target} exports are written for {', '.join(VERSIONS[target])}, "
                         f"not {version[:40]!r}")


def export(problem, plan, target: str, version: str | None = None) -> Exported:
    """Renders `plan` for `target` (see TARGETS); raises ExportError when it cannot."""
    if target not in TARGETS:
        raise ExportError(f"unknown export target {target!r}; choose from {', '.join(TARGETS)}")
    if plan.recompute == "full" and plan.recompute_num_layers is not None and not any(plan.recompute_num_layers):
        # Full recompute of no layer is no recompute (same time, same memory): export it as such.
        plan = plan.model_copy(update={"recompute": "none", "recompute_num_layers": None})
    result = TARGETS[target](problem, plan, version)
    warning = memory_warning(problem, plan)
    if warning:
        result.approximations.append(warning)
    mismatch = profile_mismatch(problem, target)
    if mismatch:
        result.approximations.append(mismatch)
    return result


PROFILE_TARGETS = {
    "megatron-core": ("megatron", "megatron-bridge"),
    "megatron-lm": ("megatron", "megatron-bridge"),
    "megatron-deepspeed": ("deepspeed",),
    "torchtitan": ("torchtitan",),
}
"""The export targets that run a framework profile's implementation (planner/llm/frameworks.py)."""


def profile_mismatch(problem, target: str) -> str | None:
    """A note when the plan was priced with another framework's profile than the target runs:
    the prediction in the header assumed that framework's kernels, fusions and overlaps."""
    profile = problem.task.framework.profile
    family = profile.split("@")[0]
    if target in PROFILE_TARGETS.get(family, (target,)):
        return None
    return (f"NOTE: the plan was priced with the {profile} framework profile (the task's framework); {target} runs "
            f"its own kernels and overlaps, so the predicted step may differ: set the task's framework to the "
            f"target's profile and re-solve to price it as {target} runs it")


__all__ = ["TARGETS", "VERSIONS", "Exported", "ExportError", "check_version", "export", "header"]
