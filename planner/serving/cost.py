"""The serving cost of a plan: prefill (TTFT), the decode step (TPOT), throughput, memory and
the largest batch that fits.

Batch. A replica runs B sequences: ceil(concurrency / dp) when the task gives a concurrency,
capped by the plan's max_num_seqs; without a concurrency, max_num_seqs, or else the largest
batch that fits (planner.serving.memory). With continuous batching B is also capped by
max_num_batched_tokens (a decode step carries one token per sequence), with a note. With PP,
B is split into pp micro-batches of b = ceil(B / pp) that are in flight at once (one per stage).

Rounds. A round gives every sequence of the replica one token: each stage runs each of the pp
micro-batches once, so a round takes pp x the slowest stage's pass plus pp hops of the
micro-batch's hidden states (one per stage boundary and the sampled tokens back to the first
stage; not overlapped). With pp = 1 a round is one pass.

Continuous batching (steady state, renewal-reward). A slot is held by a request for its o
output steps; per round b / E[o] requests finish and as many start, so each round also
prefills b E[i] / E[o] prompt tokens (chunked prefill mixes them into the decode pass) with
b E[i^2 / 2] / E[o] causal query-key pairs. Decoding sequences sit at the time-weighted mean
context (planner.serving.memory.mean_context_tokens). TPOT = the round; throughput = B / TPOT
per replica. TTFT of a request of i prompt tokens: its prompt in chunks of
max_num_batched_tokens - b tokens, each chunk one round beside the decoding micro-batch (no
queueing before admission is counted).

Static batching (TensorRT-LLM's gptSessionBenchmark): the batch's prompts are prefilled
together (TTFT; with PP, pp micro-batches through pp stages: 2 pp - 1 stage passes), then o - 1
decode rounds at contexts i+1 .. i+o-1 (exact at the mean context i + o/2: a decode pass is
affine in the context); throughput = B o / (TTFT + (o - 1) TPOT). A request mix runs one batch
per kind, weighted by its share.

Every part of TTFT and of TPOT is a sum of pass parts (planner.serving.forward; a mixture-of-
experts stage: planner.serving.moe_forward, whose expert-parallel all-to-alls are `ep_comm`),
so the parts sum to the totals.

Monotone in the batch. Every part of a pass is nondecreasing in the tokens it carries (GEMM
rooflines, KV reads, experts touched, collectives of more bytes), the loads of a round grow with
the micro-batch ceil(B / pp), and a larger micro-batch leaves smaller prefill chunks (more rounds
to a first token): TPOT, TTFT and, with static batching, a batch's whole time are nondecreasing
in B. The serving search's bound relies on it (solvers.serving; tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from planner.core.collectives import p2p_time_s
from planner.serving.forward import ACTIVATION_BYTES, PassCost, PassLoad, pass_cost
from planner.serving.memory import StageMemory, max_batch, mean_context_tokens, stage_memory, stage_shapes
from planner.serving.moe_forward import moe_pass_cost
from planner.serving.plan import ServingPlan
from planner.serving.problem import ServingProblem

DECODE_PARTS = ("gemm", "attention", "elementwise", "lm_head", "tp_comm", "ep_comm", "pp_p2p", "prefill")
"""Parts of a decode round (TPOT); `prefill` is the extra time of the prompt tokens mixed in."""
PREFILL_PARTS = ("gemm", "attention", "elementwise", "lm_head", "tp_comm", "ep_comm", "pp_p2p")
"""Parts of the time to first token."""


@dataclass(frozen=True)
class ServingEstimate:
    """A priced serving plan. Times in seconds, memory in bytes, rates per second."""

    batch_per_replica: int
    micro_batch: int
    max_batch_fits: int
    ttft_s: float
    """Mean over the request mix (by share)."""
    ttft_max_s: float
    """The slowest request kind's TTFT."""
    tpot_s: float
    output_tokens_per_s: float
    """All replicas."""
    output_tokens_per_s_per_gpu: float
    decode_parts: dict[str, float]
    """Parts of TPOT; they sum to tpot_s."""
    prefill_parts: dict[str, float]
    """Parts of the slowest request kind's TTFT; they sum to ttft_max_s."""
    decode_tp_by_tier: list[float]
    memory: list[StageMemory]
    """One entry per kind of stage (planner.serving.memory.stage_kinds)."""
    concurrency: int
    """Requests in flight over all replicas."""
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(s.fits for s in self.memory)

    @property
    def peak_memory(self) -> StageMemory:
        return max(self.memory, key=lambda s: s.total_bytes)


@dataclass(frozen=True)
class _Stages:
    """Prices a pass on every stage and keeps the slowest."""

    problem: ServingProblem
    plan: ServingPlan

    def slowest(self, load: PassLoad) -> PassCost:
        problem, plan = self.problem, self.plan
        kinds = stage_shapes(problem, plan.pp)
        if problem.model.family == "moe":
            costs = [moe_pass_cost(problem, plan.tp, plan.pp, plan.ep, plan.dp_attention, layers, moe_layers, first,
                                   last, load) for _, layers, moe_layers, first, last in kinds]
        else:
            costs = [pass_cost(problem, plan.tp, layers, first, last, load) for _, layers, _, first, last in kinds]
        return max(costs, key=lambda c: c.total_s)

    def hop_s(self, tokens: float) -> float:
        """One pipeline hop of `tokens` hidden states (0 without PP)."""
        if self.plan.pp == 1:
            return 0.0
        cluster = self.problem.cluster
        stride = self.plan.tp
        crosses = [True] + [stride * self.plan.pp > cluster.tier_size(i - 1) for i in range(1, len(cluster.tiers))]
        return float(p2p_time_s(tokens * self.problem.model.hidden_size * ACTIVATION_BYTES, crosses, cluster))


def _round(stages: _Stages, load: PassLoad) -> tuple[PassCost, float]:
    """(parts of one round: pp x the slowest stage's pass, its pp hops in seconds)."""
    pp = stages.plan.pp
    return stages.slowest(load).scaled(pp), pp * stages.hop_s(load.tokens)


def window_note(model) -> list[str]:
    """The serving model's silence on a sliding window, said (not a silent default)."""
    if getattr(model, "sliding_window", None) is None:
        return []
    every = getattr(model, "full_attention_every", None)
    which = f"one layer in {every} attends fully" if every else "every layer windowed"
    return [f"{model.name}'s {model.sliding_window}-token sliding window ({which}) is not modelled for serving: "
            "priced as full attention with the whole context cached in every layer (over-priced: the engines "
            "keep window-sized caches for windowed layers)"]


def _batch(problem: ServingProblem, plan: ServingPlan, fitting: int) -> tuple[int, list[str]]:
    notes = window_note(problem.model)
    concurrency = problem.task.concurrency
    if concurrency is not None:
        batch = math.ceil(concurrency / plan.dp)
        if plan.max_num_seqs is not None and batch > plan.max_num_seqs:
            notes.append(f"concurrency {concurrency:,} over {plan.dp} replicas is {batch:,} per replica; "
                         f"max_num_seqs caps it at {plan.max_num_seqs:,} (the rest wait)")
            batch = plan.max_num_seqs
    elif plan.max_num_seqs is not None:
        batch = plan.max_num_seqs
    else:
        batch = max(fitting, plan.pp)
    budget = plan.max_num_batched_tokens
    if problem.task.engine.batching == "continuous" and batch > budget:
        # A decode step carries one token per sequence: the engine runs at most the token
        # budget's sequences at once (vLLM requires max_num_batched_tokens >= max_num_seqs).
        why = (f"concurrency {concurrency:,} over {plan.dp} replicas is {batch:,} per replica"
               if concurrency is not None else f"{batch:,} sequences per replica fit in memory")
        notes.append(f"{why}; max_num_batched_tokens caps it at {budget:,} (a decode step carries one token per "
                     "sequence" + ("; the rest wait)" if concurrency is not None else ")"))
        batch = budget
    return max(batch, plan.pp), notes


def evaluate(problem: ServingProblem, plan: ServingPlan, fitting: int | None = None) -> ServingEstimate:
    """Prices `plan` (checked with planner.serving.plan.check_plan) for `problem`. `fitting`:
    the largest batch that fits (planner.serving.memory.max_batch of the plan's layout; it does
    not depend on max_num_seqs), when the caller already has it."""
    task = problem.task
    if fitting is None:
        fitting = max_batch(problem, plan)
    batch, notes = _batch(problem, plan, fitting)
    micro = math.ceil(batch / plan.pp)
    stages = _Stages(problem, plan)
    mix = task.requests.mix()
    if task.engine.batching == "continuous":
        ttft, ttft_max, prefill, tpot, decode, tiers, rate = _continuous(problem, plan, stages, batch, micro)
    else:
        ttft, ttft_max, prefill, tpot, decode, tiers, rate = _static(stages, batch, micro, mix)
    total_rate = rate * plan.dp
    concurrency = min(task.concurrency, batch * plan.dp) if task.concurrency is not None else batch * plan.dp
    if task.concurrency is not None and task.concurrency < batch * plan.dp:
        total_rate *= task.concurrency / (batch * plan.dp)  # some replicas run one sequence fewer
    return ServingEstimate(
        batch_per_replica=batch, micro_batch=micro, max_batch_fits=fitting, ttft_s=ttft, ttft_max_s=ttft_max,
        tpot_s=tpot, output_tokens_per_s=total_rate, output_tokens_per_s_per_gpu=total_rate / plan.num_devices,
        decode_parts=decode, prefill_parts=prefill, decode_tp_by_tier=tiers,
        memory=stage_memory(problem, plan, batch), concurrency=concurrency, notes=notes,
    )


def _parts(cost: PassCost, hops_s: float, extra: dict[str, float] | None = None) -> dict[str, float]:
    return {**cost.parts(), "pp_p2p": hops_s, **(extra or {})}


def _chunks(prompt: int, chunk: int) -> list[tuple[int, int, float, bool]]:
    """A prompt's prefill chunks grouped as (count, tokens, mean tokens before it, last?): the
    full chunks before the last are priced once at their mean offset (a pass is affine in the
    offset: only the causal attention pairs depend on it), the last one on its own."""
    full, rest = divmod(prompt, chunk)
    if rest == 0:
        full, rest = full - 1, chunk
    groups = [(full, chunk, (full - 1) / 2.0 * chunk, False)] if full else []
    return groups + [(1, rest, float(full * chunk), True)]


def _continuous(problem: ServingProblem, plan: ServingPlan, stages: _Stages, batch: int, micro: int):
    mix = problem.task.requests.mix()
    mean_in = sum(w * i for i, _, w in mix)
    mean_out = sum(w * o for _, o, w in mix)
    context = mean_context_tokens(problem)
    starts = micro / mean_out  # requests that finish (and start) per round, per micro-batch
    pure = PassLoad(decode_seqs=micro, decode_context_tokens=context, logit_seqs=micro)
    mixed = PassLoad(decode_seqs=micro, decode_context_tokens=context, prefill_tokens=starts * mean_in,
                     prefill_pairs=starts * sum(w * i * i / 2.0 for i, _, w in mix), logit_seqs=micro + starts)
    decode_cost, decode_hops = _round(stages, pure)
    mixed_cost, mixed_hops = _round(stages, mixed)
    tpot = mixed_cost.total_s + mixed_hops
    decode = _parts(decode_cost, decode_hops, {"prefill": tpot - decode_cost.total_s - decode_hops})

    chunk = max(plan.max_num_batched_tokens - micro, 1)
    ttfts = []
    for prompt, _, share in mix:
        total, hops = PassCost(tp_by_tier=[0.0] * len(decode_cost.tp_by_tier)), 0.0
        for count, size, done, final in _chunks(prompt, chunk):
            load = PassLoad(decode_seqs=micro - 1, decode_context_tokens=context, prefill_tokens=size,
                            prefill_pairs=size * (done + size / 2.0), logit_seqs=micro - 1 + final)
            cost, hop = _round(stages, load)
            total, hops = total.plus(cost.scaled(count)), hops + count * hop
        ttfts.append((total.total_s + hops, share, _parts(total, hops)))
    ttft = sum(t * share for t, share, _ in ttfts)
    slowest = max(ttfts, key=lambda x: x[0])
    return ttft, slowest[0], slowest[2], tpot, decode, decode_cost.tp_by_tier, batch / tpot


@dataclass(frozen=True)
class _Kind:
    """One request kind of a static batch: its share, lengths, TTFT and decode round."""

    share: float
    output_tokens: int
    ttft_s: float
    prefill_parts: dict[str, float]
    tpot_s: float
    decode_parts: dict[str, float]
    tp_by_tier: list[float]


def _static(stages: _Stages, batch: int, micro: int, mix):
    pp = stages.plan.pp
    kinds = []
    for prompt, out, share in mix:
        load = PassLoad(prefill_tokens=micro * prompt, prefill_pairs=micro * prompt * prompt / 2.0, logit_seqs=micro)
        prefill = stages.slowest(load).scaled(2 * pp - 1)
        prefill_hops = (2 * pp - 2) * stages.hop_s(load.tokens)
        decode, hops = _round(stages, PassLoad(decode_seqs=micro, decode_context_tokens=prompt + out / 2.0,
                                               logit_seqs=micro))
        kinds.append(_Kind(share, out, prefill.total_s + prefill_hops, _parts(prefill, prefill_hops),
                           decode.total_s + hops, _parts(decode, hops, {"prefill": 0.0}), decode.tp_by_tier))
    total_time = sum(k.share * (k.ttft_s + (k.output_tokens - 1) * k.tpot_s) for k in kinds)
    tokens = sum(k.share * batch * k.output_tokens for k in kinds)
    steps = sum(k.share * (k.output_tokens - 1) for k in kinds)
    weights = [k.share * (k.output_tokens - 1) / steps if steps > 0 else k.share for k in kinds]
    tpot = sum(w * k.tpot_s for w, k in zip(weights, kinds, strict=True))
    decode_parts = {p: sum(w * k.decode_parts[p] for w, k in zip(weights, kinds, strict=True)) for p in DECODE_PARTS}
    tiers = [sum(w * k.tp_by_tier[i] for w, k in zip(weights, kinds, strict=True))
             for i in range(len(kinds[0].tp_by_tier))]
    slowest = max(kinds, key=lambda k: k.ttft_s)
    ttft = sum(k.share * k.ttft_s for k in kinds)
    return ttft, slowest.ttft_s, slowest.prefill_parts, tpot, decode_parts, tiers, tokens / total_time
