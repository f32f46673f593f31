"""The mixture-of-experts model family: presets, parameter counts, layer patterns, bad input."""

from __future__ import annotations

import pytest

from planner.core.errors import InputError
from planner.llm.cost import moe_params
from planner.llm.moe_model import MoETransformer
from planner.llm.problem import build, load_model, load_problem

MOE_PRESETS = ["mixtral-8x7b", "mixtral-8x22b", "deepseek-v2", "deepseek-v3", "kimi-k2", "qwen3-30b-a3b",
               "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b", "llama4-maverick"]


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_total_parameters_match_the_published_totals_within_1_percent(preset):
    model = load_model(preset)
    assert model.family == "moe"
    assert moe_params.total_params(model) == pytest.approx(model.published_params, rel=0.01)


@pytest.mark.parametrize("preset", [p for p in MOE_PRESETS if not p.startswith("gpt-oss")])
def test_active_parameters_match_the_published_counts_within_3_percent(preset):
    """Vendors round active counts (37 B, 22 B, 32 B) to two digits; 3% covers the rounding."""
    model = load_model(preset)
    assert moe_params.active_params(model) == pytest.approx(model.published_active_params, rel=0.03)


@pytest.mark.parametrize("preset", ["gpt-oss-20b", "gpt-oss-120b"])
def test_gpt_oss_active_counts_leave_out_the_input_embedding(preset):
    model = load_model(preset)
    active = moe_params.active_params(model) - moe_params.embedding_params(model)
    assert active == pytest.approx(model.published_active_params, rel=0.01)


def test_deepseek_v3_by_hand():
    """MLA attention per layer (moe.md): h*1536 + 1536*128*192 + h*(512+64) + 512*128*(128+128)
    + 128*128*h, plus the two latent norms; one routed expert is 3*h*2048; the MTP module is a
    2h -> h projection, two norms and one MoE layer (about 11.6 B; the 14 B of the released
    weights also hold its own copies of the embedding and head)."""
    model = load_model("deepseek-v3")
    h = 7168
    attention = h * 1536 + 1536 + 1536 * 128 * 192 + h * (512 + 64) + 512 + 512 * 128 * 256 + 128 * 128 * h
    assert moe_params.attention_params(model) == attention
    assert attention == pytest.approx(187e6, rel=0.01)
    assert 256 * moe_params.expert_params(model) == pytest.approx(11.27e9, rel=0.001)
    assert model.moe_layers == [False] * 3 + [True] * 58
    mtp = moe_params.mtp_params(model)
    assert mtp == pytest.approx(11.6e9, rel=0.01)
    assert mtp + 2 * moe_params.embedding_params(model) == pytest.approx(14e9, rel=0.05)


def test_layer_patterns():
    maverick = load_model("llama4-maverick")
    assert maverick.moe_layers == [False, True] * 24
    assert maverick.num_moe_layers == 24
    mixtral = load_model("mixtral-8x7b")
    assert all(mixtral.moe_layers)
    explicit = load_model({"preset": "mixtral-8x7b", "ffn_hidden_size": 14336,
                           "moe": {"num_experts": 8, "top_k": 2, "ffn_hidden_size": 14336,
                                   "layer_pattern": [1, 0] * 16}})
    assert explicit.moe_layers == [True, False] * 16


MIXTRAL = dict(name="m", num_layers=4, hidden_size=64, num_heads=4, vocab_size=100, max_seq_len=128,
               moe=dict(num_experts=8, top_k=2, ffn_hidden_size=128))


@pytest.mark.parametrize(("change", "says"), [
    ({"moe": dict(num_experts=8, top_k=9, ffn_hidden_size=128)}, "top_k (9) is larger than num_experts (8)"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, shared_experts=1)}, "shared_experts"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, router=dict(num_groups=3, topk_groups=1))},
     "not divisible by router.num_groups"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, router=dict(num_groups=4, topk_groups=8))},
     "topk_groups (8) is larger than num_groups (4)"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, router=dict(num_groups=4))}, "both num_groups"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, layer_pattern=[1, 0])}, "layer_pattern has 2"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, layer_pattern=[1, 0, True, 1])}, "boolean"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, first_dense_layers=1)}, "ffn_hidden_size is needed"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, first_dense_layers=4)}, "no layer is MoE"),
    ({"moe": dict(num_experts=1, top_k=1, ffn_hidden_size=128)}, "moe.num_experts"),
    ({"mla": dict(q_lora_rank=0, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16),
      "num_kv_heads": 2}, "num_kv_heads does not apply with mla"),
    ({"num_kv_heads": 3}, "multiple of num_kv_heads"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, capacity_factor=0.5)}, "moe.capacity_factor"),
    ({"moe": dict(num_experts=8, top_k=2, ffn_hidden_size=128, dispatch_dtype="fp4")}, "moe.dispatch_dtype"),
])
def test_bad_moe_models_name_the_field(change, says):
    with pytest.raises(InputError) as err:
        build(MoETransformer, MIXTRAL | change, "model.yaml")
    assert "model.yaml" in str(err.value) and says in str(err.value)


def test_an_moe_task_loads_and_solves(tmp_path, capsys):
    from planner.cli import main

    task = tmp_path / "task.yaml"
    task.write_text("model: mixtral-8x7b\ncluster: dgx-h100\nnum_devices: 64\n"
                    "training: {global_batch_size: 256, seq_len: 4096}\n")
    assert load_problem(task).model.family == "moe"
    assert main(["solve", str(task), "--time-limit", "5"]) == 0  # the search covers EP (tests/test_moe_search.py)
    assert "EP" in capsys.readouterr().out
