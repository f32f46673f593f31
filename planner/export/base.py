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
        f"{problem.cluster.device.name}, {plan.sequences(problem.task)} x {problem.task.seq_len} tokens/step",
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
    return plan.num_micro_batches(plan.sequences(problem.task))


def chunk_layers(layers: list[int], virtual_stages: int, extra_last: bool = False) -> list[int]:
    """Layers of each model chunk in forward order (chunk 0 of every stage, then chunk 1, ...).

    A stage's layers are split as evenly as possible over its chunks, larger chunks first (a dense
    model: the cost model prices a stage by its total layers), or with `extra_last` the later
    chunks one larger (an MoE model: where its dense and MoE layers fall decides a stage's cost,
    and the cost model places them so, as Megatron's DeepSeek-V3 layout "Et|(tt|)*30mL" does;
    planner.llm.cost.blocks.layer_mix).
    """
    v = virtual_stages
    if any(n < v for n in layers):
        raise ExportError(f"stage layers {layers}: a stage holds fewer layers than its {v} virtual stages")
    if extra_last:
        return [n // v + (1 if chunk >= v - n % v else 0) for chunk in range(v) for n in layers]
    return [n // v + (1 if chunk < n % v else 0) for chunk in range(v) for n in layers]


def model_chunk_layers(problem: Problem, plan: Plan) -> list[int]:
    """chunk_layers of the plan's stages, split the way the cost model places the problem's layers."""
    return chunk_layers(plan.layers_per_stage(problem.model.num_layers), plan.virtual_stages,
                        extra_last=problem.model.family == "moe")


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
