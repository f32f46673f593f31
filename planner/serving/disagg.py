"""Disaggregated serving: a prefill pool and a decode pool of replicas on separate GPUs, the
prompt's KV cache sent from one to the other (DistServe, Splitwise, Mooncake; SGLang's
`--disaggregation-mode prefill|decode`, vLLM's KV connectors, TensorRT-LLM's disaggregated
serving, NVIDIA Dynamo).

```yaml
family: serving
prefill: {tp: 8, pp: 1, dp: 2, max_num_batched_tokens: 8192}   # the prefill chunk
decode:  {tp: 8, pp: 1, dp: 6, max_num_seqs: 256}
```
Each pool is a serving plan of its own (tp, pp, dp, and for MoE models ep and dp_attention,
as in planner.serving.plan) over its share of the task's GPUs; the prefill pool takes the first
GPUs, the decode pool the rest, and prefill.num_devices + decode.num_devices = the task's GPUs.
Continuous batching only.

Prefill pool. A replica packs prompts into passes of C = max_num_batched_tokens tokens (chunked
prefill; a prompt longer than C spans ceil(i / C) passes). A pass carries C prompt tokens with
C E[i^2/2] / E[i] causal query-key pairs (a prompt of i tokens has i^2/2 however it is chunked)
and samples C / E[i] first tokens. With PP the passes stream through the stages (pp in flight),
so a replica completes one pass per stage time s = the slowest stage's pass + one hop of C
hidden states, and runs C / (E[i] s) requests per second. The prompt's KV cache leaves during
the next passes (asynchronous sends: NIXL, Mooncake's transfer engine): each GPU of the replica
sends its share -- the model's unique KV bytes per token (planner.serving.memory) x its stage's
share of the layers / tp -- over its own link of the network tier that spans the deployment (the
NVLink domain when the whole task fits in one, else the scale-out tier), which caps a replica at
(link bandwidth x efficiency) / (E[i] x bytes per token per GPU) requests per second.
    TTFT of a prompt of i tokens = (ceil(i / C) + pp - 1) s + its KV transfer (latency + bytes /
    bandwidth; not overlapped with the prompt's own prefill, as vLLM's NIXL connector sends
    after the prefill ends). Priced at saturation: the pass a prompt joins is full.
    Memory: the weights, the KV of the prompts in flight until sent (pp passes of C tokens and
    one prompt's earlier chunks: pp C + max i tokens; with dp_attention 1/tp of them per rank),
    the workspace of a C-token pass with the logits of the C / min i prompts it may finish, the
    engine overhead.

Decode pool. A replica decodes B sequences (max_num_seqs; the task's concurrency over the
decode replicas when given) in rounds with no prompt mixed in (planner.serving.cost's decode
round: pp micro-batches of ceil(B / pp), pp hops). Its max_num_batched_tokens (at least B: a
decode pass carries one token per sequence) sizes the workspace the engine reserves; the search
sets it to B. TPOT = the round. A request's first token comes from the prefill pool,
so it holds a decode slot for E[o] - 1 rounds: a replica finishes B / ((E[o] - 1) TPOT) requests
per second. Memory as a colocated replica at batch B (planner.serving.memory.stage_memory).

The deployment runs lambda = min(prefill replicas x their rate, decode replicas x theirs)
requests per second (the slower pool sets the pace: `bottleneck`), E[o] lambda output tokens
per second. TPOT is priced at the decode batch B: when the prefill pool is the bottleneck the
decode replicas run fewer sequences and TPOT is lower, so the figure is an upper bound there.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from planner.core.collectives import p2p_time_s
from planner.core.provenance import Provenance
from planner.core.schema import Spec
from planner.serving.cost import _round, _Stages, window_note
from planner.serving.forward import PassCost, PassLoad
from planner.serving.memory import (
    LOGIT_BYTES,
    StageMemory,
    kv_cache_bytes_per_token,
    kv_cache_bytes_per_token_gpu,
    mean_context_tokens,
    stage_layers,
    stage_memory,
)
from planner.serving.plan import ServingPlan, check_plan
from planner.serving.problem import ServingProblem

PREFILL_PARTS = ("gemm", "attention", "elementwise", "lm_head", "tp_comm", "ep_comm", "pp_p2p", "kv_transfer")
"""Parts of the slowest request kind's TTFT in a disaggregated deployment."""


class ServingPool(ServingPlan):
    """One pool of a disaggregated deployment: a serving plan over the pool's GPUs."""

    family: Literal["serving"] = Field(default="serving", exclude=True, description="(implied inside a pool)")
    provenance: Provenance = Field(default_factory=Provenance, exclude=True)


class DisaggregatedPlan(Spec):
    """A prefill pool and a decode pool (module doc)."""

    family: Literal["serving"] = Field(description="Marks a serving plan.")
    prefill: ServingPool = Field(description="The prefill pool: tp, pp, dp, max_num_batched_tokens (the chunk).")
    decode: ServingPool = Field(description="The decode pool: tp, pp, dp, max_num_seqs.")
    provenance: Provenance = Provenance()

    @property
    def num_devices(self) -> int:
        return self.prefill.num_devices + self.decode.num_devices

    def summary(self) -> str:
        chunk = f", chunk {self.prefill.max_num_batched_tokens}"
        return (f"prefill {self.prefill.summary().replace(', max', ' max')}{chunk} | "
                f"decode {self.decode.summary()}")


def is_disaggregated_data(data: dict) -> bool:
    """Whether a serving plan mapping describes a disaggregated deployment."""
    return "prefill" in data or "decode" in data


def pool_problem(problem: ServingProblem, devices: int) -> ServingProblem:
    """The problem one pool is priced against: the same model, task and network tiers over the
    pool's `devices` GPUs."""
    return dataclasses.replace(problem, cluster=problem.cluster.model_copy(update={"num_devices": devices}))


def check_disaggregated(plan: DisaggregatedPlan, problem: ServingProblem) -> list[str]:
    """Every way the plan is inconsistent with the problem, each naming its field."""
    errors = []
    devices = problem.cluster.num_devices
    if problem.task.engine.batching != "continuous":
        errors.append("disaggregated serving runs continuous batching; the task's engine.batching is static")
    if plan.num_devices != devices:
        errors.append(f"prefill and decode pools hold {plan.prefill.num_devices:,} + {plan.decode.num_devices:,} = "
                      f"{plan.num_devices:,} GPUs, but the task has {devices:,}; make the sum equal")
    if plan.prefill.max_num_seqs is not None:
        errors.append("prefill.max_num_seqs: a prefill pool runs passes of max_num_batched_tokens prompt tokens; "
                      "remove max_num_seqs there (it is the decode pool's)")
    if plan.decode.max_num_seqs is None and problem.task.concurrency is None:
        errors.append("decode.max_num_seqs: give the decode pool's sequences per replica (or the task's concurrency)")
    for name, pool in (("prefill", plan.prefill), ("decode", plan.decode)):
        sub = pool_problem(problem, pool.num_devices)
        errors += [f"{name}: {e}" for e in check_plan(pool, sub) if "GPUs, but the task has" not in e]
    return errors


@dataclass(frozen=True)
class DisaggregatedEstimate:
    """A priced disaggregated deployment. Times in seconds, rates per second, memory in bytes."""

    prefill_requests_per_s: float
    """One prefill replica's rate (the smaller of its compute and its KV links)."""
    prefill_network_requests_per_s: float
    """What one prefill replica's KV links alone allow."""
    decode_requests_per_s: float
    """One decode replica's rate (inf when no request decodes past its first token)."""
    requests_per_s: float
    bottleneck: str
    """prefill | decode: the pool that sets the pace."""
    prefill_pass_s: float
    """One prefill pass's stage time (the prefill pool's pace)."""
    ttft_s: float
    ttft_max_s: float
    kv_transfer_max_s: float
    tpot_s: float
    batch_per_replica: int
    """Decode sequences per decode replica."""
    micro_batch: int
    max_batch_fits: int
    """The largest decode batch that fits."""
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    prefill_parts: dict[str, float]
    decode_parts: dict[str, float]
    prefill_memory: list[StageMemory]
    decode_memory: list[StageMemory]
    concurrency: int
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(s.fits for s in (*self.prefill_memory, *self.decode_memory))

    @property
    def memory(self) -> list[StageMemory]:
        return [*self.prefill_memory, *self.decode_memory]

    @property
    def peak_memory(self) -> StageMemory:
        return max(self.memory, key=lambda s: s.total_bytes / s.capacity_bytes)


def transfer_tier(problem: ServingProblem) -> int:
    """The network tier the KV cache crosses: the innermost one whose domain holds the task's GPUs."""
    cluster = problem.cluster
    for index in range(len(cluster.tiers)):
        if cluster.tier_size(index) >= cluster.num_devices:
            return index
    return len(cluster.tiers) - 1


def kv_bytes_per_token_per_sender(problem: ServingProblem, pool: ServingPlan) -> float:
    """KV bytes per prompt token that the busiest GPU of a prefill replica sends: the model's
    unique KV bytes per token x its stage's share of the layers, split over the tp GPUs of the stage."""
    layers = max(stage_layers(problem.model.num_layers, pool.pp))
    return kv_cache_bytes_per_token(problem) * layers / problem.model.num_layers / pool.tp


def kv_transfer_s(problem: ServingProblem, pool: ServingPlan, tokens: float) -> float:
    """Time to send the KV cache of `tokens` prompt tokens from a prefill replica (its GPUs in parallel)."""
    tier = transfer_tier(problem)
    crosses = [index <= tier for index in range(len(problem.cluster.tiers))]
    return float(p2p_time_s(tokens * kv_bytes_per_token_per_sender(problem, pool), crosses, problem.cluster))


def _link_bytes_per_s(problem: ServingProblem) -> float:
    tier = problem.cluster.tiers[transfer_tier(problem)]
    return tier.bandwidth_bytes_per_s * tier.efficiency


@dataclass(frozen=True)
class PrefillPrice:
    """One prefill replica: its pass, its rate, the TTFT of each request kind, its memory."""

    pass_cost: PassCost
    hop_s: float
    pass_s: float
    requests_per_s: float
    network_requests_per_s: float
    ttfts: list[tuple[float, float, float]]
    """(TTFT, share, KV transfer) per request kind."""
    memory: list[StageMemory]

    @property
    def ttft_max_s(self) -> float:
        return max(t for t, _, _ in self.ttfts)

    @property
    def ttft_s(self) -> float:
        return sum(t * share for t, share, _ in self.ttfts)


def price_prefill(problem: ServingProblem, pool: ServingPlan) -> PrefillPrice:
    """Prices one prefill replica of `pool` (`problem`: the whole task; module doc)."""
    sub = pool_problem(problem, pool.num_devices)
    mix = problem.task.requests.mix()
    chunk = pool.max_num_batched_tokens
    mean_in = sum(w * i for i, _, w in mix)
    pairs_per_token = sum(w * i * i / 2.0 for i, _, w in mix) / mean_in
    stages = _Stages(sub, pool)
    load = PassLoad(prefill_tokens=chunk, prefill_pairs=chunk * pairs_per_token, logit_seqs=chunk / mean_in)
    cost = stages.slowest(load)
    hop = stages.hop_s(chunk)
    pass_s = cost.total_s + hop
    compute_rate = chunk / mean_in / pass_s
    network_rate = _link_bytes_per_s(problem) / (mean_in * kv_bytes_per_token_per_sender(problem, pool))
    ttfts = []
    for prompt, _, share in mix:
        transfer = kv_transfer_s(problem, pool, prompt)
        ttfts.append(((math.ceil(prompt / chunk) + pool.pp - 1) * pass_s + transfer, share, transfer))
    return PrefillPrice(cost, hop, pass_s, min(compute_rate, network_rate), network_rate, ttfts,
                        prefill_memory(problem, pool))


def prefill_memory(problem: ServingProblem, pool: ServingPlan) -> list[StageMemory]:
    """Memory of one GPU of each kind of prefill stage (module doc)."""
    sub = pool_problem(problem, pool.num_devices)
    mix = problem.task.requests.mix()
    chunk = pool.max_num_batched_tokens
    held_tokens = pool.pp * chunk + max(i for i, _, _ in mix)
    if pool.dp_attention:
        held_tokens = math.ceil(held_tokens / pool.tp)
    finishing = math.ceil(chunk / min(i for i, _, _ in mix))
    out = []
    for s in stage_memory(sub, pool, 1):  # weights, the workspace of a chunk-token pass, overhead
        kv = held_tokens * kv_cache_bytes_per_token_gpu(problem, pool.tp, s.layers, pool.dp_attention)
        logits = (finishing - 1) * problem.model.vocab_size * LOGIT_BYTES if s.workspace_bytes else 0.0
        last = s.stage == pool.pp - 1
        out.append(dataclasses.replace(s, kv_cache_bytes=kv, workspace_bytes=s.workspace_bytes + (logits if last
                                                                                                   else 0.0)))
    return out


@dataclass(frozen=True)
class DecodePrice:
    """One decode replica at a batch: its round, its rate, its memory (priced when asked for)."""

    problem: ServingProblem
    plan: ServingPlan
    batch: int
    micro_batch: int
    round_cost: PassCost
    hops_s: float
    tpot_s: float
    requests_per_s: float

    @property
    def memory(self) -> list[StageMemory]:
        return stage_memory(pool_problem(self.problem, self.plan.num_devices), self.plan, self.batch)


def decode_steps(problem: ServingProblem) -> float:
    """Rounds a request spends in the decode pool on average: E[o] - 1 (its first token is the prefill's)."""
    return sum(w * (o - 1) for _, o, w in problem.task.requests.mix())


def price_decode(problem: ServingProblem, pool: ServingPlan, batch: int) -> DecodePrice:
    """Prices one decode replica of `pool` running `batch` sequences."""
    sub = pool_problem(problem, pool.num_devices)
    plan = pool.model_copy(update={"max_num_seqs": batch})
    micro = math.ceil(batch / pool.pp)
    load = PassLoad(decode_seqs=micro, decode_context_tokens=mean_context_tokens(problem), logit_seqs=micro)
    cost, hops = _round(_Stages(sub, plan), load)
    tpot = cost.total_s + hops
    steps = decode_steps(problem)
    rate = batch / (steps * tpot) if steps > 0 else math.inf
    return DecodePrice(problem, plan, batch, micro, cost, hops, tpot, rate)


def decode_fits(problem: ServingProblem, pool: ServingPlan, batch: int, tied: bool = False) -> bool:
    """Whether a decode replica of `pool` holds `batch` sequences; `tied`: with a token budget of
    `batch` (the search's decode pools) rather than the pool's max_num_batched_tokens."""
    sub = pool_problem(problem, pool.num_devices)
    update = {"max_num_seqs": batch, **({"max_num_batched_tokens": max(batch, pool.pp)} if tied else {})}
    plan = pool.model_copy(update=update)
    return all(s.fits for s in stage_memory(sub, plan, batch))


def decode_max_batch(problem: ServingProblem, pool: ServingPlan, tied: bool = False, limit: int = 2**20) -> int:
    """The largest decode batch per replica that fits (0: not pp sequences); memory grows with
    the batch (KV cache and, `tied`, the batch-sized workspace), so a bisection finds it."""
    if not decode_fits(problem, pool, pool.pp, tied):
        return 0
    low, high = pool.pp, 2 * pool.pp
    while high <= limit and decode_fits(problem, pool, high, tied):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:
        mid = (low + high) // 2
        if decode_fits(problem, pool, mid, tied):
            low = mid
        else:
            high = mid
    return low


def decode_batch(problem: ServingProblem, pool: ServingPlan, fitting: int) -> tuple[int, list[str]]:
    """Sequences per decode replica: the task's concurrency over the decode replicas (capped by
    max_num_seqs), else max_num_seqs, else what fits; capped by max_num_batched_tokens (one token
    per sequence in a decode step); at least pp."""
    notes = []
    concurrency = problem.task.concurrency
    if concurrency is not None:
        batch = math.ceil(concurrency / pool.dp)
        if pool.max_num_seqs is not None and batch > pool.max_num_seqs:
            notes.append(f"concurrency {concurrency:,} over {pool.dp} decode replicas is {batch:,} per replica; "
                         f"max_num_seqs caps it at {pool.max_num_seqs:,} (the rest wait)")
            batch = pool.max_num_seqs
    elif pool.max_num_seqs is not None:
        batch = pool.max_num_seqs
    else:
        batch = fitting
    budget = pool.max_num_batched_tokens
    if batch > budget:
        # A decode step carries one token per sequence: the engine runs at most the token
        # budget's sequences at once (as planner.serving.cost._batch for a colocated replica).
        why = (f"concurrency {concurrency:,} over {pool.dp} decode replicas is {batch:,} per replica"
               if concurrency is not None else f"{batch:,} sequences per decode replica fit in memory")
        notes.append(f"{why}; decode.max_num_batched_tokens caps it at {budget:,} (a decode step carries one token "
                     "per sequence" + ("; the rest wait)" if concurrency is not None else ")"))
        batch = budget
    return max(batch, pool.pp), notes


def combine(problem: ServingProblem, plan: DisaggregatedPlan, prefill: PrefillPrice, decode: DecodePrice,
            fitting: int, notes: list[str] | None = None) -> DisaggregatedEstimate:
    """The deployment's estimate from its pools' prices (module doc). `notes`: the decode batch's;
    the model's unmodelled sliding window is said here, once, for every caller."""
    mix = problem.task.requests.mix()
    mean_out = sum(w * o for _, o, w in mix)
    prefill_rate = plan.prefill.dp * prefill.requests_per_s
    decode_rate = plan.decode.dp * decode.requests_per_s
    rate = min(prefill_rate, decode_rate)
    concurrency_limit = problem.task.concurrency
    in_flight = decode.batch * plan.decode.dp
    if concurrency_limit is not None and concurrency_limit < in_flight:
        rate = min(rate, decode_rate * concurrency_limit / in_flight)  # some replicas run one sequence fewer
        in_flight = concurrency_limit
    tokens = rate * mean_out
    slowest = max(prefill.ttfts, key=lambda x: x[0])
    prompt_passes = slowest[0] - slowest[2]
    scale = prompt_passes / prefill.pass_s if prefill.pass_s > 0 else 0.0
    prefill_parts = {**prefill.pass_cost.scaled(scale).parts(), "pp_p2p": prefill.hop_s * scale,
                     "kv_transfer": slowest[2]}
    decode_parts = {**decode.round_cost.parts(), "pp_p2p": decode.hops_s}
    return DisaggregatedEstimate(
        prefill_requests_per_s=prefill.requests_per_s, prefill_network_requests_per_s=prefill.network_requests_per_s,
        decode_requests_per_s=decode.requests_per_s, requests_per_s=rate,
        bottleneck="prefill" if prefill_rate < decode_rate else "decode", prefill_pass_s=prefill.pass_s,
        ttft_s=prefill.ttft_s, ttft_max_s=prefill.ttft_max_s, kv_transfer_max_s=max(t for _, _, t in prefill.ttfts),
        tpot_s=decode.tpot_s, batch_per_replica=decode.batch, micro_batch=decode.micro_batch, max_batch_fits=fitting,
        output_tokens_per_s=tokens, output_tokens_per_s_per_gpu=tokens / plan.num_devices,
        prefill_parts=prefill_parts, decode_parts=decode_parts, prefill_memory=prefill.memory,
        decode_memory=decode.memory, concurrency=in_flight, notes=window_note(problem.model) + list(notes or []),
    )


def evaluate_disaggregated(problem: ServingProblem, plan: DisaggregatedPlan) -> DisaggregatedEstimate:
    """Prices a disaggregated plan (checked with check_disaggregated) for `problem`."""
    prefill = price_prefill(problem, plan.prefill)
    fitting = decode_max_batch(problem, plan.decode)
    batch, notes = decode_batch(problem, plan.decode, fitting)
    decode = price_decode(problem, plan.decode, batch)
    return combine(problem, plan, prefill, decode, fitting, notes)
