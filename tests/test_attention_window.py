"""Sliding-window attention and YaRN rotary (issue 11, gpt-oss): a windowed layer's attention over
its band, by hand; the alternating pattern's average layer; never dearer than causal; YaRN's
unfused rotary in Megatron-Core, by hand; the exports; bad input named by file and field."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.core.errors import InputError
from planner.export import export
from planner.export.megatron_check import check_megatron_table
from planner.llm import frameworks
from planner.llm.cost import attention
from planner.llm.cost.layer import layer_cost
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.moe import moe_layer_cost
from planner.llm.plan import Plan
from planner.llm.problem import Problem, load_cluster, load_model
from planner.llm.task import Framework, TrainingTask

from .conftest import ROOT, make_problem, small_model

FUSED = Framework(profile="megatron-core@0.16", options={"attention_backend": "fused"})
PLAN = Plan(pp=4, dp=16, ep=8, zero_stage=1, micro_batch_size=1)


def gpt_oss(framework: Framework = FUSED, **changes) -> Problem:
    model = load_model("gpt-oss-120b").model_copy(update=changes)
    task = TrainingTask(global_batch_size=256, seq_len=4096, framework=framework)
    return Problem(model=model, cluster=load_cluster("dgx-h100", num_devices=64), task=task)


def block(problem: Problem, plan: Plan = PLAN):
    return moe_layer_cost(problem, PlanVars.from_plan(plan))


def test_the_preset_has_gpt_oss_window_and_yarn():
    model = load_model("gpt-oss-120b")
    assert (model.sliding_window, model.full_attention_every, model.rope_yarn_factor) == (128, 2, 32.0)
    assert model.windowed_layer_share == 0.5


@pytest.mark.parametrize(("layers", "every", "share"), [(36, 2, 0.5), (5, 2, 3 / 5), (8, None, 1.0), (12, 4, 9 / 12)])
def test_windowed_share_follows_megatron_layer_numbers(layers, every, share):
    """Megatron-Core is_layer_window_attention: layer_number (1-based) % freq != 0 is windowed."""
    model = small_model().model_copy(update={"num_layers": layers, "sliding_window": 64, "full_attention_every": every})
    assert model.windowed_layer_share == pytest.approx(share)
    assert sum(n % every != 0 if every else True for n in range(1, layers + 1)) == pytest.approx(share * layers)


def test_a_windowed_layer_runs_over_its_band_by_hand():
    """gpt-oss, 4096 tokens, 64 heads of 64 (QK and AV widths 4096 + 4096), window 128: each
    query spans 128 + 128 (one key block) = 256 keys, priced at cuDNN's non-causal head-dim-64
    rate for the table's shortest length, 512 (335 TFLOP/s forward, 266 backward, of a 989 peak);
    the backward executes 2.5x the forward's FLOPs."""
    device = gpt_oss().cluster.device
    flops = 2.0 * 4096 * 256 * 8192
    fwd, bwd = attention.windowed_time_s("cudnn", device, 4096, 128, 4096, 8192, 64)
    peak = device.peak("bf16")
    assert fwd == pytest.approx(flops / (peak * 335 / 989), rel=1e-9)
    assert bwd == pytest.approx(2.5 * flops / (peak * 266 / 989), rel=1e-9)


def test_the_alternating_model_prices_the_average_layer():
    windowed = block(gpt_oss())
    full = block(gpt_oss(sliding_window=None, full_attention_every=None))
    device = gpt_oss().cluster.device
    win_f, win_b = attention.windowed_time_s("cudnn", device, 4096, 128, 4096, 8192, 64)
    assert windowed.attention_fwd_s == pytest.approx(0.5 * full.attention_fwd_s + 0.5 * win_f, rel=1e-12)
    assert windowed.attention_bwd_s == pytest.approx(0.5 * full.attention_bwd_s + 0.5 * win_b, rel=1e-12)
    assert windowed.attention_fwd_s < full.attention_fwd_s


@settings(max_examples=60, deadline=None)
@given(window=st.integers(1, 20000), seq=st.sampled_from([512, 2048, 4096, 8192, 32768]),
       kernel=st.sampled_from(["cudnn", "fa2", "fa3", "device"]))
def test_a_window_is_never_dearer_than_causal(window, seq, kernel):
    device = gpt_oss().cluster.device
    win = attention.windowed_time_s(kernel, device, seq, window, seq, 4096, 64)
    full = attention.flash_time_s(kernel, device, seq, 1, seq, 4096, 64)[:2]
    assert win[0] <= full[0] * (1 + 1e-12) and win[1] <= full[1] * (1 + 1e-12)
    if window >= seq:
        assert float(win[0]) == pytest.approx(float(full[0]), rel=1e-12)
        assert float(win[1]) == pytest.approx(float(full[1]), rel=1e-12)


def test_the_p2p_ring_refuses_a_window_and_the_search_leaves_it_out():
    """Transformer Engine v2.9 takes a window under CP only with its a2a or all-gather attention:
    check_plan refuses CP > 1 with the p2p ring (Megatron-Core's default) and the search space has
    no such plan."""
    from planner.llm.plan import check_plan
    from planner.llm.space import enumerate_candidates
    problem = gpt_oss()
    errors = check_plan(Plan(cp=2, pp=4, dp=8, ep=8, zero_stage=1), problem)
    assert any("sliding-window attention and the p2p ring" in e for e in errors)
    small = Problem(model=problem.model, cluster=load_cluster("dgx-h100", num_devices=8), task=problem.task)
    assert set(enumerate_candidates(small, max_virtual_stages=1).cp.tolist()) == {1}
    unwindowed = Problem(model=problem.model.model_copy(update={"sliding_window": None, "full_attention_every": None}),
                         cluster=small.cluster, task=problem.task)
    assert max(enumerate_candidates(unwindowed, max_virtual_stages=1).cp.tolist()) > 1


@pytest.mark.parametrize("comm", ["a2a", "allgather"])
def test_a2a_and_allgather_cp_take_the_window(comm):
    framework = Framework(profile="megatron-core@0.16", options={"attention_backend": "fused", "cp_comm_type": comm})
    plan = Plan(cp=2, pp=4, dp=8, ep=8, zero_stage=1)
    from planner.llm.plan import check_plan
    assert not any("sliding-window" in e for e in check_plan(plan, gpt_oss(framework)))
    windowed = block(gpt_oss(framework), plan)
    full = block(gpt_oss(framework, sliding_window=None, full_attention_every=None), plan)
    assert windowed.attention_fwd_s < full.attention_fwd_s
    assert windowed.cp_exposed_fwd_s == full.cp_exposed_fwd_s  # K and V still move whole


def test_dense_models_take_the_window_too():
    model = small_model()
    plan = Plan(dp=16)
    framework = {"framework": FUSED}
    plain = layer_cost(make_problem(model=model, **framework), PlanVars.from_plan(plan))
    windowed = layer_cost(make_problem(model=model.model_copy(update={"sliding_window": 256}), **framework),
                          PlanVars.from_plan(plan))
    assert windowed.attention_fwd_s < plain.attention_fwd_s


# -- YaRN ----------------------------------------------------------------------------------------

def test_yarn_rotary_runs_unfused_in_megatron_core_by_hand():
    """Megatron-Core multiplies YaRN's concentration factor into cos and sin and then leaves TE's
    fused rotary (mscale != 1): 24 B forward and 28 B backward per Q/K element instead of the fused
    kernel's 4 and 8, and each of the two calls makes its cos and sin tables, 44 B per position and
    rotary dim. gpt-oss at TP 1: 4096 tokens x (4096 query + 512 key width), head dim 64."""
    yarn, plain = block(gpt_oss()), block(gpt_oss(rope_yarn_factor=None))
    device = gpt_oss().cluster.device
    rate = device.hbm_bandwidth_bytes_per_s * device.efficiency.hbm_fraction
    elements = 4096 * (4096 + 512)
    tables = 2 * 44 * 4096 * 64
    assert yarn.memory_bound_fwd_s - plain.memory_bound_fwd_s == pytest.approx(
        ((24 - 4) * elements + tables) / rate, rel=1e-9)
    assert yarn.memory_bound_bwd_s - plain.memory_bound_bwd_s == pytest.approx((28 - 8) * elements / rate, rel=1e-9)


def test_the_rotary_tables_are_per_position_not_per_token():
    """Two sequences per micro-batch double the rotary's per-element traffic, not its tables."""
    one, two = block(gpt_oss()), block(gpt_oss(), PLAN.model_copy(update={"micro_batch_size": 2}))
    one_plain = block(gpt_oss(rope_yarn_factor=None))
    two_plain = block(gpt_oss(rope_yarn_factor=None), PLAN.model_copy(update={"micro_batch_size": 2}))
    device = gpt_oss().cluster.device
    rate = device.hbm_bandwidth_bytes_per_s * device.efficiency.hbm_fraction
    tables = 2 * 44 * 4096 * 64
    extra_one = one.memory_bound_fwd_s - one_plain.memory_bound_fwd_s
    extra_two = two.memory_bound_fwd_s - two_plain.memory_bound_fwd_s
    assert extra_two - tables / rate == pytest.approx(2 * (extra_one - tables / rate), rel=1e-9)


def test_a_profile_without_yarn_facts_prices_its_own_rotary():
    titan = Framework(profile="torchtitan@2024-12")
    assert frameworks.profiles()["torchtitan"].facts.yarn_rope_bytes is None
    yarn, plain = block(gpt_oss(titan)), block(gpt_oss(titan, rope_yarn_factor=None))
    assert yarn.memory_bound_fwd_s == plain.memory_bound_fwd_s and yarn.memory_bound_bwd_s == plain.memory_bound_bwd_s


# -- exports -------------------------------------------------------------------------------------

def test_megatron_export_sets_the_window_and_says_it_cannot_yarn():
    exported = export(gpt_oss(), PLAN, "megatron")
    assert "--window-size 127,0" in exported.text and "--window-attn-skip-freq 2" in exported.text
    assert any("YaRN" in note and "factor 32" in note for note in exported.approximations)
    assert check_megatron_table(exported.text) == []
    plain = export(gpt_oss(sliding_window=None, full_attention_every=None, rope_yarn_factor=None), PLAN, "megatron")
    assert "--window-size" not in plain.text and not any("YaRN" in n for n in plain.approximations)


def test_bridge_export_sets_the_window_and_clamp_and_says_yarn_is_the_providers():
    """Bridge's own override code applies these (tests/test_export_bridge.py checks the values it
    ends with); YaRN has more fields than the model carries, so the recipe's provider must set it."""
    exported = export(gpt_oss(), PLAN, "megatron-bridge")
    assert '"model.window_size=[127,0]"' in exported.text and "model.window_attn_skip_freq=2" in exported.text
    assert "model.activation_func_clamp_value=7.0" in exported.text
    assert any("YaRN (factor 32)" in note for note in exported.approximations)


# -- bad input -----------------------------------------------------------------------------------

def write_model(tmp_path, **changes):
    data = yaml.safe_load((ROOT / "problems" / "models" / "gpt-oss-120b.yaml").read_text())
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("changes", "field", "says"), [
    ({"sliding_window": 0}, "sliding_window", "greater than 0"),
    ({"sliding_window": "128"}, "sliding_window", "integer"),
    ({"sliding_window": 12.5}, "sliding_window", "integer"),
    ({"full_attention_every": 1}, "full_attention_every", "greater than 1"),
    ({"full_attention_every": True}, "full_attention_every", "integer"),
    ({"rope_yarn_factor": 1.0}, "rope_yarn_factor", "greater than 1"),
    ({"rope_yarn_factor": "32"}, "rope_yarn_factor", "number"),
    ({"sliding_window": None}, "full_attention_every", "give sliding_window too"),
    ({"position_embedding": "learned"}, "rope_yarn_factor", "needs position_embedding: rope"),
    ({"full_attention_every": 37}, "full_attention_every", "larger than num_layers"),
    ({"rope_yarn_factor": float("nan")}, "rope_yarn_factor", "finite number"),
    ({"rope_yarn_factor": float("inf")}, "rope_yarn_factor", "finite number"),
    ({"sliding_window": 2**40}, "sliding_window", "less than or equal"),
    ({"sliding_window": 131072}, "sliding_window", "not shorter than max_seq_len"),
])
def test_bad_window_or_yarn_names_file_and_field(tmp_path, changes, field, says):
    path = write_model(tmp_path, **changes)
    with pytest.raises(InputError) as err:
        load_model(path.name, base=tmp_path)
    text = str(err.value)
    assert str(path) in text and field in text and says in text


def test_yarn_facts_come_in_pairs(tmp_path):
    data = yaml.safe_load(frameworks.PROFILES_FILE.read_text())
    del data["profiles"][0]["facts"]["yarn_rope_bwd_bytes"]
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="give both or neither") as err:
        frameworks.load_profiles(path)
    assert str(path) in str(err.value) and "profiles.0.facts" in str(err.value)


def test_yarn_on_multi_latent_attention_is_refused(tmp_path):
    data = yaml.safe_load((ROOT / "problems" / "models" / "deepseek-v3.yaml").read_text())
    data["rope_yarn_factor"] = 40.0
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="rope_yarn_factor is for GQA/MHA") as err:
        load_model(path.name, base=tmp_path)
    assert str(path) in str(err.value)


def test_an_override_that_breaks_a_pair_is_refused_at_load(tmp_path):
    """An option's override is checked with the facts it merges into, not when a plan is priced."""
    data = yaml.safe_load(frameworks.PROFILES_FILE.read_text())
    titan = next(i for i, p in enumerate(data["profiles"]) if p["name"] == "torchtitan")
    data["profiles"][titan]["overrides"][0]["facts"]["yarn_rope_bytes"] = 24.0
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match=rf"profiles.{titan}: overrides.0.facts: .*give both or neither") as err:
        frameworks.load_profiles(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("version", ["0.2", "0.3"])
def test_torchtitan_dense_export_says_it_drops_the_window(version):
    model = small_model().model_copy(update={"sliding_window": 256, "full_attention_every": 2})
    problem = make_problem(model=model)
    exported = export(problem, Plan(dp=16), "torchtitan", version)
    assert any("no a sliding window" in note for note in exported.approximations)
    plain = export(make_problem(), Plan(dp=16), "torchtitan", version)
    assert not any("sliding window" in note for note in plain.approximations)


# -- serving: the window is said, not silently dropped ----------------------------------------

def test_serving_says_it_does_not_model_the_window(tmp_path):
    """The serving family prices full attention and a whole-context KV cache in every layer; a
    windowed model's estimate (and a disaggregated one) says so instead of dropping it silently."""
    from planner.cli.common import load_task
    from planner.serving.cost import evaluate as serve
    from planner.serving.disagg import DisaggregatedPlan, evaluate_disaggregated
    from planner.serving.plan import ServingPlan

    text = (ROOT / "problems" / "tasks" / "qwen3-235b-nvl72-serving.yaml").read_text()
    path = tmp_path / "oss.yaml"
    path.write_text(text.replace("qwen3-235b-a22b", "gpt-oss-120b"))
    problem = load_task(str(path))
    plan = ServingPlan(family="serving", tp=1, pp=1, dp=72, ep=8)
    notes = serve(problem, plan).notes
    assert any("128-token sliding window (one layer in 2 attends fully) is not modelled for serving" in n
               for n in notes)
    disagg = DisaggregatedPlan(family="serving", prefill={"tp": 1, "pp": 1, "dp": 8, "ep": 8},
                               decode={"tp": 1, "pp": 1, "dp": 64, "ep": 8})
    assert any("sliding window" in n for n in evaluate_disaggregated(problem, disagg).notes)
    qwen = load_task(str(ROOT / "problems" / "tasks" / "qwen3-235b-nvl72-serving.yaml"))
    assert not any("sliding window" in n for n in serve(qwen, plan).notes)


def test_the_disaggregated_search_says_it_once(tmp_path, capsys):
    """The disaggregated search prices its candidates through the same combine step: its chosen
    estimate carries the note once."""
    import json

    from planner.cli import main
    text = (ROOT / "problems" / "tasks" / "qwen3-235b-nvl72-serving.yaml").read_text()
    path = tmp_path / "oss.yaml"
    path.write_text(text.replace("qwen3-235b-a22b", "gpt-oss-120b"))
    main(["solve", str(path), "--disaggregated", "--time-limit", "20", "--json"])
    warnings = json.loads(capsys.readouterr().out)["estimate"]["warnings"]
    assert sum("sliding window" in w for w in warnings) == 1


def test_models_without_the_new_fields_serialise_and_hash_as_before():
    """The new fields are left out of dumps when null, so that problems without them keep their
    hashes (plan files carry them; a changed hash refuses the plan). The shipped GPT-3 task's hash
    is the one its export goldens and the README show."""
    from planner.llm.problem import load_problem
    plain = load_model("llama3-70b").model_dump()
    assert not {"rope_yarn_factor", "sliding_window", "full_attention_every"} & set(plain)
    assert "activation_clamp" not in load_model("deepseek-v3").model_dump()["moe"]
    oss = load_model("gpt-oss-120b").model_dump()
    assert (oss["sliding_window"], oss["full_attention_every"], oss["rope_yarn_factor"]) == (128, 2, 32.0)
    assert oss["moe"]["activation_clamp"] == 7.0
    assert load_problem(ROOT / "problems" / "tasks" / "gpt3-175b-1024xa100.yaml").hash == "cbe4c18b08f5e048"
