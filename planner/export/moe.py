"""Mixture-of-experts settings shared by the Megatron-LM and Megatron-Bridge exports.

Both targets configure Megatron-Core's TransformerConfig, so the MoE part of a plan is built
once, as TransformerConfig field names, and rendered twice: as Megatron-LM flags (megatron.py)
and as Bridge overrides (bridge.py). `moe_settings` returns

  model     the MoE architecture the plan was priced for: experts, routed width, top-k, which
            layers are MoE (moe_layer_freq, one 0/1 per layer), shared experts, the router
            (score function, group-limited routing, load balancing), capacity (None = dropless)
            and the multi-token-prediction modules;
  runtime   the plan's expert grid and kernels: EP, ETP, the token dispatcher, grouped GEMMs
            (the cost model prices grouped GEMMs), fp32 router scores (as the cost model keeps
            them), no shared-expert overlap (not priced), and the EP all-to-all overlap.

The EP overlap is --overlap-moe-expert-parallel-comm together with --delay-wgrad-compute, as
Megatron-Core's MoE README pairs them (core_v0.16.1 megatron/core/transformer/moe/README.md
l.251, l.434) and Bridge's performance recipes set them (moe_a2a_overlap turns on both, v0.2.2
scripts/performance/utils/helpers.py l.183-187). Megatron requires only the first; the second
(splitting the weight-gradient GEMMs out so the combine all-to-all of the backward overlaps
them) needs the first (transformer_config.py l.1908-1921).

Megatron-Core refuses some plans the cost model prices; `check_megatron_core` names them
(transformer_config.py core_v0.16.1):
  - EP overlap with full recompute, or with PP > 1 and no virtual stages (l.1852-1884);
  - EP overlap with more than one MTP module, or with one and PP = 1 (l.1889-1897);
  - biases on the expert matrices with ETP > 1 ("Bias in Moe is only supported when ETP==1",
    l.1589-1592);
  - aux-loss-free balancing (expert bias) with a softmax router (l.1594-1598);
  - the flex dispatcher with ETP x EP = 1 (moe/token_dispatcher.py l.1346).
Full recompute: the cost model recomputes an MoE model's MoE blocks only (its dense layers keep
their activations; plan.recompute_num_layers counts MoE blocks per stage). Megatron recomputes
the first N layers of every model chunk (--recompute-method block), dense or MoE;
`moe_recompute_layers` takes the smallest N that recomputes at least the planned MoE blocks on
every stage, and reports any dense layers or extra MoE blocks it recomputes as an approximation
(more recompute: slower, never more memory).

Megatron-Core has no fp8 token dispatch (moe/fused_a2a.py l.311, l.355: "we do not support
fp8 dispatch"): a model with dispatch_dtype fp8 is exported with a bf16 dispatch, an explicit
approximation (twice the dispatch bytes the plan was priced with).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.export.base import ExportError, model_chunk_layers
from planner.llm.plan import Plan
from planner.llm.problem import Problem

FLEX_BACKEND = "deepep"
"""The flex dispatcher's backend (DeepEP: Hopper and Ampere; Megatron's default backend)."""


@dataclass
class MoESettings:
    """TransformerConfig fields of an MoE plan (None = unset), in the order they are written."""

    model: dict[str, object]
    runtime: dict[str, object]
    notes: list[str] = field(default_factory=list)


def is_moe(problem: Problem) -> bool:
    return problem.model.family == "moe"


def dispatcher(plan: Plan) -> str:
    return plan.dispatcher


def layer_pattern(problem: Problem) -> list[int]:
    """1 (MoE) / 0 (dense) per layer, in order (Megatron's moe_layer_freq as a list)."""
    return [int(x) for x in problem.model.moe_layers]


def check_megatron_core(problem: Problem, plan: Plan) -> None:
    """ExportError for an MoE plan Megatron-Core refuses (see the module docstring)."""
    model = problem.model
    moe = model.moe
    mtp = model.mtp_layers
    if plan.ep_comm_overlap:
        if plan.recompute == "full":
            raise ExportError("ep_comm_overlap with full recompute: Megatron-Core refuses it ('disable full "
                              "recomputation when enabling overlap_moe_expert_parallel_comm'); re-plan with "
                              "ep_comm_overlap: false or recompute none/selective")
        if plan.pp > 1 and plan.virtual_stages == 1:
            raise ExportError(f"ep_comm_overlap with PP {plan.pp} and no virtual stages: Megatron-Core's EP overlap "
                              "runs on the interleaved schedule only ('virtual_pipeline_model_parallel_size must be "
                              "specified when pipeline_model_parallel_size > 1'); re-plan with virtual_stages > 1 or "
                              "ep_comm_overlap: false")
        if mtp > 1:
            raise ExportError(f"ep_comm_overlap with {mtp} MTP modules: Megatron-Core's EP overlap takes at most one "
                              "('MTP layernum only supports 1'); re-plan with ep_comm_overlap: false")
        if mtp == 1 and plan.pp == 1:
            raise ExportError("ep_comm_overlap with an MTP module and PP 1: Megatron-Core refuses it ('Pipeline model "
                              "parallel size must be larger than 1 when enabling overlap_moe_expert_parallel_comm "
                              "with MTP layer'); re-plan with pp > 1 or ep_comm_overlap: false")
    if plan.etp > 1 and (moe.bias or model.linear_bias):
        raise ExportError(f"ETP {plan.etp} with biases on the expert matrices ({model.name}): Megatron-Core supports "
                          "MoE biases with ETP 1 only ('Bias in Moe is only supported when ETP==1'); re-plan with "
                          "etp: 1")
    if moe.router.load_balance == "aux_loss_free" and moe.router.score != "sigmoid":
        raise ExportError(f"{model.name}: aux-loss-free balancing (a per-expert routing bias) with a "
                          f"{moe.router.score} router: Megatron-Core's expert bias needs the sigmoid score function")
    if dispatcher(plan) == "flex" and plan.etp * plan.ep == 1:
        raise ExportError("the flex (DeepEP) dispatcher with ETP x EP = 1: Megatron-Core refuses it ('Flex token "
                          "dispatcher requires TPxEP > 1'); use dispatcher: alltoall")


def moe_settings(problem: Problem, plan: Plan) -> MoESettings | None:
    """The MoE fields of TransformerConfig for `plan` (None for a dense model)."""
    if not is_moe(problem):
        return None
    check_megatron_core(problem, plan)
    model = problem.model
    moe, router = model.moe, model.moe.router
    pattern = layer_pattern(problem)
    groups = router.num_groups
    arch: dict[str, object] = {
        "num_moe_experts": moe.num_experts,
        "moe_ffn_hidden_size": moe.ffn_hidden_size,
        "moe_router_topk": moe.top_k,
        "moe_layer_freq": 1 if all(pattern) else pattern,
        "moe_shared_expert_intermediate_size": moe.shared_ffn_hidden_size or None,
        "moe_router_score_function": router.score,
        # top-1 with softmax needs softmax before the top-k (Megatron refuses it otherwise: a softmax
        # over one selected score has zero gradient; transformer_config.py l.1641-1649)
        "moe_router_pre_softmax": moe.top_k == 1 and router.score == "softmax",
        "moe_router_num_groups": groups,
        "moe_router_group_topk": router.topk_groups if groups is not None else None,
        "moe_router_load_balancing_type": "aux_loss" if router.load_balance == "aux_loss" else "none",
        "moe_router_enable_expert_bias": router.load_balance == "aux_loss_free",
        "moe_expert_capacity_factor": moe.capacity_factor,
        "mtp_num_layers": model.mtp_layers or None,
    }
    kind = dispatcher(plan)
    runtime: dict[str, object] = {
        "expert_model_parallel_size": plan.ep,
        "expert_tensor_parallel_size": plan.etp,
        "moe_token_dispatcher_type": kind,
    }
    if kind == "flex":
        runtime["moe_flex_dispatcher_backend"] = FLEX_BACKEND
    runtime.update({
        "moe_grouped_gemm": True,
        # The profile option (megatron-core): fp32, or bf16 = Megatron-Core's default None.
        "moe_router_dtype": "fp32" if problem.task.framework.options.get("moe_router_dtype", "fp32") == "fp32" else None,
        "moe_shared_expert_overlap": False,
        "overlap_moe_expert_parallel_comm": plan.ep_comm_overlap,
        "delay_wgrad_compute": plan.ep_comm_overlap,
    })
    notes = []
    if moe.dispatch_dtype == "fp8":
        notes.append("APPROXIMATION: Megatron-Core 0.16 dispatches tokens in bf16 (it has no fp8 dispatch); the plan "
                     f"was priced with {model.name}'s fp8 dispatch (half the dispatch all-to-all bytes)")
    if moe.bias != model.linear_bias:
        notes.append(f"APPROXIMATION: Megatron-Core gives the expert matrices biases exactly when the other linear "
                     f"layers have them (add_bias_linear = {model.linear_bias}); {model.name}'s experts "
                     f"{'have' if moe.bias else 'have no'} biases")
    if plan.ep_comm_overlap:
        notes.append("EP overlap = overlap_moe_expert_parallel_comm + delay_wgrad_compute (Megatron's MoE README "
                     "pairs them); delay_wgrad_compute with overlap_grad_reduce needs Transformer Engine >= 2.8")
    if kind == "flex":
        notes.append(f"flex dispatcher with the {FLEX_BACKEND} backend: DeepEP must be installed")
    return MoESettings(arch, runtime, notes)


def stage_chunks(problem: Problem, plan: Plan) -> list[list[list[int]]]:
    """Per pipeline stage, the 0/1 MoE kinds of the layers of each of its model chunks, as the exports
    (and the cost model) place them: chunk 0 of every stage, then chunk 1, ..."""
    kinds = layer_pattern(problem)
    sizes = model_chunk_layers(problem, plan)
    stages: list[list[list[int]]] = [[] for _ in range(plan.pp)]
    start = 0
    for k, size in enumerate(sizes):
        stages[k % plan.pp].append(kinds[start:start + size])
        start += size
    return stages


def moe_recompute_layers(problem: Problem, plan: Plan) -> tuple[int | None, list[str]]:
    """Megatron/Bridge --recompute-num-layers (block method) for an MoE plan, and the notes."""
    if plan.recompute != "full":
        return None, []
    stages = stage_chunks(problem, plan)
    moe_blocks = [sum(map(sum, chunks)) for chunks in stages]
    planned = plan.recomputed_layers(problem.model.num_layers, moe_blocks)
    longest = max(len(chunk) for chunks in stages for chunk in chunks)

    def recomputed(n: int) -> tuple[list[int], list[int]]:
        moe = [sum(sum(chunk[:n]) for chunk in chunks) for chunks in stages]
        dense = [sum(len(chunk[:n]) for chunk in chunks) - m for chunks, m in zip(stages, moe, strict=True)]
        return moe, dense

    count = next(n for n in range(1, longest + 1)
                 if all(m >= r for m, r in zip(recomputed(n)[0], planned, strict=True)))
    moe, dense = recomputed(count)
    notes = []
    if moe != planned or any(dense):
        notes.append(f"APPROXIMATION: Megatron's full recompute re-runs the first {count} layers of every model chunk: "
                     f"MoE blocks per stage {moe} (planned {planned}) and dense layers {dense}; the plan recomputes "
                     "MoE blocks only (more recompute: slower, never more memory)")
    return count, notes


def _runs(bits: list[int]) -> str:
    """`bits` as a sum of repeated one-element lists: [0,0,0,1] -> "[0]*3+[1]"."""
    parts, i = [], 0
    while i < len(bits):
        j = i
        while j < len(bits) and bits[j] == bits[i]:
            j += 1
        parts.append(f"[{bits[i]}]" + (f"*{j - i}" if j - i > 1 else ""))
        i = j
    return "+".join(parts)


def _periodic(bits: list[int]) -> str | None:
    """`bits` as a repeated period, "(...)*k", if it is one (k > 1)."""
    n = len(bits)
    for p in range(1, n // 2 + 1):
        if n % p == 0 and bits == bits[:p] * (n // p):
            return f"({_runs(bits[:p])})*{n // p}"
    return None


def layer_freq(pattern: list[int]) -> str:
    """Megatron-LM's --moe-layer-freq for a 0/1-per-layer MoE pattern.

    An integer N where layer i is MoE exactly when i % N == 0 (Megatron's reading of an int,
    gpt_layer_specs.py l.583-586); else the shortest Python list expression of the forms
    Megatron's help shows ("([0]*3+[1]*58)", "([1]*3+[0]*2)*2"): runs, a repeated period, or
    runs followed by a repeated period. Megatron evaluates it (arguments.py _eval_pattern).
    """
    n = len(pattern)
    for every in range(1, n + 1):
        if pattern == [1 if i % every == 0 else 0 for i in range(n)]:
            return str(every)
    candidates = [f"({_runs(pattern)})"]
    for split in range(n - 1):
        rest = _periodic(pattern[split:])
        if rest is not None:
            candidates.append(f"({_runs(pattern[:split])}+{rest})" if split else rest)
    return min(candidates, key=len)


__all__ = ["MoESettings", "check_megatron_core", "is_moe", "layer_freq", "layer_pattern", "moe_recompute_layers",
           "moe_settings", "stage_chunks"]
