"""Framework profiles: the implementation facts of a training framework that change a plan's price.

The same plan runs at different speeds in different frameworks: an eager PyTorch RMSNorm is
seven kernels (nine passes over the activation) where Transformer Engine runs one; an fp8
recipe's casts cost a few passes per linear input; PyTorch's default attention kernel on H100 is
FlashAttention-2, slower than cuDNN's. A profile is a named, documented set of such facts, read
from planner/data/framework_profiles.yaml (each value cited there), optionally changed by the
profile's options (torchtitan: compile, float8, async_tp). A task selects one with
`framework: {profile: "torchtitan@2024-12", options: {compile: true}}`; the default,
`megatron-core@0.16`, has the facts the cost model always had, so default prices are unchanged.

Facts (`ProfileFacts`; bytes are HBM bytes per element of the op's tensor, forward):
    norm_bytes          each norm, per hidden element
    residual_add_bytes  each residual add, per hidden element
    dropout_bytes       each dropout, per hidden element (models with dropout)
    rope_bytes          rotary embedding, per query and key element
    act_bytes           non-gated activation (GeLU), per FFN-width element
    gated_act_bytes     gated activation (SwiGLU), per FFN-width element
    repeat_kv           K and V copied to every query head before attention (GQA models): each
                        copy reads 2 B per K/V element and writes 2 B per query-width element
    fp8_cast_bytes      per GEMM-input element, fp8 training only
    attention_kernel    the fused-attention kernel: cudnn (Transformer Engine's cuDNN backend),
                        fa2 (FlashAttention-2), fa3 (FlashAttention-3): on Hopper, their measured
                        rate by key length and head dim (planner/llm/cost/attention.py); device:
                        the device preset's flat attention_fraction
    cp_comm_type        how context parallelism moves K and V: p2p (ring of sends overlapped
                        with the attention steps), a2a (Ulysses: all-to-all of Q, K, V and the
                        output, heads split over CP) or allgather (gather K,V, then attend)
    pp_keeps_unsharded  with ZeRO-3 (FSDP) and a pipeline, each stage keeps its parameters
                        unsharded (2 B) and accumulates unsharded gradients (grad dtype) from the
                        first micro-batch's forward to the last backward (torchtitan + torch
                        pipelining); else only the blocks being run are gathered
    grad_accum_bytes    HBM bytes per parameter the framework moves after every micro-batch's
                        backward to accumulate its gradients outside the GEMMs (DeepSpeed's
                        BF16_Optimizer: the bf16 .grad cast and added into fp32 gradients);
                        0 where the weight-gradient GEMM accumulates in place (Megatron's
                        gradient_accumulation_fusion into fp32 main_grad, FSDP2)
    fused_qkv           Q, K, V in one GEMM (else three calls)
    fused_gate_up       a gated MLP's gate and up projections in one GEMM (else two calls)
    selective_recompute what `recompute: selective` re-runs: core-attention (Megatron: the
                        attention core; nothing for flash attention) or op-every-second-mm
                        (torchtitan's op-level policy: the even-numbered GEMMs of the block's
                        forward order and every memory-bound op)
    tp_overlap          what a plan's TP communication overlap (`tp_comm_overlap`) hides:
                        chunked-all (Transformer Engine's userbuffers: every TP collective, both
                        directions, chunked under its GEMM) or micro-pipeline (torch inductor's
                        async TP: the forward all-gathers and reduce-scatters and the backward
                        all-gathers, each under the one GEMM that consumes or produces it; the
                        backward reduce-scatters, whose input is a sum of GEMM outputs, stay
                        exposed). Defaults to chunked-all.
    tp_fp8_all_gather   in fp8 training the TP all-gathers carry fp8 (1 B per element) in both
                        directions (torchao Float8ColwiseParallel / PrepareFloat8ModuleInput cast
                        before the all-gather); the reduce-scatters stay bf16. Defaults to false.
    zero1_grad_all_reduce  under ZeRO-1 the gradients are all-reduced whole (not reduce-scattered)
                        before each rank steps its optimizer shard and the parameters are
                        all-gathered (DeepSpeed's bf16 pipeline engine, v0.6.5). Defaults to false.
    fsdp_pp_grad_accumulation  with ZeRO-3 (FSDP2), a pipeline and fp32 gradient reduction, each
                        micro-batch's bf16 gradient is cast to fp32 (the first: read 2 B, write
                        4 B per parameter) or added into the fp32 accumulated gradient (the
                        others: read 2 + 4, write 4) outside the GEMMs, gradient sync being off
                        until the last micro-batch; priced at 10 B per micro-batch (over by 4 B
                        per parameter once per step). Defaults to false.
    optimizer_step_bytes  HBM bytes per parameter of the local shard the optimizer step moves
                        (torch's foreach AdamW: eight passes over fp32 tensors, 80 B); unset: a
                        fused Adam step from the task's optimizer fields (gradient, master
                        weights and moments read and written, bf16 weights written).
    expert_bias_bytes   HBM bytes per routed-token x hidden element, forward, of adding the
                        second expert GEMM's bias outside the GEMM (experts with `moe.bias`);
    expert_bias_bwd_bytes  the same op's backward. 0 (the defaults): not priced.
    act_clamp_bytes     HBM bytes per routed-token x expert-width element, forward, of clamping
                        the gated experts' pre-activation outside the fused activation (experts
                        with `moe.activation_clamp`); every re-run of the activation pays it again;
    act_clamp_bwd_bytes the clamp's backward. 0 (the defaults): not priced.
    yarn_rope_bytes     HBM bytes per query and key element, forward, of the rotary embedding of
                        a model with `rope_yarn_factor` (YaRN's attention concentration on the
                        cos/sin), where the framework runs it apart from its rope kernel;
    yarn_rope_bwd_bytes its backward. Unset (the default): as `rope_bytes`, backward twice that.
    yarn_rope_table_bytes  HBM bytes per sequence position and rotary dim of making the cos and
                        sin tables in each of a layer's two rotary calls (query, key), forward
                        only (Megatron-Core's unfused YaRN path). Defaults to 0.
    fsdp2_copies        ZeRO-3 (FSDP2) copies on the compute stream every micro-batch: each
                        all-gather's output into the unsharded parameters (4 B per parameter) and
                        the unsharded gradients into each reduce-scatter's input (2 B read plus
                        the reduce dtype's bytes written); not with a pipeline that keeps the
                        parameters unsharded. Defaults to false (Megatron's buffers are the
                        collectives' own).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.core import files
from planner.core.schema import repeated
from planner.core.errors import InputError
from planner.core.files import shown

PROFILES_FILE = Path(__file__).resolve().parent.parent / "data" / "framework_profiles.yaml"
DEFAULT_PROFILE = "megatron-core@0.16"
"""The profile of a task that names none: the cost model's behaviour before profiles existed."""

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
OPTION_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
VERSION_PATTERN = re.compile(r"^[0-9][0-9A-Za-z.-]{0,31}$")

Bytes = Annotated[float, Field(ge=0, le=1000)]
AttentionKernel = Literal["device", "cudnn", "fa2", "fa3"]
CpCommType = Literal["p2p", "a2a", "allgather"]
TpOverlap = Literal["chunked-all", "micro-pipeline"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ProfileFacts(_Strict):
    """A profile's implementation facts (see the module doc for each field's meaning)."""

    norm_bytes: Bytes
    residual_add_bytes: Bytes
    dropout_bytes: Bytes
    rope_bytes: Bytes
    act_bytes: Bytes
    gated_act_bytes: Bytes
    repeat_kv: bool
    fp8_cast_bytes: Bytes
    attention_kernel: AttentionKernel
    cp_comm_type: CpCommType
    pp_keeps_unsharded: bool
    grad_accum_bytes: Bytes
    fused_qkv: bool
    fused_gate_up: bool
    selective_recompute: Literal["core-attention", "op-every-second-mm"]
    # Defaults: the cost model before these facts existed (profiles that do not name them).
    tp_overlap: TpOverlap = "chunked-all"
    tp_fp8_all_gather: bool = False
    zero1_grad_all_reduce: bool = False
    fsdp_pp_grad_accumulation: bool = False
    optimizer_step_bytes: Bytes | None = None
    expert_bias_bytes: Bytes = 0.0
    expert_bias_bwd_bytes: Bytes = 0.0
    act_clamp_bytes: Bytes = 0.0
    act_clamp_bwd_bytes: Bytes = 0.0
    yarn_rope_bytes: Bytes | None = None
    yarn_rope_bwd_bytes: Bytes | None = None
    yarn_rope_table_bytes: Bytes = 0.0
    fsdp2_copies: bool = False


    @model_validator(mode="after")
    def _check_pairs(self) -> ProfileFacts:
        if (self.yarn_rope_bytes is None) != (self.yarn_rope_bwd_bytes is None):
            raise ValueError("yarn_rope_bytes and yarn_rope_bwd_bytes: give both or neither")
        return self


class FactsOverride(_Strict):
    """Facts an option setting changes (any subset)."""

    norm_bytes: Bytes | None = None
    residual_add_bytes: Bytes | None = None
    dropout_bytes: Bytes | None = None
    rope_bytes: Bytes | None = None
    act_bytes: Bytes | None = None
    gated_act_bytes: Bytes | None = None
    repeat_kv: bool | None = None
    fp8_cast_bytes: Bytes | None = None
    attention_kernel: AttentionKernel | None = None
    cp_comm_type: CpCommType | None = None
    pp_keeps_unsharded: bool | None = None
    grad_accum_bytes: Bytes | None = None
    fused_qkv: bool | None = None
    fused_gate_up: bool | None = None
    selective_recompute: Literal["core-attention", "op-every-second-mm"] | None = None
    tp_overlap: TpOverlap | None = None
    tp_fp8_all_gather: bool | None = None
    zero1_grad_all_reduce: bool | None = None
    fsdp_pp_grad_accumulation: bool | None = None
    optimizer_step_bytes: Bytes | None = None
    expert_bias_bytes: Bytes | None = None
    expert_bias_bwd_bytes: Bytes | None = None
    act_clamp_bytes: Bytes | None = None
    act_clamp_bwd_bytes: Bytes | None = None
    yarn_rope_bytes: Bytes | None = None
    yarn_rope_bwd_bytes: Bytes | None = None
    yarn_rope_table_bytes: Bytes | None = None
    fsdp2_copies: bool | None = None


OptionValue = bool | Annotated[str, Field(min_length=1, max_length=64)]


class OptionSpec(_Strict):
    """One option of a profile: a flag (boolean default) or a choice among strings."""

    default: OptionValue
    choices: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    requires: dict[str, OptionValue] = Field(default_factory=dict)
    doc: Annotated[str, Field(min_length=1, max_length=2000)]

    @model_validator(mode="after")
    def _check(self) -> OptionSpec:
        if isinstance(self.default, bool) and self.choices is not None:
            raise ValueError("choices: a flag (boolean default) has no choices")
        if isinstance(self.default, str) and (self.choices is None or self.default not in self.choices):
            raise ValueError(f"default: {self.default!r} is not one of choices")
        return self

    def admits(self, value: Any) -> bool:
        if isinstance(self.default, bool):
            return isinstance(value, bool)
        return isinstance(value, str) and value in (self.choices or [])


class Override(_Strict):
    when: dict[str, OptionValue] = Field(min_length=1)
    facts: FactsOverride


class Profile(_Strict):
    """A framework: its versions, options, base facts and the facts its option settings change."""

    name: Annotated[str, Field(pattern=NAME_PATTERN.pattern)]
    versions: list[Annotated[str, Field(pattern=VERSION_PATTERN.pattern)]] = Field(min_length=1)
    description: Annotated[str, Field(min_length=1, max_length=4000)]
    source: Annotated[str, Field(min_length=1, max_length=4000)]
    options: dict[Annotated[str, Field(pattern=OPTION_PATTERN.pattern)], OptionSpec] = Field(
        default_factory=dict)
    facts: ProfileFacts
    overrides: list[Override] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Profile:
        for i, override in enumerate(self.overrides):
            merged = {**self.facts.model_dump(), **override.facts.model_dump(exclude_none=True)}
            try:
                ProfileFacts.model_validate(merged)
            except ValidationError as exc:
                raise ValueError(f"overrides.{i}.facts: "
                                 f"{exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
            for key, value in override.when.items():
                if key not in self.options:
                    raise ValueError(f"overrides.{i}.when.{key}: not an option of {self.name}")
                if not self.options[key].admits(value):
                    raise ValueError(f"overrides.{i}.when.{key}: {value!r} is not a value of that option")
        for key, spec in self.options.items():
            for other, value in spec.requires.items():
                if other not in self.options or not self.options[other].admits(value):
                    raise ValueError(f"options.{key}.requires.{other}: not an option value of {self.name}")
        return self


class ProfilesFile(_Strict):
    profiles: list[Profile] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ProfilesFile:
        names = repeated(p.name for p in self.profiles)
        if names:
            raise ValueError(f"profiles: names repeat ({', '.join(names)})")
        return self


def load_profiles(path: str | Path = PROFILES_FILE) -> dict[str, Profile]:
    """The profiles of a file by name; InputError naming the file and field when it is malformed."""
    data = files.read_yaml(path)
    try:
        parsed = ProfilesFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        message = "unknown field (misspelt?)" if err["type"] == "extra_forbidden" else \
            err["msg"].removeprefix("Value error, ")
        raise InputError(f"{path}: {loc or '(top level)'}: {message}") from None
    return {p.name: p for p in parsed.profiles}


@cache
def profiles() -> dict[str, Profile]:
    """The shipped profiles (planner/data/framework_profiles.yaml)."""
    return load_profiles(PROFILES_FILE)


def parse_name(text: str) -> tuple[str, str]:
    """(profile name, version) of 'name@version' or 'name' (its first listed version); ValueError
    with the reason when the name or version is malformed or unknown."""
    if not isinstance(text, str):
        raise ValueError(f"expected 'name' or 'name@version', got {type(text).__name__}")  # noqa: TRY004
    name, _, version = text.partition("@")
    if not NAME_PATTERN.match(name):
        raise ValueError(f"malformed profile name {shown(name, 60)} (lower-case letters, digits and '-')")
    known = profiles()
    if name not in known:
        raise ValueError(f"unknown framework {name!r}; known: {', '.join(sorted(known))}")
    profile = known[name]
    if "@" in text:
        if not VERSION_PATTERN.match(version):
            raise ValueError(f"malformed version {shown(version, 40)} in {shown(text, 80)} (e.g. "
                             f"{name}@{profile.versions[0]})")
        if version not in profile.versions:
            raise ValueError(f"{name} has no profile for version {version!r}; known: {', '.join(profile.versions)}")
    else:
        version = profile.versions[0]
    return name, version


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options completed with their defaults; ValueError naming the first bad option."""
    profile = profiles()[name]
    for key, value in options.items():
        if key not in profile.options:
            known = ", ".join(sorted(profile.options)) or "none"
            raise ValueError(f"options.{_key(key)}: unknown option of {name} (its options: {known})")
        spec = profile.options[key]
        if not spec.admits(value):
            allowed = "true or false" if isinstance(spec.default, bool) else ", ".join(spec.choices or [])
            raise ValueError(f"options.{key}: {shown(value, 60)} is not {allowed}")
    full = {key: options.get(key, spec.default) for key, spec in profile.options.items()}
    for key, spec in profile.options.items():
        if full[key] != spec.default:
            for other, value in spec.requires.items():
                if full[other] != value:
                    raise ValueError(f"options.{key}: needs {other}: {str(value).lower()} ({spec.doc.split('(')[0].strip()})")
    return full


def _key(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 60 and text.isprintable() else shown(text, 60)


@cache
def _facts(name: str, options: tuple[tuple[str, Any], ...]) -> ProfileFacts:
    profile = profiles()[name]
    chosen = dict(options)
    facts = profile.facts
    for override in profile.overrides:
        if all(chosen.get(k) == v for k, v in override.when.items()):
            facts = facts.model_copy(update=override.facts.model_dump(exclude_none=True))
    return facts


def resolve_facts(profile: str, options: dict[str, Any]) -> ProfileFacts:
    """The facts of a profile reference ('name[@version]') with its options (defaults filled)."""
    name, _ = parse_name(profile)
    full = check_options(name, options)
    return _facts(name, tuple(sorted(full.items())))


def block_gemms(model) -> list[tuple[str, float]]:
    """(name, forward FLOPs per token before TP) of a dense block's weight GEMMs in torchtitan's
    forward order: wq, wk, wv, wo, then w1, w3, w2 (gated) or w1, w2."""
    h, f = model.hidden_size, model.ffn_hidden_size or 0
    qw, kvw, ow = model.attention_width, model.kv_width, model.attention_output_width
    gemms = [("wq", 2.0 * h * qw), ("wk", 2.0 * h * kvw), ("wv", 2.0 * h * kvw), ("wo", 2.0 * ow * h)]
    if f:
        gemms += [("w1", 2.0 * h * f)] + ([("w3", 2.0 * h * f)] if model.gated_mlp else []) + [("w2", 2.0 * f * h)]
    return gemms


def op_sac_recomputed_share(model) -> tuple[float, float]:
    """(recomputed share of the attention GEMMs' FLOPs, of the MLP GEMMs') under torchtitan's op
    policy: the mm calls of the block's forward are counted from 1 and the even-numbered ones are
    recomputed (parallelize_llama.py: saved unless `mm_count % 2 == 0`)."""
    gemms = block_gemms(model)
    attn, mlp = gemms[:4], gemms[4:]
    redo = {name for i, (name, _) in enumerate(gemms, start=1) if i % 2 == 0}

    def share(part):
        total = sum(fl for _, fl in part)
        return sum(fl for n, fl in part if n in redo) / total if total else 0.0

    return share(attn), share(mlp)


def tp_input_gemm_shares(model) -> tuple[float, float]:
    """(share of the attention GEMMs' FLOPs in wq, wk, wv; share of the MLP GEMMs' in w1 (and
    w3)): the GEMMs that consume a TP all-gather's output, the rest (wo, w2) producing a
    reduce-scatter's input."""
    gemms = dict(block_gemms(model))
    attn = sum(gemms[n] for n in ("wq", "wk", "wv", "wo"))
    mlp = sum(fl for n, fl in gemms.items() if n in ("w1", "w3", "w2"))
    return ((gemms["wq"] + gemms["wk"] + gemms["wv"]) / attn if attn else 0.0,
            (mlp - gemms.get("w2", 0.0)) / mlp if mlp else 0.0)
