"""What dense and mixture-of-experts decoder transformers share: size, attention heads,
vocabulary, context, and the head-count rules of MHA/GQA/MQA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_serializer, model_validator

from planner.core.schema import Name, Spec, omit_legacy_defaults


class DecoderTransformer(Spec):
    """Fields and rules common to every decoder-only transformer family."""

    name: Name = Field(description="Human-readable name, e.g. 'Llama-3 70B'.")
    num_layers: int = Field(gt=0, le=2**16, description="Transformer blocks.")
    hidden_size: int = Field(gt=0, le=2**20, description="Model width h.")
    num_heads: int = Field(gt=0, le=2**16, description="Query heads a.")
    num_kv_heads: int | None = Field(
        default=None, gt=0, le=2**16, description="Key/value heads (GQA/MQA); default = num_heads (MHA)."
    )
    head_dim: int | None = Field(default=None, gt=0, le=2**16, description="Default hidden_size / num_heads.")
    vocab_size: int = Field(gt=0, le=2**32, description="Vocabulary (padded as the framework pads it).")
    tied_embeddings: bool = Field(default=False, description="LM head shares the input embedding.")
    max_seq_len: int = Field(gt=0, le=2**30, description="Longest sequence the model supports (tokens).")
    linear_bias: bool = Field(default=False, description="Biases on linear layers (GPT-2/3, gpt-oss attention).")
    dropout: bool = Field(default=False, description="Dropout layers active in training.")
    position_embedding: Literal["learned", "rope", "none"] = Field(default="rope")
    rope_yarn_factor: float | None = Field(
        default=None, gt=1, le=1e6,
        description="YaRN RoPE scaling factor (gpt-oss: 32; its attention concentration 1 + 0.1 ln factor); "
                    "null = plain RoPE.",
    )
    sliding_window: int | None = Field(
        default=None, gt=0, le=2**30,
        description="Keys a query sees in a sliding-window attention layer, itself included (gpt-oss: 128); "
                    "null = every layer attends to the whole causal prefix.",
    )
    full_attention_every: int | None = Field(
        default=None, gt=1, le=2**16,
        description="With a sliding window, every n-th layer (1-based) attends to the whole prefix (gpt-oss: 2; "
                    "Megatron-Core window_attn_skip_freq); null = every layer windowed.",
    )
    published_params: float | None = Field(
        default=None, gt=0, le=1e16, description="Parameter count stated by the authors (checked in tests)."
    )

    @property
    def latent_attention(self) -> bool:
        """True where every head has its own keys and values from a latent (MLA): no GQA rules."""
        return False

    @model_serializer(mode="wrap")
    def _omit_absent_attention_extras(self, handler):
        """Leaves the YaRN and sliding-window fields out when null, so that a model without them
        (and the hashes of the problems on it, which plan files carry) reads as it did before the
        fields existed."""
        return omit_legacy_defaults(handler(self), dict.fromkeys(
            ("rope_yarn_factor", "sliding_window", "full_attention_every")))

    @model_validator(mode="after")
    def _check_positions(self) -> DecoderTransformer:
        if self.rope_yarn_factor is not None and self.position_embedding != "rope":
            raise ValueError(f"rope_yarn_factor scales rotary embeddings: it needs position_embedding: rope "
                             f"(got {self.position_embedding})")
        if self.full_attention_every is not None and self.sliding_window is None:
            raise ValueError("full_attention_every says which layers skip the sliding window: give sliding_window too")
        if self.full_attention_every is not None and self.full_attention_every > self.num_layers:
            raise ValueError(f"full_attention_every ({self.full_attention_every}) is larger than num_layers "
                             f"({self.num_layers}): no layer would attend fully; drop it for an all-windowed model")
        if self.sliding_window is not None and self.sliding_window >= self.max_seq_len:
            raise ValueError(f"sliding_window ({self.sliding_window}) is not shorter than max_seq_len "
                             f"({self.max_seq_len}): no query is windowed; drop it")
        return self

    @property
    def windowed_layer_share(self) -> float:
        """Share of the layers whose attention is windowed (0 without a sliding window)."""
        if self.sliding_window is None:
            return 0.0
        every = self.full_attention_every
        if every is None:
            return 1.0
        return (self.num_layers - self.num_layers // every) / self.num_layers

    @model_validator(mode="after")
    def _check_heads(self) -> DecoderTransformer:
        if self.latent_attention:
            return self
        kv = self.kv_heads
        if self.num_heads % kv != 0:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({kv})")
        if self.head_dim is None and self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads}); "
                "give head_dim explicitly"
            )
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    @property
    def attention_width(self) -> int:
        """Width of the concatenated query heads (a * head_dim), = h for most models."""
        return self.num_heads * self.dim_per_head

    @property
    def kv_width(self) -> int:
        """Width of the concatenated key (or value) heads (g * head_dim)."""
        return self.kv_heads * self.dim_per_head

    @property
    def value_width(self) -> int:
        """Width of the concatenated value heads (= kv_width except with MLA)."""
        return self.kv_width

    @property
    def attention_output_width(self) -> int:
        """Input width of the output projection: heads x value head dim (= attention_width
        except with MLA)."""
        return self.attention_width
