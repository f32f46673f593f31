"""Result types: where a step's time goes and what each stage's memory holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.llm.cost.memory import StageMemory


@dataclass(frozen=True)
class StageReport:
    """One pipeline stage: its layers, time per micro-batch and peak memory per GPU."""

    index: int
    layers: int
    recomputed_layers: int
    has_embedding: bool
    has_head: bool
    forward_s: float
    backward_s: float
    memory: StageMemory
    capacity_bytes: float
    moe_layers: int = 0
    mtp_layers: int = 0

    @property
    def memory_bytes(self) -> float:
        return float(self.memory.total_bytes)

    @property
    def fits(self) -> bool:
        return self.memory_bytes <= self.capacity_bytes


@dataclass(frozen=True)
class Breakdown:
    """Step time split into parts that sum to `step_time_s`.

    step_time_s = compute_s + recompute_s + tp_exposed_s + cp_exposed_s + ep_exposed_s
                  + pp_p2p_s + zero_exposed_s + bubble_s + dp_exposed_s + embedding_sync_s
                  + optimizer_s
    zero_exposed_s is the per-micro-batch ZeRO-2/3 traffic left exposed; ep_exposed_s the MoE
    token dispatcher's (all-to-all, ETP and all-gather collectives). The first seven are the critical (slowest) stage's per-micro-batch parts times the number
    of micro-batches (the steady state); bubble_s is warm-up and cool-down; dp_exposed_s is
    the data-parallel gradient reduction and parameter gather left after overlap with the
    last backward / first forward; embedding_sync_s the tied-embedding gradient all-reduce
    between the first and last stages; optimizer_s is the memory-bound Adam step.
    """

    step_time_s: float
    compute_s: float
    recompute_s: float
    tp_exposed_s: float
    cp_exposed_s: float
    pp_p2p_s: float
    zero_exposed_s: float
    bubble_s: float
    dp_exposed_s: float
    embedding_sync_s: float
    optimizer_s: float
    exposed_by_axis_tier: dict[str, dict[str, float]]
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    model_flops_per_step: float
    hardware_flops_per_step: float
    mfu: float
    hfu: float
    num_micro_batches: int
    critical_stage: int
    stages: list[StageReport] = field(default_factory=list)
    ep_exposed_s: float = 0.0

    PARTS = (
        "compute_s",
        "recompute_s",
        "tp_exposed_s",
        "cp_exposed_s",
        "ep_exposed_s",
        "pp_p2p_s",
        "zero_exposed_s",
        "bubble_s",
        "dp_exposed_s",
        "embedding_sync_s",
        "optimizer_s",
    )

    @property
    def parts(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.PARTS}

    @property
    def peak_memory_bytes(self) -> float:
        return max(stage.memory_bytes for stage in self.stages)

    @property
    def fits(self) -> bool:
        return all(stage.fits for stage in self.stages)
