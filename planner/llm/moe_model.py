"""Mixture-of-experts decoder transformers (`family: moe`): Mixtral, DeepSeek-V2/V3, Qwen3 MoE,
gpt-oss, Kimi-K2, Llama 4 Maverick.

A layer is dense (attention + an FFN of `ffn_hidden_size`) or MoE (attention + a router over
`moe.num_experts` routed experts of `moe.ffn_hidden_size`, `moe.top_k` per token, plus
`moe.shared_experts` always-on experts of `moe.shared_ffn_hidden_size` in total). Which layers
are MoE: the first `moe.first_dense_layers` are dense, then every `moe.moe_every`-th layer is
MoE (DeepSeek-V3: 3 dense then all MoE; Llama 4 Maverick: every second), or an explicit
`moe.layer_pattern` of 0/1 per layer. Attention is MHA/GQA (`num_heads`, `num_kv_heads`,
`head_dim`, as in the dense family) or DeepSeek's multi-head latent attention (`mla`).
Facts and sources: ../shared/reference/moe.md, ../shared/data/models/moe_models.yaml.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_serializer, model_validator

from planner.core.schema import NotBool, Spec, omit_legacy_defaults
from planner.llm.decoder import DecoderTransformer


class MultiLatentAttention(Spec):
    """DeepSeek's MLA: queries and keys/values through low-rank latents; a rope part per head."""

    q_lora_rank: int = Field(ge=0, le=2**20, description="Query latent rank; 0 = queries not compressed.")
    kv_lora_rank: int = Field(gt=0, le=2**20, description="Key/value latent rank (the KV-cache width).")
    qk_nope_head_dim: int = Field(gt=0, le=2**12, description="Per-head query/key width without rope.")
    qk_rope_head_dim: int = Field(gt=0, le=2**12, description="Per-head (shared-key) rope width.")
    v_head_dim: int = Field(gt=0, le=2**12, description="Per-head value width.")


class Router(Spec):
    """How tokens choose experts."""

    score: Literal["softmax", "sigmoid"] = "softmax"
    num_groups: int | None = Field(
        default=None, gt=0, le=2**16,
        description="Group-limited routing (DeepSeek): experts split into this many groups (devices or nodes).",
    )
    topk_groups: int | None = Field(default=None, gt=0, le=2**16, description="Groups one token may reach.")
    load_balance: Literal["aux_loss", "aux_loss_free", "none"] = "aux_loss"

    @model_validator(mode="after")
    def _check_groups(self) -> Router:
        if (self.num_groups is None) != (self.topk_groups is None):
            raise ValueError("give both num_groups and topk_groups (group-limited routing) or neither")
        if self.num_groups is not None and self.topk_groups > self.num_groups:
            raise ValueError(f"topk_groups ({self.topk_groups}) is larger than num_groups ({self.num_groups})")
        return self


class Experts(Spec):
    """The MoE block of a layer and which layers have one."""

    num_experts: int = Field(gt=1, le=2**16, description="Routed experts E.")
    top_k: int = Field(gt=0, le=2**10, description="Routed experts per token k.")
    ffn_hidden_size: int = Field(gt=0, le=2**24, description="Intermediate width of one routed expert.")
    shared_experts: int = Field(default=0, ge=0, le=64, description="Always-on shared experts.")
    shared_ffn_hidden_size: int = Field(
        default=0, ge=0, le=2**24, description="Total intermediate width of the shared experts (0 if none)."
    )
    first_dense_layers: int = Field(default=0, ge=0, le=2**16, description="Leading dense layers.")
    moe_every: int = Field(default=1, gt=0, le=2**16, description="After them, every n-th layer is MoE.")
    layer_pattern: list[Annotated[Literal[0, 1], NotBool]] | None = Field(
        default=None, description="Explicit 1 (MoE) / 0 (dense) per layer; overrides the two fields above."
    )
    router: Router = Router()
    capacity_factor: float | None = Field(
        default=None, ge=1, le=64, description="Tokens an expert accepts / its even share; null = dropless."
    )
    dispatch_dtype: Literal["bf16", "fp8"] = Field(default="bf16", description="Token dispatch (all-to-all) dtype.")
    combine_dtype: Literal["bf16"] = "bf16"
    bias: bool = Field(default=False, description="Biases on the expert matrices (gpt-oss).")
    activation_clamp: float | None = Field(
        default=None, gt=0, le=1e6,
        description="Clamp of the gated experts' pre-activation (gpt-oss: 7.0, HF swiglu_limit; Megatron-Core "
                    "--activation-func-clamp-value); null = none.",
    )

    @model_serializer(mode="wrap")
    def _omit_absent_clamp(self, handler):
        """Leaves `activation_clamp` out when null, so that experts without one (and the hashes of
        the problems on them) read as they did before the field existed."""
        return omit_legacy_defaults(handler(self), {"activation_clamp": None})

    @model_validator(mode="after")
    def _check(self) -> Experts:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) is larger than num_experts ({self.num_experts})")
        if (self.shared_experts == 0) != (self.shared_ffn_hidden_size == 0):
            raise ValueError("shared_experts and shared_ffn_hidden_size are both zero or both positive")
        groups = self.router.num_groups
        if groups is not None and self.num_experts % groups:
            raise ValueError(f"num_experts ({self.num_experts}) is not divisible by router.num_groups ({groups})")
        return self


class MoETransformer(DecoderTransformer):
    """A mixture-of-experts decoder-only transformer (`num_kv_heads` does not apply with `mla`)."""

    family: Literal["moe"] = "moe"
    mla: MultiLatentAttention | None = Field(default=None, description="Multi-head latent attention (DeepSeek).")
    ffn_hidden_size: int | None = Field(
        default=None, gt=0, le=2**24, description="FFN width of the dense layers (needed if any layer is dense)."
    )
    gated_mlp: bool = Field(default=True, description="SwiGLU-style FFNs and experts (3 matrices) vs plain (2).")
    moe: Experts
    mtp_layers: int = Field(default=0, ge=0, le=16, description="Multi-token-prediction modules (DeepSeek-V3: 1).")
    published_active_params: float | None = Field(
        default=None, gt=0, le=1e16, description="Parameters active per token stated by the authors."
    )

    @property
    def latent_attention(self) -> bool:
        return self.mla is not None

    @model_validator(mode="after")
    def _check(self) -> MoETransformer:
        if self.mla is not None and self.num_kv_heads is not None:
            raise ValueError("num_kv_heads does not apply with mla (every head has its own keys and values)")
        pattern = self.moe.layer_pattern
        if pattern is not None and len(pattern) != self.num_layers:
            raise ValueError(f"moe.layer_pattern has {len(pattern)} entries, num_layers is {self.num_layers}")
        layers = self.moe_layers
        if not any(layers):
            raise ValueError("no layer is MoE: check moe.first_dense_layers, moe.moe_every or moe.layer_pattern")
        if not all(layers) and self.ffn_hidden_size is None:
            raise ValueError("ffn_hidden_size is needed: some layers are dense")
        if self.mla is not None and self.rope_yarn_factor is not None:
            raise ValueError("rope_yarn_factor is for GQA/MHA attention (Megatron-Core's unfused YaRN rotary); "
                             "multi-latent attention applies YaRN inside its own rotary, which is not modelled: drop it")
        if self.moe.activation_clamp is not None and not self.gated_mlp:
            raise ValueError("moe.activation_clamp clamps a gated activation's two halves: it needs gated_mlp: true")
        return self

    @property
    def moe_layers(self) -> list[bool]:
        """Per layer (in order): True if it is an MoE layer."""
        if self.moe.layer_pattern is not None:
            return [bool(x) for x in self.moe.layer_pattern]
        first, every = self.moe.first_dense_layers, self.moe.moe_every
        return [i >= first and (i - first + 1) % every == 0 for i in range(self.num_layers)]

    @property
    def num_moe_layers(self) -> int:
        return sum(self.moe_layers)

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.mla is not None else super().kv_heads

    @property
    def value_width(self) -> int:
        if self.mla is not None:
            return self.num_heads * self.mla.v_head_dim
        return super().value_width

    @property
    def attention_output_width(self) -> int:
        if self.mla is not None:
            return self.num_heads * self.mla.v_head_dim
        return super().attention_output_width

    @property
    def dim_per_head(self) -> int:
        """Query/key head width (MLA: nope + rope)."""
        if self.mla is not None:
            return self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim
        return super().dim_per_head
