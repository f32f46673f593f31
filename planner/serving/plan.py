"""Serving plans: how a deployment lays one model over its GPUs, and how many sequences a replica
runs at once.

```yaml
family: serving
tp: 4                        # tensor parallelism inside a replica (innermost: the NVLink domain)
pp: 1                        # pipeline stages per replica (micro-batches in flight = pp)
dp: 2                        # independent replicas; tp * pp * dp = the task's devices
max_num_seqs: 64             # sequences a replica runs at once (vLLM --max-num-seqs); omit: what fits
max_num_batched_tokens: 8192 # tokens in one forward pass: the prefill chunk (continuous batching)
```
Ranks are laid out TP innermost, then PP, then DP (the order vLLM, SGLang and TensorRT-LLM use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from planner.core.provenance import Provenance
from planner.core.schema import Spec

if TYPE_CHECKING:
    from planner.serving.problem import ServingProblem

DEFAULT_MAX_BATCHED_TOKENS = 8192
"""Default token budget of one forward pass: TensorRT-LLM's max_num_tokens and SGLang's
chunked_prefill_size on large GPUs are 8192."""


class ServingPlan(Spec):
    """A serving deployment of one model on the task's GPUs."""

    family: Literal["serving"] = Field(description="Marks a serving plan (training plans have no family).")
    tp: int = Field(default=1, gt=0, le=2**16, description="Tensor-parallel degree of a replica.")
    pp: int = Field(default=1, gt=0, le=2**16, description="Pipeline stages of a replica.")
    dp: int = Field(default=1, gt=0, le=2**24, description="Replicas (data parallelism).")
    max_num_seqs: int | None = Field(
        default=None, gt=0, le=2**24,
        description="Sequences one replica runs at once; null = the most that fit in memory.",
    )
    max_num_batched_tokens: int = Field(
        default=DEFAULT_MAX_BATCHED_TOKENS, gt=0, le=2**24,
        description="Tokens one forward pass carries (decode tokens plus a prefill chunk).",
    )
    provenance: Provenance = Provenance()

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def num_devices(self) -> int:
        return self.tp * self.pp * self.dp

    def summary(self) -> str:
        seqs = f", max {self.max_num_seqs} seqs" if self.max_num_seqs is not None else ""
        return f"TP{self.tp} PP{self.pp} DP{self.dp}{seqs}"


def check_plan(plan: ServingPlan, problem: ServingProblem) -> list[str]:
    """Every way the plan is inconsistent with the problem (empty when it is consistent)."""
    model, task = problem.model, problem.task
    errors = []
    devices = problem.cluster.num_devices
    if plan.num_devices != devices:
        errors.append(f"tp x pp x dp = {plan.tp} x {plan.pp} x {plan.dp} = {plan.num_devices:,} GPUs, but the task "
                      f"has {devices:,}; make the product equal (e.g. dp = {max(devices // plan.gpus_per_replica, 1)})")
    if model.num_heads % plan.tp:
        errors.append(f"tp ({plan.tp}) must divide the model's {model.num_heads} query heads")
    kv = model.kv_heads
    if kv % plan.tp and plan.tp % kv:
        errors.append(f"tp ({plan.tp}) and the model's {kv} KV heads: one must divide the other (KV heads are "
                      "split over TP, or replicated when TP is larger)")
    if plan.pp > model.num_layers:
        errors.append(f"pp ({plan.pp}) is larger than the model's {model.num_layers} layers")
    if (model.ffn_hidden_size or 0) % plan.tp:
        errors.append(f"tp ({plan.tp}) must divide the FFN width {model.ffn_hidden_size}")
    if plan.max_num_seqs is not None and plan.max_num_seqs < plan.pp:
        errors.append(f"max_num_seqs ({plan.max_num_seqs}) is smaller than pp ({plan.pp}): every pipeline stage "
                      "needs a micro-batch of at least one sequence")
    if task.engine.batching == "continuous" and plan.max_num_batched_tokens < plan.pp:
        errors.append(f"max_num_batched_tokens ({plan.max_num_batched_tokens}) is smaller than pp ({plan.pp}): "
                      "every pipeline stage needs a micro-batch of at least one sequence, one token each")
    elif task.engine.batching == "continuous" and plan.max_num_batched_tokens < (plan.max_num_seqs or 1):
        errors.append(f"max_num_batched_tokens ({plan.max_num_batched_tokens}) is smaller than max_num_seqs "
                      f"({plan.max_num_seqs}): a decode step carries one token per sequence")
    return errors
