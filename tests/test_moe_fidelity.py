"""Facts of the Megatron-Core and Megatron-Bridge rows of `planner validate` (issue 11): what the
framework at the row's version ran, each read from its source and pinned here so that removing
the fact fails a test.
"""

from __future__ import annotations

import pytest

from planner.fidelity import validate as v
from planner.fidelity.moe_rows import recipes

CUDNN = "megatron-core@0.16 (attention_backend=fused)"


@pytest.fixture(scope="module")
def rows():
    return {r.id: r for r in v.validate()}


@pytest.fixture(scope="module")
def runs():
    return {row["id"]: row for row in v.load_runs(v.DEFAULT_RUNS)}


def test_transformer_engine_runs_cudnn_attention_on_hopper(rows):
    """TE's DotProductAttention prefers FusedAttention (cuDNN) over FlashAttention on sm90 (v1.4-v2.13;
    utils.py v2.9 "give FusedAttention preference on Hopper+"); only the NeMo 24.03-24.07 launcher
    turned it off (NVTE_FUSED_ATTN=0). So the Megatron-Core r0.8.0 and Megatron-Bridge rows run
    cuDNN, the NeMo 24.07 rows flash-attn 2."""
    for text in ("Megatron-Core r0.8.0", "Megatron-Bridge / Megatron-Core (NeMo container 25.09)",
                 "Megatron-Bridge / Megatron-Core (NeMo container 25.11)",
                 "Megatron-Bridge / Megatron-Core (NeMo container 26.04.01)"):
        reading = v.FRAMEWORKS[text.casefold()]
        assert dict(reading.options) == {"attention_backend": "fused"}, text
    mcore = [r for k, r in rows.items() if k.startswith(("mcore-h100-", "mbridge-"))]
    assert len(mcore) == 20
    # The gpt-oss rows' recipes also keep Megatron-Core's default (bf16) router (recipes.yaml).
    assert all(r.skipped is None and r.profile.startswith(CUDNN.removesuffix(")")) for r in mcore)
    assert {k for k, r in rows.items() if r.profile == CUDNN.removesuffix(")") + ", moe_router_dtype=bf16)"} == {
        "mbridge-25.11-h100-gpt-oss-120b-64gpu-gbs512", "mbridge-26.04.01-h100-gpt-oss-120b-64gpu-gbs1280"}
    assert all(r.profile.endswith("(attention_backend=flash)") for k, r in rows.items() if k.startswith("nemo-24.07-"))


def test_cudnn_rate_is_what_moves_the_bridge_rows(rows, runs):
    """The measured cuDNN rate at head dim 64 (gpt-oss) is below the preset's flat 50% of peak: the
    same row priced with the device's flat rate is faster."""
    row = runs["mbridge-25.11-h100-gpt-oss-120b-64gpu-gbs512"]
    saved = v.FRAMEWORKS[row["plan"]["framework"].casefold()]
    try:
        v.FRAMEWORKS[row["plan"]["framework"].casefold()] = v.FrameworkReading("megatron-core@0.16", tp_overlap=True)
        flat = v.validate_row(row)
    finally:
        v.FRAMEWORKS[row["plan"]["framework"].casefold()] = saved
    assert flat.profile == "megatron-core@0.16 (moe_router_dtype=bf16)"
    assert flat.predicted > rows[row["id"]].predicted


@pytest.mark.parametrize("row_id", ["mbridge-25.11-h100-qwen3-235b-a22b-256gpu-gbs2048",
                                    "mbridge-25.09-h100-deepseek-v3-1024gpu-gbs8192"])
def test_moe_recipes_without_tp_overlap_are_priced_without_it(row_id, runs):
    """Megatron-Bridge v0.2.2 qwen3_llm_pretrain.py (H100: CommOverlapConfig(tp_comm_overlap=False))
    and r0.1.0 recipes/deepseek/deepseek_v3.py l.314-316 (no comm_overlap given: tp_comm_overlap
    False): the TP-2 MoE rows ran with their TP collectives exposed, not with NeMo's usual overlap."""
    assert recipes()[row_id].plan.tp_comm_overlap is False
    problem, plan, notes, _ = v.resolve_row(runs[row_id])
    assert plan.tp == 2 and plan.tp_comm_overlap is False
    assert not any("TP communication overlap assumed on" in n for n in notes)
    assert any(n.startswith("recipe settings") and "tp_comm_overlap False" in n for n in notes)


def test_dense_bridge_rows_keep_the_tp_overlap_of_their_configs(runs):
    """Llama 3 70B / 3.1 405B on H100 (Bridge v0.2.2 llama3_llm_pretrain.py l.198:
    tp_comm_overlap=TP > 1) keep the overlap; only a recipe entry can turn it off."""
    for row_id in ("mbridge-25.11-h100-llama3-70b-64gpu-gbs128", "mbridge-25.11-h100-llama31-405b-1024gpu-gbs512"):
        _, plan, notes, _ = v.resolve_row(runs[row_id])
        assert plan.tp > 1 and plan.tp_comm_overlap is True
        assert "TP communication overlap assumed on (NeMo performance configs)" in notes


# -- EP overlap: the warm-up and cool-down chunks run alone -------------------------------------

def _vars(**kw):
    from planner.llm.cost.layout import PlanVars
    from planner.llm.plan import Plan
    return PlanVars.from_plan(Plan(**kw))


def _problem(gbs: int, gpus: int = 64):
    from planner.llm.problem import Problem, load_cluster, load_model
    from planner.llm.task import TrainingTask
    return Problem(model=load_model("qwen3-30b-a3b"), cluster=load_cluster("dgx-h100", num_devices=gpus),
                   task=TrainingTask(global_batch_size=gbs, seq_len=4096, precision="bf16"))


@pytest.mark.parametrize("kw, gbs, share", [
    # Interleaved: mean warm-up over the ranks (pp - 1) + (vpp - 1) * pp + 1 = pp * vpp of m * vpp chunks.
    (dict(pp=8, schedule="interleaved", virtual_stages=2, dp=8, ep=8), 1024, 8 / 128),
    (dict(pp=2, schedule="interleaved", virtual_stages=12, dp=32, ep=8), 512, 2 / 16),
    # No pipeline: the first forward and the last backward alone, one of m.
    (dict(dp=64, ep=8), 4096, 1 / 64),
    # Fewer micro-batches than stages: nothing pairs.
    (dict(pp=8, schedule="interleaved", virtual_stages=2, dp=8, ep=8), 32, 1.0),
])
def test_unpaired_share_follows_megatron_cores_warm_up_count(kw, gbs, share):
    """Megatron-Core core_r0.15 schedules.py get_pp_rank_microbatches and combined_1f1b.py."""
    from planner.llm.cost.moe import unpaired_share
    assert float(unpaired_share(_problem(gbs), _vars(**kw))) == pytest.approx(share)


def test_unpaired_chunks_expose_their_collectives_in_full():
    """exposed = u * total + (1 - u) * paired: with fewer micro-batches more of the all-to-all shows,
    never more than without the overlap and never less than the paired exposure alone."""
    from planner.core.kernels import COMM_SM_FRACTION
    from planner.llm.cost.moe import dispatcher_times, moe_layer_cost, unpaired_share
    from planner.llm.cost.layer import block_cost, context
    from planner.llm.cost.moe import moe_ffn_half
    kw = dict(pp=4, schedule="interleaved", virtual_stages=2, dp=16, ep=16, ep_comm_overlap=True)
    exposed = []
    for gbs in (64, 256, 4096):
        p, v = _problem(gbs), _vars(**kw)
        cost = moe_layer_cost(p, v)
        x = context(p, v)
        plain = block_cost(p, v, x, moe_ffn_half(p, v, x))
        fwd, _ = dispatcher_times(p, v, x)
        total = float(sum(fwd))
        paired = max(total - float(plain.compute_bwd_s), COMM_SM_FRACTION * total)
        u = float(unpaired_share(p, v))
        assert float(cost.ep_exposed_fwd_s) == pytest.approx(u * total + (1 - u) * paired)
        assert paired <= float(cost.ep_exposed_fwd_s) <= total
        exposed.append(float(cost.ep_exposed_fwd_s))
    assert exposed[0] > exposed[1] > exposed[2]
