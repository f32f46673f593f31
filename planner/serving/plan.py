"""Serving plans: how a deployment lays one model over its GPUs, and how many sequences a replica
runs at once.

```yaml
family: serving
tp: 4                        # tensor parallelism inside a replica (innermost: the NVLink domain)
pp: 1                        # pipeline stages per replica (micro-batches in flight = pp)
dp: 2                        # independent replicas; tp * pp * dp = the task's devices
max_num_seqs: 64             # sequences a replica runs at once (vLLM --max-num-seqs); omit: what fits
max_num_batched_tokens: 8192 # tokens in one forward pass: the prefill chunk (continuous batching)
ep: 8                        # mixture-of-experts models: expert-parallel degree (default 1)
dp_attention: false          # MLA models: data-parallel attention inside the TP group (default false)
```
Ranks are laid out TP innermost, then PP, then DP (the order vLLM, SGLang and TensorRT-LLM use).

Mixture-of-experts models (`ep`, `dp_attention`). Attention, the dense layers' MLPs, the shared
experts and the LM head are laid out by tp (and dp_attention) as for a dense model; only the
routed experts of the MoE layers follow `ep`:
- ep = 1: every routed expert is split over the TP group like a dense MLP (vLLM and SGLang
  without expert parallelism: each TP rank holds 1/tp of every expert);
- ep > 1: each routed expert lives whole on one GPU; the E experts of a layer are dealt out over
  an expert-parallel group of `ep` GPUs of the same pipeline stage: the TP group of this replica
  and of ep / tp - 1 more replicas (so ep is a multiple of tp, divides tp x dp and divides E).
  ep = tp is SGLang's `--ep-size` equal to `--tp-size`; ep = tp x dp is vLLM's
  `--enable-expert-parallel` with `--data-parallel-size dp` (EP = TP x DP over the MoE layers,
  attention replicated per DP rank). With ep > tp tokens reach the experts by a dispatch
  all-to-all and come back by a combine all-to-all over that group, every MoE layer (DeepEP /
  pplx style; each TP rank dispatches 1/tp of its replica's tokens); with ep = tp the TP group
  already holds every token before the MLP and the expert outputs join its all-reduce.
- dp_attention (MLA models only, SGLang's `--enable-dp-attention` with the DP size equal to
  tp): attention runs data-parallel inside the TP group: each of the tp GPUs holds all of the
  attention weights and runs 1/tp of the replica's sequences with their latent KV cache only.
  With TP attention, MLA's one latent KV head cannot be split over heads, so every TP rank holds
  (and reads) the latent KV of every sequence of the replica: tp copies. With dp_attention the
  tokens are all-gathered over the TP group before the (TP-sharded) dense MLP, shared experts
  and dispatch, and reduce-scattered after, instead of TP attention's two all-reduces.
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
    ep: int = Field(
        default=1, gt=0, le=2**16,
        description="Expert-parallel degree of the MoE layers: 1 = routed experts split over TP; > 1 = whole "
        "experts dealt over ep GPUs (a multiple of tp dividing tp x dp; see the module doc).",
    )
    dp_attention: bool = Field(
        default=False,
        description="MLA models: attention data-parallel inside the TP group (each rank 1/tp of the sequences, "
        "all attention weights, its own latent KV) instead of tensor-parallel.",
    )
    provenance: Provenance = Provenance()

    @property
    def expert_tp(self) -> int:
        """GPUs one routed expert is split over: tp with ep = 1, else 1."""
        return self.tp if self.ep == 1 else 1

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def num_devices(self) -> int:
        return self.tp * self.pp * self.dp

    def summary(self) -> str:
        seqs = f", max {self.max_num_seqs} seqs" if self.max_num_seqs is not None else ""
        moe = (f" EP{self.ep}" if self.ep > 1 else "") + (" DPattn" if self.dp_attention else "")
        return f"TP{self.tp} PP{self.pp} DP{self.dp}{moe}{seqs}"


def check_plan(plan: ServingPlan, problem: ServingProblem) -> list[str]:
    """Every way the plan is inconsistent with the problem (empty when it is consistent)."""
    model, task = problem.model, problem.task
    errors = []
    devices = problem.cluster.num_devices
    if plan.num_devices != devices:
        errors.append(f"tp x pp x dp = {plan.tp} x {plan.pp} x {plan.dp} = {plan.num_devices:,} GPUs, but the task "
                      f"has {devices:,}; make the product equal (e.g. dp = {max(devices // plan.gpus_per_replica, 1)})")
    moe = model.family == "moe"
    if not plan.dp_attention and model.num_heads % plan.tp:
        errors.append(f"tp ({plan.tp}) must divide the model's {model.num_heads} query heads")
    kv = model.kv_heads
    if model.latent_attention:
        pass  # MLA: one latent per token, no KV heads to split (the query heads rule above applies)
    elif kv % plan.tp and plan.tp % kv:
        errors.append(f"tp ({plan.tp}) and the model's {kv} KV heads: one must divide the other (KV heads are "
                      "split over TP, or replicated when TP is larger)")
    if plan.pp > model.num_layers:
        errors.append(f"pp ({plan.pp}) is larger than the model's {model.num_layers} layers")
    if (model.ffn_hidden_size or 0) % plan.tp:
        errors.append(f"tp ({plan.tp}) must divide the FFN width {model.ffn_hidden_size}")
    errors += _check_experts(plan, model) if moe else _check_dense(plan)
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


def _check_dense(plan: ServingPlan) -> list[str]:
    errors = []
    if plan.ep != 1:
        errors.append(f"ep ({plan.ep}) applies to mixture-of-experts models; this model is dense (use ep: 1)")
    if plan.dp_attention:
        errors.append("dp_attention applies to multi-head latent attention (MLA) models; this model is dense "
                      "(use dp_attention: false)")
    return errors


def _check_experts(plan: ServingPlan, model) -> list[str]:
    """The expert-parallel rules of the module doc for a mixture-of-experts model."""
    errors = []
    experts, ep, tp = model.moe.num_experts, plan.ep, plan.tp
    if plan.dp_attention and not model.latent_attention:
        errors.append(f"dp_attention applies to multi-head latent attention (MLA) models; {model.name} has "
                      "GQA/MHA attention, whose KV heads TP already splits (use dp_attention: false)")
    if experts % ep:
        errors.append(f"ep ({ep}) must divide the model's {experts} routed experts")
    if ep > 1 and ep % tp:
        errors.append(f"ep ({ep}) must be 1 or a multiple of tp ({tp}): an expert-parallel group is whole TP groups")
    if ep > 1 and (tp * plan.dp) % ep:
        errors.append(f"ep ({ep}) must divide tp x dp = {tp} x {plan.dp} = {tp * plan.dp} (the GPUs of one "
                      "pipeline stage over all replicas)")
    if model.moe.ffn_hidden_size % plan.expert_tp:
        errors.append(f"tp ({tp}) must divide the expert width {model.moe.ffn_hidden_size} (with ep 1 each routed "
                      "expert is split over TP); or use ep > 1")
    if model.moe.shared_ffn_hidden_size % tp:
        errors.append(f"tp ({tp}) must divide the shared experts' width {model.moe.shared_ffn_hidden_size}")
    return errors
