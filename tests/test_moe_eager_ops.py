"""Eager ops beside the fused MoE kernels (issue 11): Megatron-Core adds the second expert GEMM's
bias per expert in eager PyTorch and clamps a clamped gated activation's input with torch ops
(gpt-oss). Derived by hand on one MoE block; a profile that does not name the facts prices none;
bad input named by file and field."""

from __future__ import annotations

import pytest
import yaml

from planner.core.errors import InputError
from planner.llm import frameworks
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.moe import moe_layer_cost
from planner.llm.plan import Plan
from planner.llm.problem import Problem, load_cluster, load_model
from planner.llm.task import Framework, TrainingTask

from .conftest import ROOT

SEQ = 4096


def gpt_oss(bias: bool = True, clamp: float | None = 7.0, framework: Framework | None = None) -> Problem:
    model = load_model("gpt-oss-120b")
    # Plain RoPE: YaRN's unfused rotary (tests/test_attention_window.py) keeps its own backward count.
    model = model.model_copy(update={"rope_yarn_factor": None,
                                     "moe": model.moe.model_copy(update={"bias": bias, "activation_clamp": clamp})})
    task = TrainingTask(global_batch_size=256, seq_len=SEQ, **({"framework": framework} if framework else {}))
    return Problem(model=model, cluster=load_cluster("dgx-h100", num_devices=64), task=task)


def block(problem: Problem, plan: Plan):
    return moe_layer_cost(problem, PlanVars.from_plan(plan))


def hbm_rate(problem: Problem) -> float:
    device = problem.cluster.device
    return device.hbm_bandwidth_bytes_per_s * device.efficiency.hbm_fraction


PLAN = Plan(pp=4, dp=16, ep=8, zero_stage=1, micro_batch_size=1)


def test_the_preset_has_gpt_oss_clamp_and_biases():
    moe = load_model("gpt-oss-120b").moe
    assert moe.bias and moe.activation_clamp == 7.0
    facts = frameworks.profiles()["megatron-core"].facts
    assert (facts.expert_bias_bytes, facts.expert_bias_bwd_bytes) == (28.0, 40.0)
    assert (facts.act_clamp_bytes, facts.act_clamp_bwd_bytes) == (16.0, 30.0)


def test_expert_bias_and_clamp_cost_their_eager_passes_by_hand():
    """gpt-oss-120b, TP 1, one 4096-token micro-batch: R = 4096 x top-4 = 16384 routed tokens,
    h = expert width = 2880. The per-expert bias add moves 28 B forward and 40 B backward per
    routed element of width h; the clamp 16 B forward and 30 B backward per routed element of the
    expert width; nothing else changes."""
    plain, both = gpt_oss(bias=False, clamp=None), gpt_oss()
    routed, h, f = SEQ * 4, 2880, 2880
    fwd = (28 * routed * h + 16 * routed * f) / hbm_rate(plain)
    bwd = (40 * routed * h + 30 * routed * f) / hbm_rate(plain)
    a, b = block(plain, PLAN), block(both, PLAN)
    assert b.memory_bound_fwd_s - a.memory_bound_fwd_s == pytest.approx(fwd, rel=1e-9)
    assert b.memory_bound_bwd_s - a.memory_bound_bwd_s == pytest.approx(bwd, rel=1e-9)
    assert b.gemm_fwd_s == a.gemm_fwd_s and b.attention_bwd_s == a.attention_bwd_s
    # Without the eager ops the backward stays twice the forward, as before.
    assert a.memory_bound_bwd_s == pytest.approx(2 * a.memory_bound_fwd_s, rel=1e-12)


def test_bf16_router_probabilities_halve_the_bias_add():
    """Megatron-Core's default router dtype (None: the input dtype, bf16), which the Bridge gpt-oss
    recipes keep: b * p writes 2 B, the add moves 6, the cat 4, the cast is a no-op (12 B
    forward); backward 6 + 6 for the two broadcast gradients and 4 for the split's cat (16 B)."""
    bf16 = Framework(profile="megatron-core@0.16", options={"moe_router_dtype": "bf16"})
    routed, h = SEQ * 4, 2880
    plain = block(gpt_oss(bias=False, clamp=None, framework=bf16), PLAN)
    biased = block(gpt_oss(clamp=None, framework=bf16), PLAN)
    rate = hbm_rate(gpt_oss())
    assert biased.memory_bound_fwd_s - plain.memory_bound_fwd_s == pytest.approx(12 * routed * h / rate, rel=1e-9)
    assert biased.memory_bound_bwd_s - plain.memory_bound_bwd_s == pytest.approx(16 * routed * h / rate, rel=1e-9)


@pytest.mark.parametrize(("dtype", "flag"), [("fp32", "--moe-router-dtype fp32"), ("bf16", None)])
def test_the_exports_carry_the_router_dtype(dtype, flag):
    from planner.export import export
    problem = gpt_oss(framework=Framework(profile="megatron-core@0.16", options={"moe_router_dtype": dtype}))
    megatron = export(problem, PLAN, "megatron").text
    bridge = export(problem, PLAN, "megatron-bridge").text
    if flag:
        assert flag in megatron and "model.moe_router_dtype=fp32" in bridge
    else:
        assert "--moe-router-dtype" not in megatron and "model.moe_router_dtype=null" in bridge


def test_the_clamped_copy_is_kept_unless_moe_act_drops_it():
    """The fused quick-GEGLU saves its input, the clamped copy of fc1's output (2 x width bf16 per
    routed token, 4 B per routed x width element), beside fc1's own output; moe_act frees it."""
    routed, f = SEQ * 4, 2880
    with_clamp, without = block(gpt_oss(), PLAN), block(gpt_oss(clamp=None), PLAN)
    assert with_clamp.activation_none_bytes - without.activation_none_bytes == pytest.approx(4 * routed * f)
    plan = PLAN.model_copy(update={"recompute": "selective", "recompute_modules": ["moe_act"]})
    a, b = block(gpt_oss(), plan), block(gpt_oss(clamp=None), plan)
    assert a.activation_selective_bytes == pytest.approx(b.activation_selective_bytes)


def test_each_op_alone():
    routed, h = SEQ * 4, 2880
    plain = block(gpt_oss(bias=False, clamp=None), PLAN)
    bias_only = block(gpt_oss(clamp=None), PLAN)
    clamp_only = block(gpt_oss(bias=False), PLAN)
    rate = hbm_rate(gpt_oss())
    assert bias_only.memory_bound_fwd_s - plain.memory_bound_fwd_s == pytest.approx(28 * routed * h / rate, rel=1e-9)
    assert clamp_only.memory_bound_fwd_s - plain.memory_bound_fwd_s == pytest.approx(16 * routed * 2880 / rate, rel=1e-9)


def test_moe_act_recompute_runs_the_clamp_again():
    """Megatron-Core's moe_act checkpoint re-runs the whole activation function, the clamp with it."""
    plan = PLAN.model_copy(update={"recompute": "selective", "recompute_modules": ["moe_act"]})
    with_clamp, without = block(gpt_oss(), plan), block(gpt_oss(clamp=None), plan)
    extra = with_clamp.selective_recompute_s - without.selective_recompute_s
    assert extra == pytest.approx(16 * SEQ * 4 * 2880 / hbm_rate(gpt_oss()), rel=1e-9)


def test_a_profile_without_the_facts_prices_no_eager_ops():
    """torchtitan's profile does not name the facts (no biased or clamped experts in its version):
    biases and the clamp cost nothing there, as before the facts existed."""
    titan = Framework(profile="torchtitan@2024-12")
    assert frameworks.profiles()["torchtitan"].facts.expert_bias_bytes == 0.0
    a = block(gpt_oss(bias=False, clamp=None, framework=titan), PLAN)
    b = block(gpt_oss(framework=titan), PLAN)
    assert b.memory_bound_fwd_s == a.memory_bound_fwd_s and b.memory_bound_bwd_s == a.memory_bound_bwd_s


def test_eager_ops_only_slow_a_step():
    from planner.llm.cost.step import evaluate
    slow = evaluate(gpt_oss(), PLAN).step_time_s
    fast = evaluate(gpt_oss(bias=False, clamp=None), PLAN).step_time_s
    assert slow > fast


# -- bad input ------------------------------------------------------------------------------------

def write_model(tmp_path, **moe_changes):
    data = yaml.safe_load((ROOT / "problems" / "models" / "gpt-oss-120b.yaml").read_text())
    data["moe"].update(moe_changes)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("value", "says"), [
    (0, "greater than 0"), (-7.0, "greater than 0"), ("7", "number"), (True, "number"), (1e9, "less than or equal"),
    (float("nan"), "finite number"), (float("inf"), "finite number"),
])
def test_a_bad_clamp_names_file_and_field(tmp_path, value, says):
    path = write_model(tmp_path, activation_clamp=value)
    with pytest.raises(InputError) as err:
        load_model(path.name, base=tmp_path)
    text = str(err.value)
    assert str(path) in text and "moe.activation_clamp" in text and says in text
    assert "\n" not in text.strip()


def test_a_clamp_needs_a_gated_activation(tmp_path):
    data = yaml.safe_load((ROOT / "problems" / "models" / "gpt-oss-120b.yaml").read_text())
    data["gated_mlp"] = False
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="activation_clamp.*gated_mlp: true") as err:
        load_model(path.name, base=tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("fact", "value", "says"), [
    ("expert_bias_bytes", -1.0, "greater than or equal"),
    ("act_clamp_bwd_bytes", "30", "number"),
    ("act_clamp_byte", 16.0, "unknown field"),
])
def test_bad_eager_facts_name_file_and_field(tmp_path, fact, value, says):
    data = yaml.safe_load(frameworks.PROFILES_FILE.read_text())
    data["profiles"][0]["facts"][fact] = value
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as err:
        frameworks.load_profiles(path)
    text = str(err.value)
    assert str(path) in text and f"profiles.0.facts.{fact}" in text and says in text


def test_the_megatron_lm_export_says_it_cannot_clamp():
    """Megatron-LM's arguments (core_v0.16.1) have no clamp flag: the export runs the activation
    unclamped and says so, as an approximation."""
    from planner.export import export
    exported = export(gpt_oss(), PLAN, "megatron")
    assert any("activation clamp (7;" in note for note in exported.approximations)
    plain = export(gpt_oss(clamp=None), PLAN, "megatron")
    assert not any("clamp" in note for note in plain.approximations)


@pytest.mark.parametrize("value", ["fp16", "", True, "FP32"])
def test_a_bad_router_dtype_option_names_file_and_field(tmp_path, value):
    from planner.llm.problem import load_problem
    task = {"model": "gpt-oss-120b", "cluster": "dgx-h100", "num_devices": 64,
            "training": {"global_batch_size": 256, "seq_len": 4096,
                         "framework": {"profile": "megatron-core@0.16", "options": {"moe_router_dtype": value}}}}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    with pytest.raises(InputError) as err:
        load_problem(path)
    text = str(err.value)
    assert str(path) in text and "moe_router_dtype" in text and "\n" not in text.strip()
