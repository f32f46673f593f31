"""What every exporter shares: the header, derived batch numbers, the result type."""

from __future__ import annotations

from dataclasses import dataclass, field

from planner import __version__
from planner.llm.cost.step import evaluate
from planner.core.errors import PlannerError
from planner.llm.plan import Plan
from planner.llm.problem import Problem
from planner.core.units import format_bytes, format_seconds


class ExportError(PlannerError):
    """The plan cannot be expressed in the target framework's configuration."""


@dataclass
class Exported:
    """A rendered configuration and the approximations it contains (also in its header)."""

    target: str
    version: str
    text: str
    approximations: list[str] = field(default_factory=list)


_PRICED: dict[tuple[str, str], object] = {}


def priced(problem: Problem, plan: Plan):
    """The cost model's breakdown of the plan, computed once per export (header, warnings)."""
    key = (problem.hash, plan.model_dump_json())
    if key not in _PRICED:
        if len(_PRICED) >= 8:
            _PRICED.clear()
        _PRICED[key] = evaluate(problem, plan)
    return _PRICED[key]


def header(problem: Problem, plan: Plan, target: str, version: str, notes: list[str], comment: str = "#") -> str:
    """Comment lines naming the problem, the plan, the prediction and the planner version."""
    b = priced(problem, plan)
    lines = [
        f"planner {__version__} export for {target} {version}",
        f"problem {problem.hash}: {problem.model.name} on {problem.cluster.num_devices} x "
        f"{problem.cluster.device.name}, {problem.task.num_sequences} x {problem.task.seq_len} tokens/step",
        f"plan: {plan.summary()}",
        f"predicted step {format_seconds(b.step_time_s)}, MFU {100 * b.mfu:.1f}%, "
        f"peak memory {format_bytes(b.peak_memory_bytes)} per GPU",
    ]
    warning = memory_warning(problem, plan)
    if warning:
        lines.append(warning)
    lines += notes
    return "\n".join(f"{comment} {line}" if line else comment for line in lines)


def memory_warning(problem: Problem, plan: Plan) -> str | None:
    """A line for plans predicted not to fit (exported anyway: the user may know better)."""
    b = priced(problem, plan)
    if b.fits:
        return None
    worst = max(b.stages, key=lambda st: st.memory_bytes - st.capacity_bytes)
    return (f"WARNING: predicted not to fit: stage {worst.index} needs {format_bytes(worst.memory_bytes)} of "
            f"{format_bytes(worst.capacity_bytes)} usable per GPU")


def accumulation_steps(problem: Problem, plan: Plan) -> int:
    """Micro-batches per step per data-parallel rank (gradient accumulation)."""
    return plan.num_micro_batches(problem.task.num_sequences)


def recompute_layers(plan: Plan, num_layers: int) -> tuple[int | None, list[str]]:
    """Megatron/Bridge block recompute count: one value for every stage.

    Per-stage counts that differ are exported as their maximum (more recompute, never less
    memory than planned) and reported as an approximation.
    """
    if plan.recompute != "full":
        return None, []
    counts = plan.recomputed_layers(num_layers)
    per_stage = plan.layers_per_stage(num_layers)
    if counts == per_stage and len(set(per_stage)) == 1:
        return per_stage[0] // plan.virtual_stages, []
    top = max(counts)
    notes = []
    if len(set(counts)) > 1:
        notes.append(
            f"APPROXIMATION: per-stage recompute counts {counts} are not expressible; every stage recomputes "
            f"{top} layers (more recompute than planned: slower, never more memory)"
        )
    return max(1, -(-top // plan.virtual_stages)), notes
