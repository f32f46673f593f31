"""A parallel plan: degrees, schedule, stage partition, ZeRO, micro-batching, recompute, mapping.

A plan is input (`estimate --plan`) and output (solvers). `check_plan` lists every way a
plan is inconsistent with its problem; the cost model only prices plans that pass it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator

from planner.core.provenance import Provenance
from planner.core.schema import NotBool, Spec, repeated
from planner.llm.task import DEFAULT_RECOMPUTE_MODULES, Axis, Dispatcher, Recompute, RecomputeModule, Schedule

if TYPE_CHECKING:
    from planner.llm.problem import Problem

DEFAULT_AXIS_ORDER: tuple[Axis, ...] = ("tp", "cp", "dp", "pp")


class Plan(Spec):
    """One parallelization of a training step."""

    tp: int = Field(default=1, gt=0, le=2**24, description="Tensor-parallel degree.")
    sp: bool = Field(default=False, description="Sequence parallelism on the TP group.")
    tp_comm_overlap: bool = Field(default=False, description="TP collectives overlapped with GEMMs.")
    cp: int = Field(default=1, gt=0, le=2**24, description="Context-parallel degree (ring attention).")
    pp: int = Field(default=1, gt=0, le=2**24, description="Pipeline stages.")
    schedule: Schedule = "1f1b"
    virtual_stages: int = Field(default=1, gt=0, le=2**16, description="Model chunks per rank (interleaved).")
    stage_layers: list[Annotated[int, Field(gt=0, le=2**16)]] | None = Field(
        default=None, description="Transformer layers per pipeline stage; null = balanced."
    )
    dp: int = Field(default=1, gt=0, le=2**24, description="Data-parallel degree (replicas x shards).")
    zero_stage: Annotated[Literal[0, 1, 2, 3], NotBool] = 0
    zero_shard_size: int | None = Field(
        default=None, gt=0, le=2**24, description="HSDP: shard within groups of this size, replicate across."
    )
    micro_batch_size: int = Field(default=1, gt=0, le=2**40, description="Sequences per micro-batch.")
    global_batch_size: int | None = Field(
        default=None, gt=0, le=2**40,
        description="Sequences per step, where the task leaves the batch to the solver (a range); "
        "null = the task's batch (for a range, its largest).")
    ep: int = Field(default=1, gt=0, le=2**16, description="Expert-parallel degree (MoE layers).")
    etp: int = Field(default=1, gt=0, le=2**16, description="Expert tensor-parallel degree (MoE layers).")
    dispatcher: Dispatcher = Field(
        default="alltoall",
        description="MoE token dispatcher: alltoall over EP, allgather over ETP x EP, or flex "
        "(DeepEP/HybridEP: one fused dispatch that crosses each slower tier once per token and node).",
    )
    ep_comm_overlap: bool = Field(
        default=False,
        description="EP all-to-alls of one micro-batch hidden under another's compute "
        "(Megatron-Core --overlap-moe-expert-parallel-comm).",
    )
    recompute: Recompute = "none"
    recompute_num_layers: list[Annotated[int, Field(ge=0, le=2**16)]] | None = Field(
        default=None, description="Per stage: layers fully recomputed (full mode); null = all."
    )
    recompute_modules: list[RecomputeModule] | None = Field(
        default=None, min_length=1,
        description="With recompute: selective, the block parts re-run in the backward (Megatron-Core "
        "--recompute-modules): core_attn, layernorm, moe_act, mla_up_proj, mlp; null = core_attn "
        "(Megatron's default). Priced for given plans; the search uses the default.",
    )
    axis_order: list[Axis] = Field(
        default_factory=lambda: list(DEFAULT_AXIS_ORDER),
        description="Axes from innermost (fastest tier) to outermost.",
    )
    provenance: Provenance = Provenance()

    @field_validator("axis_order")
    @classmethod
    def _check_axis_order(cls, order: list[Axis]) -> list[Axis]:
        if sorted(order) != sorted(DEFAULT_AXIS_ORDER):
            raise ValueError(f"must be a permutation of {list(DEFAULT_AXIS_ORDER)}")
        return order

    @model_validator(mode="after")
    def _check_self(self) -> Plan:
        if self.schedule == "1f1b" and self.virtual_stages != 1:
            raise ValueError("virtual_stages > 1 needs schedule: interleaved")
        if self.sp and self.tp == 1:
            raise ValueError("sp: true needs tp > 1")
        if self.ep_comm_overlap:
            # Megatron-Core's checks for --overlap-moe-expert-parallel-comm (core_v0.16.1).
            if self.ep == 1 or self.dispatcher == "allgather":
                raise ValueError("ep_comm_overlap: true needs ep > 1 and dispatcher alltoall or flex")
            if self.pp > 1 and self.schedule != "interleaved":
                raise ValueError("ep_comm_overlap: true with pp > 1 needs schedule: interleaved "
                                 "(Megatron-Core overlaps the all-to-alls only with virtual pipeline stages)")
            if self.recompute == "full":
                raise ValueError("ep_comm_overlap: true does not combine with recompute: full (Megatron-Core)")
        if self.dispatcher == "flex" and self.etp > 1:
            raise ValueError("dispatcher: flex is priced with etp: 1 only (DeepEP dispatches over the EP group)")
        if self.recompute_modules is not None:
            if self.recompute != "selective":
                raise ValueError("recompute_modules needs recompute: selective (Megatron-Core's "
                                 "--recompute-modules applies to --recompute-granularity selective)")
            twice = repeated(self.recompute_modules)
            if twice:
                raise ValueError(f"recompute_modules lists {twice[0]} twice")
        if self.tp_comm_overlap and not self.sp:
            raise ValueError("tp_comm_overlap: true needs sp: true (and tp > 1): Megatron overlaps the TP "
                             "all-gather/reduce-scatter of sequence parallelism")
        return self

    @property
    def num_gpus(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    @property
    def shard_size(self) -> int:
        """Devices that share one ZeRO shard group (= dp unless HSDP)."""
        if self.zero_stage == 0:
            return 1
        return self.zero_shard_size if self.zero_shard_size is not None else self.dp

    @property
    def recompute_modules_list(self) -> list[str]:
        """The modules as given (Megatron's default when not), for exports."""
        return list(self.recompute_modules or DEFAULT_RECOMPUTE_MODULES)

    @property
    def selective_modules(self) -> tuple[str, ...]:
        """The parts selective recompute re-runs (sorted; Megatron's default when not given)."""
        return tuple(sorted(self.recompute_modules or DEFAULT_RECOMPUTE_MODULES))

    @property
    def edp(self) -> int:
        """Expert data-parallel degree: world / (etp * ep * pp) (Megatron-Core MoE folding)."""
        return max(self.tp * self.cp * self.dp // (self.etp * self.ep), 1)

    def degree(self, axis: Axis) -> int:
        return {"tp": self.tp, "cp": self.cp, "pp": self.pp, "dp": self.dp}[axis]

    def layers_per_stage(self, num_layers: int) -> list[int]:
        """Layers on each pipeline stage (balanced when not given)."""
        if self.stage_layers is not None:
            return list(self.stage_layers)
        base, extra = divmod(num_layers, self.pp)
        return [base + (1 if i < extra else 0) for i in range(self.pp)]

    def recomputed_layers(self, num_layers: int, moe_layers: list[int] | None = None) -> list[int]:
        """Per stage, how many layers run in full-recompute mode (all of them, or with
        `moe_layers` per stage of an MoE model, all its MoE blocks, unless given)."""
        stages = self.layers_per_stage(num_layers) if moe_layers is None else list(moe_layers)
        if self.recompute != "full":
            return [0] * self.pp
        if self.recompute_num_layers is None:
            return stages
        return list(self.recompute_num_layers)

    def num_micro_batches(self, num_sequences: int) -> int:
        return num_sequences // (self.dp * self.micro_batch_size)

    def sequences(self, task) -> int:
        """Sequences per step of this plan on `task` (a TrainingTask): its own global batch,
        else the task's (for a range, the largest)."""
        return self.global_batch_size if self.global_batch_size is not None else task.num_sequences

    def batch_weight(self, task) -> float:
        """Reference batch / this plan's batch: the factor that turns its step time into the
        time of the task's reference batch (1 for a fixed batch). The solvers minimize the step
        time times this factor, i.e. maximize tokens per second when the batch is free."""
        return task.num_sequences / self.sequences(task)

    def summary(self) -> str:
        parts = [f"TP{self.tp}{'+SP' if self.sp else ''}", f"CP{self.cp}", f"PP{self.pp}"]
        if self.schedule == "interleaved":
            parts[-1] += f"x{self.virtual_stages}v"
        zero = f"ZeRO-{self.zero_stage}" if self.zero_stage else "DDP"
        if self.zero_shard_size and self.zero_stage:
            zero += f"/HSDP{self.zero_shard_size}"
        parts.append(f"DP{self.dp}({zero})")
        if self.ep > 1 or self.etp > 1:
            parts.append(f"EP{self.ep}xETP{self.etp}({self.dispatcher}{'+overlap' if self.ep_comm_overlap else ''})")
        rc = self.recompute
        if self.recompute == "selective" and self.selective_modules != DEFAULT_RECOMPUTE_MODULES:
            rc += "(" + ",".join(self.selective_modules) + ")"
        parts += [f"mbs{self.micro_batch_size}", f"rc:{rc}"]
        if self.global_batch_size is not None:
            parts.append(f"gbs{self.global_batch_size}")
        return " ".join(parts)


def check_plan(plan: Plan, problem: Problem) -> list[str]:
    """Every way `plan` is inconsistent with `problem` (empty list = valid).

    Rules: degrees multiply to the device count; heads (query and kv) divide by TP; layers
    split into pp * virtual_stages chunks; the batch splits into dp * micro-batch; the
    sequence splits into 2 * cp chunks (load-balanced causal ring); ZeRO shard group divides dp;
    user constraints hold; each axis group fits the tiers given its position in axis_order.
    """
    model, task, cluster = problem.model, problem.task, problem.cluster
    errors: list[str] = []
    if plan.num_gpus != cluster.num_devices:
        errors.append(
            f"tp*cp*pp*dp = {plan.tp}*{plan.cp}*{plan.pp}*{plan.dp} = {plan.num_gpus} "
            f"!= num_devices ({cluster.num_devices})"
        )
    if model.num_heads % plan.tp:
        errors.append(f"num_heads ({model.num_heads}) is not divisible by tp ({plan.tp})")
    if model.kv_heads % plan.tp and plan.tp % model.kv_heads:
        errors.append(f"num_kv_heads ({model.kv_heads}) and tp ({plan.tp}) do not divide one another")
    if task.seq_len % (2 * plan.cp) and plan.cp > 1:
        errors.append(f"seq_len ({task.seq_len}) is not divisible by 2*cp ({2 * plan.cp})")
    if plan.cp > 1 and model.sliding_window is not None and task.framework.facts.cp_comm_type == "p2p":
        errors.append("cp > 1 with sliding-window attention and the p2p ring: Transformer Engine takes a window "
                      "under CP only with cp_comm_type a2a or allgather (context_parallel.py v2.9); set the "
                      "framework option cp_comm_type or use cp: 1")
    if task.seq_len > model.max_seq_len:
        errors.append(f"seq_len ({task.seq_len}) exceeds the model's max_seq_len ({model.max_seq_len})")
    seqs = plan.sequences(task)
    if plan.global_batch_size is not None and not task.admits_batch(plan.global_batch_size):
        low, high, step = task.batch_range
        allowed = (f"{low}" if low == high else f"{low}..{high}" if step == 1
                   else f"a multiple of {step} within {low}..{high}")
        errors.append(f"global_batch_size ({plan.global_batch_size} sequences) is not one the task allows "
                      f"({allowed})")
    if seqs % (plan.dp * plan.micro_batch_size):
        unset = plan.global_batch_size is None and task.batch_is_free  # the range's largest, by default
        errors.append(
            f"global batch ({seqs} sequences) is not divisible by dp*micro_batch_size "
            f"({plan.dp}*{plan.micro_batch_size})"
            + (f"; the plan gives no global_batch_size, so it runs at the largest of the task's range "
               f"{task.batch_text}: give it one the range allows (estimate: --gbs)" if unset else "")
        )
    if plan.stage_layers is not None:
        if len(plan.stage_layers) != plan.pp:
            errors.append(f"stage_layers has {len(plan.stage_layers)} entries, pp is {plan.pp}")
        elif sum(plan.stage_layers) != model.num_layers:
            errors.append(f"stage_layers sum to {sum(plan.stage_layers)}, the model has {model.num_layers}")
        elif min(plan.stage_layers) < plan.virtual_stages:
            errors.append("every stage needs at least virtual_stages layers")
    elif model.num_layers % (plan.pp * plan.virtual_stages):
        errors.append(
            f"num_layers ({model.num_layers}) is not divisible by pp*virtual_stages "
            f"({plan.pp}*{plan.virtual_stages}); give stage_layers for a non-uniform split"
        )
    if plan.schedule == "interleaved" and plan.pp == 1:
        errors.append("interleaved schedule needs pp > 1")
    if plan.schedule == "interleaved" and seqs // max(plan.dp * plan.micro_batch_size, 1) % plan.pp:
        errors.append("interleaved schedule needs the number of micro-batches to be a multiple of pp")
    if plan.recompute_num_layers is not None:
        stages = plan.layers_per_stage(model.num_layers)
        if plan.recompute != "full":
            errors.append("recompute_num_layers needs recompute: full")
        elif len(plan.recompute_num_layers) != plan.pp or any(
            not 0 <= r <= n for r, n in zip(plan.recompute_num_layers, stages, strict=False)
        ):
            errors.append("recompute_num_layers needs one count per stage, each within 0..layers on it")
        elif model.family == "moe":
            from planner.llm.cost.blocks import layer_mix

            moe = layer_mix(model, stages, plan.virtual_stages)
            if any(r > k for r, k in zip(plan.recompute_num_layers, moe, strict=True)):
                errors.append(f"recompute_num_layers: in MoE models full recompute applies to MoE blocks; "
                              f"the stages hold {moe} MoE blocks")
    errors += _check_recompute_modules(plan, problem)
    if plan.zero_stage and plan.dp % plan.shard_size:
        errors.append(f"zero_shard_size ({plan.shard_size}) does not divide dp ({plan.dp})")
    errors += _check_experts(plan, problem)
    c = task.constraints
    for axis in ("tp", "cp", "pp", "dp", "ep", "etp"):
        if not getattr(c, axis).admits(getattr(plan, axis)):
            errors.append(f"{axis}={getattr(plan, axis)} violates the task constraint {getattr(c, axis)}")
    if not c.micro_batch_size.admits(plan.micro_batch_size):
        errors.append(f"micro_batch_size={plan.micro_batch_size} violates the task constraint")
    if plan.schedule not in c.schedules:
        errors.append(f"schedule {plan.schedule} is not allowed by the task ({c.schedules})")
    if plan.zero_stage not in c.zero_stages:
        errors.append(f"zero_stage {plan.zero_stage} is not allowed by the task ({c.zero_stages})")
    if plan.recompute not in c.recompute:
        errors.append(f"recompute {plan.recompute} is not allowed by the task ({c.recompute})")
    return errors



def _check_recompute_modules(plan: Plan, problem: Problem) -> list[str]:
    """Megatron-Core's own checks (transformer_config.py core_v0.16.0: moe_act with grouped MoE
    experts, mla_up_proj with multi-latent attention), a dense MLP for `mlp`, and a framework
    profile whose selective recompute is Megatron's module list."""
    if plan.recompute_modules is None:
        return []
    model, errors = problem.model, []
    modules = set(plan.recompute_modules)
    moe = model.family == "moe"
    if "moe_act" in modules and not moe:
        errors.append("recompute_modules: moe_act needs an MoE model (the experts' activation)")
    if "mla_up_proj" in modules and not (moe and model.mla is not None):
        errors.append("recompute_modules: mla_up_proj needs multi-latent attention (model.mla)")
    if "mlp" in modules and moe and all(model.moe_layers):
        errors.append("recompute_modules: mlp re-runs the dense MLP and every layer of this model is MoE "
                      "(moe_act re-runs the experts' activation)")
    from planner.llm import frameworks

    name, _ = frameworks.parse_name(problem.task.framework.profile)
    if name != "megatron-core":
        errors.append(f"recompute_modules is Megatron-Core's option (--recompute-modules); the framework profile "
                      f"{problem.task.framework.profile_label} has no module list (its selective recompute: "
                      f"{problem.task.framework.facts.selective_recompute})")
    return errors


def _check_experts(plan: Plan, problem: Problem) -> list[str]:
    """The expert grid ETP x EP x EDP x PP folded onto the attention grid TP x CP x DP x PP.

    Megatron-Core (../shared/reference/moe.md sec. 2.1): experts split evenly over EP; ETP x EP
    divides the ranks of a pipeline stage (EDP = tp*cp*dp / (etp*ep)); the expert grid takes
    consecutive ranks (ETP innermost), so the pipeline axis is outermost; with TP > 1, MoE
    layers need sequence parallelism (Megatron's argument check).
    """
    model = problem.model
    if model.family != "moe":
        if plan.ep > 1 or plan.etp > 1 or plan.ep_comm_overlap:
            return [f"ep/etp/ep_comm_overlap apply to MoE models; {model.name} is {model.family}: use ep: 1, etp: 1"]
        return []
    errors = []
    experts = model.moe.num_experts
    if experts % plan.ep:
        errors.append(f"moe.num_experts ({experts}) is not divisible by ep ({plan.ep})")
    stage_ranks = plan.tp * plan.cp * plan.dp
    if stage_ranks % (plan.etp * plan.ep):
        errors.append(
            f"etp*ep ({plan.etp}*{plan.ep}) does not divide the ranks of a pipeline stage, tp*cp*dp = {stage_ranks}"
        )
    if model.moe.ffn_hidden_size % plan.etp:
        errors.append(f"moe.ffn_hidden_size ({model.moe.ffn_hidden_size}) is not divisible by etp ({plan.etp})")
    if plan.tp > 1 and not plan.sp:
        errors.append("MoE models with tp > 1 need sp: true (Megatron-Core requires sequence parallelism)")
    if plan.etp > 1 and model.moe.bias:
        errors.append("etp > 1 with expert biases (moe.bias: true): Megatron-Core needs etp: 1")
    if plan.dispatcher == "flex" and plan.ep == 1:
        errors.append("dispatcher: flex needs ep > 1 (Megatron-Core's flex dispatcher spans the EP group)")
    if plan.ep_comm_overlap and model.mtp_layers > 1:
        errors.append("ep_comm_overlap: true supports at most one MTP module (Megatron-Core)")
    if plan.ep_comm_overlap and model.mtp_layers == 1 and plan.pp == 1:
        errors.append("ep_comm_overlap: true with an MTP module needs pp > 1 (Megatron-Core)")
    if plan.pp > 1 and plan.etp * plan.ep > 1 and plan.axis_order[-1] != "pp":
        errors.append("with ep*etp > 1 the pipeline axis must be outermost (axis_order ending in pp), "
                      "as in Megatron-Core's expert grid")
    return errors
