"""Inference tasks (a task file's `inference` block): what requests arrive, how many are in
flight, the precisions, the serving engine whose documented behaviour is priced, and optional
latency targets.

```yaml
inference:
  requests: {input_tokens: 2048, output_tokens: 256}   # or buckets: [{input_tokens, output_tokens, weight}]
  concurrency: 128          # requests in flight over all replicas; omit for the most that fit
  weight_precision: fp8     # bf16 | fp16 | fp8 | fp4
  kv_cache_dtype: fp8       # bf16 | fp16 | fp8
  engine: {name: vllm}      # vllm | sglang | tensorrt-llm, with the engine's defaults
  targets: {ttft_s: 1s, tpot_s: 50ms}
```
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from planner.core.schema import Bytes, Seconds, Spec, omit_legacy_defaults

MAX_REQUEST_TOKENS = 2**24
"""Longest prompt or output accepted (16.7 M tokens)."""
MAX_CONCURRENCY = 2**24
"""Most requests in flight accepted."""

WeightPrecision = Literal["bf16", "fp16", "fp8", "fp4"]
KvCacheDtype = Literal["bf16", "fp16", "fp8"]
EngineName = Literal["vllm", "sglang", "tensorrt-llm"]

WEIGHT_BYTES: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,  # per-tensor (or per-channel) scales: negligible
    # NVFP4: 4-bit values with one FP8 (E4M3) scale per 16-element block (NVIDIA, "Introducing
    # NVFP4 for efficient and accurate low-precision inference", 2025): 0.5 + 1/16 B per element.
    "fp4": 0.5 + 1.0 / 16.0,
}
"""Bytes per weight element stored and read, by weight precision."""

KV_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}
"""Bytes per KV-cache element (fp8 caches keep one scale per tensor: negligible)."""

ENGINE_DEFAULTS: dict[str, dict[str, Any]] = {
    # vLLM: continuous batching with chunked prefill (V1 scheduler); FlashAttention / FlashInfer
    # decode kernels read each KV head once for its whole query group; `--block-size` default 16
    # (docs.vllm.ai engine arguments); `--gpu-memory-utilization` default 0.9.
    "vllm": {"batching": "continuous", "decode_attention": "grouped", "kv_block_tokens": 16},
    # SGLang: continuous batching with chunked prefill; FlashInfer/FA3 decode kernels (grouped);
    # token-granular KV pool (`--page-size` 1, RadixAttention).
    "sglang": {"batching": "continuous", "decode_attention": "grouped", "kv_block_tokens": 1},
    # TensorRT-LLM: in-flight batching; XQA decode kernels for GQA/MQA since v0.8 (docs/source/
    # blogs/XQA-kernel.md); KvCacheConfig.tokens_per_block default 32 (tensorrt_llm/llmapi/llm_args.py).
    "tensorrt-llm": {"batching": "continuous", "decode_attention": "grouped", "kv_block_tokens": 32},
}
"""Documented behaviour of each engine, used where the task does not say otherwise."""


class RequestBucket(Spec):
    """One kind of request: its prompt and output lengths and its share of the requests."""

    input_tokens: int = Field(gt=0, le=MAX_REQUEST_TOKENS, description="Prompt length (tokens).")
    output_tokens: int = Field(gt=0, le=MAX_REQUEST_TOKENS, description="Generated tokens per request.")
    weight: float = Field(default=1.0, gt=0, le=1e6, description="Relative share of requests (normalised).")


class Requests(Spec):
    """Request lengths: one fixed length (`input_tokens`, `output_tokens`) or a few weighted buckets."""

    input_tokens: int | None = Field(default=None, gt=0, le=MAX_REQUEST_TOKENS, description="Prompt length.")
    output_tokens: int | None = Field(default=None, gt=0, le=MAX_REQUEST_TOKENS, description="Output length.")
    buckets: list[RequestBucket] | None = Field(
        default=None, min_length=1, max_length=64, description="Weighted request kinds (instead of one length)."
    )

    @model_validator(mode="after")
    def _check(self) -> Requests:
        fixed = (self.input_tokens is not None, self.output_tokens is not None)
        if self.buckets is not None and any(fixed):
            raise ValueError("give either input_tokens and output_tokens, or buckets, not both")
        if self.buckets is None and not all(fixed):
            missing = "input_tokens" if not fixed[0] else "output_tokens"
            raise ValueError(f"{missing} is missing (give input_tokens and output_tokens, or buckets)")
        return self

    def mix(self) -> list[tuple[int, int, float]]:
        """(input tokens, output tokens, share of requests) per kind; shares sum to 1."""
        if self.buckets is None:
            return [(self.input_tokens, self.output_tokens, 1.0)]  # type: ignore[list-item]
        total = sum(b.weight for b in self.buckets)
        return [(b.input_tokens, b.output_tokens, b.weight / total) for b in self.buckets]

    @property
    def max_context_tokens(self) -> int:
        """Longest sequence a request reaches (prompt + output)."""
        return max(i + o for i, o, _ in self.mix())


class Engine(Spec):
    """The serving engine and the behaviour of it that the cost model follows."""

    name: EngineName = Field(default="vllm", description="vllm | sglang | tensorrt-llm.")
    batching: Literal["continuous", "static"] = Field(
        description="continuous: requests join and leave every iteration, prompts prefilled in chunks beside "
        "the decoding batch (vLLM, SGLang, TensorRT-LLM in-flight batching); static: a whole batch is "
        "prefilled, then decoded to its end (TensorRT-LLM's gptSessionBenchmark)."
    )
    decode_attention: Literal["grouped", "per_query_head"] = Field(
        description="grouped: the decode kernel reads each KV head once for its query group (XQA, FlashInfer, "
        "FlashAttention); per_query_head: one thread block per query head reads its KV head (TensorRT-LLM's "
        "masked MHA kernel before v0.8, vLLM's paged-attention v1/v2): KV read num_heads/num_kv_heads times."
    )
    kv_block_tokens: int = Field(
        gt=0, le=2**16, description="Tokens per KV-cache block (paging granularity; vLLM 16, SGLang 1, TRT-LLM 32)."
    )
    two_batch_overlap: bool = Field(
        default=False,
        description="Mixture-of-experts models whose expert groups span replicas (ep > tp): each pass runs as two "
        "micro-batches whose expert all-to-alls overlap the other's compute (SGLang --enable-two-batch-overlap, "
        "vLLM --enable-dbo; off by default in both).",
    )
    gpu_memory_utilization: float = Field(
        default=0.9, ge=0.05, le=1.0,
        description="Fraction of GPU memory the engine may use for weights, activations and the KV cache "
        "(vLLM --gpu-memory-utilization, default 0.9).",
    )
    framework_overhead_bytes: Bytes = Field(
        default=2.5 * 2**30,
        description="CUDA context, NCCL and GEMM workspaces, CUDA graphs (the training family's 2.5 GiB default).",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """two_batch_overlap off (the default) is left out of dumps, so that a task without it
        serialises (and hashes) as it did before the field existed."""
        return omit_legacy_defaults(handler(self), {"two_batch_overlap": False})

    @model_validator(mode="before")
    @classmethod
    def _engine_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            name = data.get("name", "vllm")
            # An unknown name is reported on its own: the fields it would have set are filled
            # with vLLM's so that they do not add "Field required" errors beside it.
            defaults = (ENGINE_DEFAULTS.get(name) if isinstance(name, str) else None) or ENGINE_DEFAULTS["vllm"]
            data = {**defaults, **data}
        return data


class Targets(Spec):
    """Latency targets a deployment must meet (reported as met or missed)."""

    ttft_s: Seconds | None = Field(default=None, gt=0, description="Time to first token (e.g. '1s').")
    tpot_s: Seconds | None = Field(default=None, gt=0, description="Time per output token (e.g. '50ms').")


class InferenceTask(Spec):
    """One serving workload on one deployment."""

    kind: Literal["inference"] = "inference"
    requests: Requests
    concurrency: int | None = Field(
        default=None, gt=0, le=MAX_CONCURRENCY,
        description="Requests in flight over all replicas; null = as many as the plan admits and memory holds.",
    )
    weight_precision: WeightPrecision = Field(
        default="bf16", description="bf16/fp16; fp8 (W8A8 GEMMs at the fp8 peak); fp4 (NVFP4 W4A4, Blackwell)."
    )
    kv_cache_dtype: KvCacheDtype = Field(default="bf16", description="KV-cache element type.")
    engine: Engine = Field(default_factory=lambda: Engine(name="vllm"))
    targets: Targets = Targets()

    @property
    def gemm_precision(self) -> str:
        """The precision the weight GEMMs run in."""
        return self.weight_precision

    @property
    def weight_bytes(self) -> float:
        return WEIGHT_BYTES[self.weight_precision]

    @property
    def kv_bytes(self) -> float:
        return KV_BYTES[self.kv_cache_dtype]
