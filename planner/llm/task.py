"""Training tasks: batch, sequence, precision, optimizer, framework behaviour, constraints."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_serializer, model_validator

from planner.core.schema import Bytes, NotBool, Spec
from planner.llm import frameworks

MAX_TOKENS_PER_STEP = 2**40
"""Largest global batch accepted, in tokens (about 1.1e12)."""

Axis = Literal["tp", "cp", "pp", "dp"]
Schedule = Literal["1f1b", "interleaved"]
Recompute = Literal["none", "selective", "full"]
RecomputeModule = Literal["core_attn", "layernorm", "moe_act", "mla_up_proj", "mlp"]
"""Block parts `recompute: selective` can re-run (Megatron-Core `--recompute-modules`,
transformer_config.py core_v0.16.0): core attention, the two norms, the MoE experts' activation,
MLA's up-projections with RoPE, the dense MLP. Megatron's `moe` and `shared_experts` are not
priced."""
DEFAULT_RECOMPUTE_MODULES: tuple[str, ...] = ("core_attn",)
"""Megatron-Core's default `recompute_modules`."""
Dispatcher = Literal["alltoall", "allgather", "flex"]


class DegreeBound(Spec):
    """A user constraint on one parallel degree: a fixed value, or bounds."""

    fixed: int | None = Field(default=None, gt=0, le=2**40)
    min: int | None = Field(default=None, gt=0, le=2**40)
    max: int | None = Field(default=None, gt=0, le=2**40)

    @model_validator(mode="after")
    def _check_range(self) -> DegreeBound:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max}): no degree is allowed")
        if self.fixed is not None and not (self.min or 1) <= self.fixed <= (self.max or self.fixed):
            raise ValueError(f"fixed ({self.fixed}) is outside min..max")
        return self

    def admits(self, degree: int) -> bool:
        if self.fixed is not None and degree != self.fixed:
            return False
        if self.min is not None and degree < self.min:
            return False
        return not (self.max is not None and degree > self.max)


class BatchRange(Spec):
    """A global batch left to the solver: any multiple of `multiple_of` within min..max (in the
    unit of the field that holds it: sequences for global_batch_size, tokens for
    global_batch_tokens). The solver then maximizes tokens per second."""

    min: int = Field(gt=0, le=2**40, description="Smallest global batch allowed.")
    max: int = Field(gt=0, le=2**40, description="Largest global batch allowed.")
    multiple_of: int = Field(default=1, gt=0, le=2**40, description="The batch is a multiple of this.")

    @model_validator(mode="after")
    def _check_range(self) -> BatchRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max}): no batch is allowed")
        return self


def _batch_field(unit: str) -> Any:
    """The type of global_batch_size / global_batch_tokens: a count of `unit` or a BatchRange.
    A mapping is read as a range and anything else as a count, so that a bad value gets the
    one message of what it was meant to be (not one per member of the union); the union's tag
    (`union:count`, `union:range`) is left out of the field name in messages
    (planner.core.inputs.format_validation_error)."""

    def shape(value: Any) -> str | None:
        if isinstance(value, (dict, BatchRange)):
            return "union:range"
        return "union:count" if isinstance(value, (int, float, str)) else None

    return Annotated[
        Annotated[Annotated[int, Field(gt=0, le=2**40)], Tag("union:count")]
        | Annotated[BatchRange, Tag("union:range")],
        Discriminator(shape, custom_error_type="batch_shape",
                      custom_error_message=f"expected a number of {unit} or a range {{min, max, multiple_of}}"),
    ]


class Constraints(Spec):
    """Restrictions the user puts on the plan space (used by solvers; checked by `estimate`)."""

    tp: DegreeBound = DegreeBound()
    cp: DegreeBound = DegreeBound()
    pp: DegreeBound = DegreeBound()
    dp: DegreeBound = DegreeBound()
    ep: DegreeBound = DegreeBound()
    etp: DegreeBound = DegreeBound()
    micro_batch_size: DegreeBound = DegreeBound()
    schedules: list[Schedule] = Field(default_factory=lambda: ["1f1b", "interleaved"], min_length=1)
    zero_stages: list[Annotated[Literal[0, 1, 2, 3], NotBool]] = Field(
        default_factory=lambda: [0, 1, 2, 3], min_length=1
    )
    recompute: list[Recompute] = Field(default_factory=lambda: ["none", "selective", "full"], min_length=1)


class Optimizer(Spec):
    """Adam-style optimizer state, per parameter."""

    name: Literal["adam", "adamw"] = "adamw"
    master_weights: bool = Field(default=True, description="fp32 master copy kept (mixed precision).")
    num_states: int = Field(default=2, ge=0, le=16, description="fp32 moments per parameter (Adam: 2).")


class Framework(Spec):
    """How the training framework behaves (Megatron-Core defaults).

    `profile` names the framework's implementation facts (planner/llm/frameworks.py: fused or
    eager elementwise kernels, attention kernel, fp8 cast passes, separate or fused projection
    GEMMs, what selective recompute re-runs) and `options` that framework's switches; the other
    fields are behaviour the task sets directly (overlap, attention style, buffers).
    """

    profile: str = Field(
        default=frameworks.DEFAULT_PROFILE,
        description="Framework profile 'name[@version]' (planner/data/framework_profiles.yaml): "
        "megatron-core@0.16 (default), megatron-lm@2021/2022, megatron-deepspeed@2022, torchtitan@2024-12.",
    )
    options: dict[str, bool | str] = Field(
        default_factory=dict,
        description="The profile's options (torchtitan: compile, float8: none|tensorwise|rowwise, async_tp); "
        "unset ones take the profile's defaults.",
    )

    attention: Literal["flash", "unfused"] = Field(
        default="flash",
        description="flash: fused kernel, no s^2 activations, causal half skipped; "
        "unfused: Megatron 2021-22 style softmax/dropout kernels on the s x s scores.",
    )
    grad_dtype: Literal["fp32", "bf16"] = Field(
        default="fp32", description="Gradient accumulation/reduction dtype (Megatron main_grad: fp32)."
    )
    low_precision_grads: bool = Field(
        default=False,
        description="Backward writes bf16/fp16 .grad tensors for the whole stage before they are "
        "added to the fp32 gradients (DeepSpeed BF16_Optimizer); Megatron-Core's gradient-"
        "accumulation fusion writes straight into the fp32 buffer (false).",
    )
    overlap_grad_reduce: bool = Field(default=True, description="DP reduce under backward.")
    overlap_param_gather: bool = Field(default=True, description="ZeRO param gather under forward.")
    overlap_p2p_comm: bool = Field(
        default=True, description="Pipeline sends overlapped with the next chunk's compute (interleaved "
        "schedule only: Megatron turns it off for 1F1B)."
    )
    grad_bucket_bytes: Bytes = Field(
        default=40e6 * 4, description="DP bucket size; the last bucket is exposed (Megatron: 40M params)."
    )
    framework_overhead_bytes: Bytes = Field(
        default=2.5 * 2**30,
        description="CUDA context, NCCL and cuBLAS workspaces, allocator slack not in the formulas.",
    )
    allocator_fragmentation: float = Field(
        default=0.10, ge=0, le=1, description="Extra fraction of activation memory lost to fragmentation."
    )

    @field_validator("options", mode="before")
    @classmethod
    def _option_values(cls, value: Any) -> Any:
        """One message per bad option value (not one per member of the bool | str union)."""
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(item, (bool, str)):
                    raise ValueError(f"{key}: expected true, false or a name, got {type(item).__name__}")
        return value

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        frameworks.parse_name(value)
        return value

    @model_validator(mode="after")
    def _options(self) -> Framework:
        name, _ = frameworks.parse_name(self.profile)
        frameworks.check_options(name, self.options)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """The default profile without options is left out of dumps, so that a task that names
        none serialises (and hashes) as it did before profiles existed."""
        data = handler(self)
        if self.profile == frameworks.DEFAULT_PROFILE and not self.options:
            data.pop("profile", None)
            data.pop("options", None)
        return data

    @property
    def facts(self) -> frameworks.ProfileFacts:
        """The profile's implementation facts with the options applied."""
        return frameworks.resolve_facts(self.profile, self.options)

    @property
    def profile_label(self) -> str:
        """'name@version' plus the options that differ from their defaults, e.g.
        'torchtitan@2024-12 (compile, float8=tensorwise)'."""
        name, version = frameworks.parse_name(self.profile)
        full = frameworks.check_options(name, self.options)
        spec = frameworks.profiles()[name].options
        changed = [k if v is True else f"{k}={v}" for k, v in full.items() if v != spec[k].default]
        return f"{name}@{version}" + (f" ({', '.join(changed)})" if changed else "")


class TrainingTask(Spec):
    """A training (pre-training or fine-tuning) job: what is trained and how."""

    kind: Literal["training"] = "training"
    global_batch_size: _batch_field("sequences") | None = Field(
        default=None, description="Sequences per step, or a range (min, max, multiple_of) the solver chooses from.")
    global_batch_tokens: _batch_field("tokens") | None = Field(
        default=None, description="Tokens per step, or a range (min, max, multiple_of; default multiple_of: "
        "seq_len) the solver chooses from.")
    seq_len: int = Field(gt=0, le=2**30, description="Tokens per sequence.")
    precision: Literal["bf16", "fp16", "fp8"] = Field(
        default="bf16", description="GEMM precision; fp8 keeps bf16 weights/activations outside GEMMs."
    )
    optimizer: Optimizer = Optimizer()
    framework: Framework = Framework()
    moe_load_imbalance: float = Field(
        default=1.0, ge=1, le=64,
        description="MoE: routed tokens on the busiest GPU / the mean (1 = perfectly balanced, as "
        "force-balanced benchmarks run; real routers run above 1).",
    )
    memory_headroom: float = Field(
        default=0.05, ge=0, lt=1, description="Fraction of device memory kept free."
    )
    constraints: Constraints = Constraints()

    @field_validator("framework", mode="before")
    @classmethod
    def _framework_name(cls, value: Any) -> Any:
        """`framework: torchtitan` is short for `framework: {profile: torchtitan}`."""
        return {"profile": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_fp8_option(self) -> TrainingTask:
        """A profile with a float8 option: fp8 precision needs a recipe, and a recipe fp8."""
        name, _ = frameworks.parse_name(self.framework.profile)
        if "float8" in frameworks.profiles()[name].options:
            recipe = frameworks.check_options(name, self.framework.options)["float8"]
            if (self.precision == "fp8") != (recipe != "none"):
                raise ValueError(f"framework.options.float8: {recipe!r} with precision {self.precision!r} (fp8 "
                                 "precision needs a float8 recipe, tensorwise or rowwise; other precisions none)")
        return self

    @model_validator(mode="after")
    def _check_batch(self) -> TrainingTask:
        if (self.global_batch_size is None) == (self.global_batch_tokens is None):
            raise ValueError("give exactly one of global_batch_size (sequences) or global_batch_tokens")
        tokens = self.global_batch_tokens
        if isinstance(tokens, int) and tokens % self.seq_len != 0:
            raise ValueError(f"global_batch_tokens ({tokens}) is not a multiple of seq_len ({self.seq_len})")
        if isinstance(self.global_batch_size, BatchRange) or isinstance(tokens, BatchRange):
            field = "global_batch_size" if isinstance(self.global_batch_size, BatchRange) else "global_batch_tokens"
            low, high, step = self.batch_range
            if low > high:
                given = self.global_batch_size if field == "global_batch_size" else tokens
                unit = "sequences" if field == "global_batch_size" else f"tokens ({self.seq_len} per sequence)"
                raise ValueError(f"{field}: no multiple of {given.multiple_of} {unit} lies within "
                                 f"{given.min}..{given.max}")
        if self.tokens_per_step > MAX_TOKENS_PER_STEP:
            field = "global_batch_size" if self.global_batch_size is not None else "global_batch_tokens"
            largest = " (the range's largest)" if self.batch_is_free else ""
            raise ValueError(f"{field}: {self.num_sequences} sequences{largest} x seq_len {self.seq_len} = "
                             f"{self.tokens_per_step:.3e} tokens per step is more than the 2**40 the planner accepts")
        return self

    @property
    def batch_range(self) -> tuple[int, int, int]:
        """(smallest, largest, step) of the global batches allowed, in sequences (one value,
        step itself, for a fixed batch). The batches allowed are smallest, smallest + step, ...,
        largest."""
        size, tokens = self.global_batch_size, self.global_batch_tokens
        if isinstance(size, int):
            return size, size, size
        if isinstance(tokens, int):
            return (tokens // self.seq_len,) * 3
        if isinstance(size, BatchRange):
            step, low, high = size.multiple_of, size.min, size.max
        else:
            assert isinstance(tokens, BatchRange)
            step = tokens.multiple_of // math.gcd(tokens.multiple_of, self.seq_len)
            low, high = -(-tokens.min // self.seq_len), tokens.max // self.seq_len
        return -(-low // step) * step, high // step * step, step

    @property
    def batch_is_free(self) -> bool:
        """Whether the solver chooses the global batch (a range with more than one value)."""
        low, high, _ = self.batch_range
        return low < high

    def admits_batch(self, num_sequences: int) -> bool:
        """Whether the task allows a global batch of this many sequences."""
        low, high, step = self.batch_range
        return low <= num_sequences <= high and num_sequences % step == 0

    @property
    def num_sequences(self) -> int:
        """Sequences per step: the batch, or the largest a range allows (the reference batch:
        plans that do not say their own batch run at it)."""
        return self.batch_range[1]

    @property
    def tokens_per_step(self) -> int:
        return self.num_sequences * self.seq_len

    @property
    def batch_text(self) -> str:
        """The global batch in words: '2048' or '1536..2048 (multiples of 8)' sequences."""
        low, high, step = self.batch_range
        if low == high:
            return str(high)
        return f"{low}..{high}" + (f" (multiples of {step})" if step > 1 else "")
