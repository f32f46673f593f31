"""Module-level selective recompute (Plan.recompute_modules, Megatron-Core --recompute-modules):
each module's time and memory by hand on one block, the properties every module set keeps, the
FLOP count, the plan checks and the exports."""

from __future__ import annotations

import itertools

import pytest

from planner.core import kernels
from planner.export import export
from planner.llm.cost import flops
from planner.llm.cost.layer import context, dense_ffn_half, layer_cost
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.moe import moe_layer_cost, routed_tokens
from planner.llm.cost.moe_params import mla_up_projection_params
from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan, check_plan
from planner.llm.plan_io import load_plan
from planner.llm.problem import load_problem
from planner.llm.task import Framework

from .conftest import PROBLEMS, make_problem

DENSE = make_problem(num_devices=8, precision="fp8")
QWEN = load_problem(PROBLEMS / "tasks" / "qwen3-30b-a3b-16xh100.yaml")
DEEPSEEK = load_problem(PROBLEMS / "tasks" / "deepseek-v3-1024xh100.yaml")


def _vars(plan: Plan) -> PlanVars:
    return PlanVars.from_plan(plan)


def _selective(plan: Plan, modules) -> Plan:
    return plan.model_copy(update={"recompute": "selective", "recompute_modules": modules})


DENSE_PLAN = Plan(tp=2, sp=True, dp=4)
QWEN_PLAN = Plan(dp=16, ep=8)
DEEPSEEK_PLAN = load_plan(PROBLEMS / "plans" / "deepseek-v3-bridge.yaml").model_copy(
    update={"recompute": "none", "recompute_modules": None})
"""Megatron-Bridge's DeepSeek-V3 plan (PP 8 x VP 4 of 7-8 layers, EP 64, flex with the overlap)."""


def test_layernorm_reruns_only_the_norms_that_are_modules_of_their_own():
    """Output-discarding checkpoint of the norms (Megatron-Core gpt_layer_specs.py with Transformer
    Engine): the input norm is fused into the QKV projection except with MLA, the pre-MLP norm
    into fc1 except in MoE layers, and a fused norm is neither dropped nor re-run. So nothing on
    a dense GQA model; the pre-MLP norm on Qwen3-MoE; both norms on DeepSeek-V3's MoE layers:
    each frees its output (the GEMM input after it) and re-runs its forward."""
    base = layer_cost(DENSE, _vars(_selective(DENSE_PLAN, ["core_attn"])))
    norms = layer_cost(DENSE, _vars(_selective(DENSE_PLAN, ["core_attn", "layernorm"])))
    assert norms.activation_selective_bytes == base.activation_selective_bytes
    assert norms.selective_recompute_s == base.selective_recompute_s
    for problem, plan, count in ((QWEN, QWEN_PLAN, 1), (DEEPSEEK, DEEPSEEK_PLAN, 2)):
        v = _vars(_selective(plan, ["layernorm"]))
        x = context(problem, v)
        base = moe_layer_cost(problem, _vars(_selective(plan, ["core_attn"])))
        norms = moe_layer_cost(problem, v)
        hidden = x.tokens * problem.model.hidden_size / x.hidden_div
        norm_s = kernels.memory_bound_time_s(count * problem.task.framework.facts.norm_bytes * hidden,
                                             problem.cluster.device)
        assert base.activation_selective_bytes - norms.activation_selective_bytes == pytest.approx(
            float(count * x.gemm_input_bytes * hidden)), problem.model.name
        assert norms.selective_recompute_s == pytest.approx(float(norm_s)), problem.model.name


def test_mlp_keeps_only_the_mlp_input_and_reruns_the_mlp():
    """Normal checkpointing of the dense MLP: its norm output (fp8 GEMM input), the gated fc1
    output (2 x 2 B per intermediate element) and the activation output (1 B) are not kept; the
    MLP's forward (GEMMs, norm, activation, casts) and its share of the forward TP collectives
    run again."""
    v = _vars(_selective(DENSE_PLAN, ["core_attn", "mlp"]))
    base = layer_cost(DENSE, _vars(_selective(DENSE_PLAN, ["core_attn"])))
    mlp = layer_cost(DENSE, v)
    x = context(DENSE, v)
    half = dense_ffn_half(DENSE, v, x)
    h, f = DENSE.model.hidden_size, DENSE.model.ffn_hidden_size
    freed = 1.0 * 2048 * h / 2 + (4.0 + 1.0) * 2048 * f / 2
    assert base.activation_selective_bytes - mlp.activation_selective_bytes == pytest.approx(freed)
    assert mlp.selective_recompute_s - base.selective_recompute_s == pytest.approx(
        float(half.mlp_recompute_s + mlp.tp_exposed_fwd_s / 2))
    assert half.mlp_recompute_s > half.gemm_fwd_s  # the GEMMs and the memory-bound ops


def test_layernorm_adds_nothing_to_mlp_on_a_dense_layer():
    """The dense MLP's norm is fused into fc1: `mlp` already drops and re-runs it."""
    both = layer_cost(DENSE, _vars(_selective(DENSE_PLAN, ["layernorm", "mlp"])))
    mlp = layer_cost(DENSE, _vars(_selective(DENSE_PLAN, ["mlp"])))
    assert both.activation_selective_bytes == mlp.activation_selective_bytes
    assert both.selective_recompute_s == mlp.selective_recompute_s


def test_mla_up_proj_without_a_query_latent_reruns_the_query_projection():
    """Without q_lora_rank Megatron's qkv_up_proj_and_rope_apply re-runs linear_q_proj (hidden to
    per-head queries) beside the key/value up-projection."""
    m = DEEPSEEK.model
    direct = m.model_copy(update={"mla": m.mla.model_copy(update={"q_lora_rank": None})})
    a, x = m.num_heads, m.mla
    qk = x.qk_nope_head_dim + x.qk_rope_head_dim
    kv_up = x.kv_lora_rank * a * (x.qk_nope_head_dim + x.v_head_dim)
    assert mla_up_projection_params(direct) == kv_up + m.hidden_size * a * qk
    assert mla_up_projection_params(m) == kv_up + x.q_lora_rank * a * qk


def test_moe_act_frees_the_experts_activation_output():
    """The second expert GEMM's input (bf16 here: 2 B per routed token and intermediate element)
    is not kept; the gated activation re-reads the first GEMM's output (4 B) and writes it (2 B)."""
    v = _vars(_selective(QWEN_PLAN, ["moe_act"]))
    base = moe_layer_cost(QWEN, _vars(_selective(QWEN_PLAN, ["core_attn"])))
    act = moe_layer_cost(QWEN, v)
    routed = routed_tokens(QWEN, v, context(QWEN, v))
    width = QWEN.model.moe.ffn_hidden_size
    gib = 1.0 if QWEN.task.precision == "fp8" else 2.0
    assert base.activation_selective_bytes - act.activation_selective_bytes == pytest.approx(float(gib * routed * width))
    cast = 3.0 if QWEN.task.precision == "fp8" else 0.0
    expected_s = kernels.memory_bound_time_s(routed * width * (6.0 + cast), QWEN.cluster.device)
    assert act.selective_recompute_s - base.selective_recompute_s == pytest.approx(float(expected_s))


def test_mla_up_proj_frees_the_per_head_queries_keys_and_values():
    """MLA's up-projected Q, K and V (bf16, TP-sharded) are not kept; the up-projection GEMMs
    and RoPE run again from the kept latents."""
    v = _vars(_selective(DEEPSEEK_PLAN, ["mla_up_proj"]))
    base = moe_layer_cost(DEEPSEEK, _vars(_selective(DEEPSEEK_PLAN, ["core_attn"])))
    up = moe_layer_cost(DEEPSEEK, v)
    m, tokens = DEEPSEEK.model, DEEPSEEK.task.seq_len
    freed = 2.0 * tokens * (m.attention_width + m.kv_width + m.value_width) / 2
    assert base.activation_selective_bytes - up.activation_selective_bytes == pytest.approx(freed)
    gemm = kernels.gemm_time_s(2.0 * tokens * mla_up_projection_params(m) / 2, 2, DEEPSEEK.cluster.device,
                               DEEPSEEK.task.precision)
    assert up.selective_recompute_s - base.selective_recompute_s > float(gemm)


MODULES = ["core_attn", "layernorm", "moe_act", "mla_up_proj", "mlp"]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_more_modules_never_cost_memory_or_save_time(size):
    """On DeepSeek-V3 (MLA, a dense prefix, MoE blocks): adding a module to any set frees
    memory or leaves it, and adds recompute time or leaves it; selective never keeps more than
    no recompute."""
    none = evaluate(DEEPSEEK, DEEPSEEK_PLAN)
    for modules in itertools.combinations(MODULES, size):
        plan = _selective(DEEPSEEK_PLAN, list(modules))
        assert not check_plan(plan, DEEPSEEK)
        priced = evaluate(DEEPSEEK, plan)
        assert priced.peak_memory_bytes <= none.peak_memory_bytes * (1 + 1e-12)
        assert priced.step_time_s >= none.step_time_s * (1 - 1e-12)
        for extra in set(MODULES) - set(modules):
            more = evaluate(DEEPSEEK, _selective(DEEPSEEK_PLAN, [*modules, extra]))
            assert more.peak_memory_bytes <= priced.peak_memory_bytes * (1 + 1e-12), (modules, extra)
            assert more.recompute_s >= priced.recompute_s * (1 - 1e-12), (modules, extra)


def test_hardware_flops_count_the_rerun_matmuls():
    model, s = DEEPSEEK.model, DEEPSEEK.task.seq_len
    base = flops.model_flops_per_token(model, s)
    assert flops.hardware_flops_per_token(model, s, "selective", ()) == base
    dense_layers = model.num_layers - model.num_moe_layers
    assert flops.hardware_flops_per_token(model, s, "selective", ("mlp",)) == pytest.approx(
        base + dense_layers * flops.dense_ffn_matmul_flops_per_token(model))
    assert flops.hardware_flops_per_token(model, s, "selective", ("mla_up_proj",)) == pytest.approx(
        base + model.num_layers * 2.0 * mla_up_projection_params(model))
    assert flops.hardware_flops_per_token(model, s, "selective", ("layernorm", "moe_act")) == base
    assert flops.hardware_flops_per_token(model, s, "selective") == pytest.approx(
        base + model.num_layers * flops.attention_core_flops_per_token(model, s))


def test_the_default_set_prices_as_before():
    """recompute: selective without modules is Megatron's default, core_attn: the same price."""
    default = evaluate(DEEPSEEK, _selective(DEEPSEEK_PLAN, None))
    explicit = evaluate(DEEPSEEK, _selective(DEEPSEEK_PLAN, ["core_attn"]))
    assert default.step_time_s == explicit.step_time_s
    assert default.peak_memory_bytes == explicit.peak_memory_bytes
    assert _selective(DEEPSEEK_PLAN, ["core_attn"]).summary().endswith("rc:selective")
    assert _selective(DEEPSEEK_PLAN, ["mlp", "mla_up_proj"]).summary().endswith("rc:selective(mla_up_proj,mlp)")


def test_plan_checks_follow_megatron():
    dense = _selective(DENSE_PLAN, ["moe_act"])
    assert any("moe_act needs an MoE model" in e for e in check_plan(dense, DENSE))
    assert any("mla_up_proj needs multi-latent" in e for e in check_plan(_selective(QWEN_PLAN, ["mla_up_proj"]), QWEN))
    assert any("every layer of this model is MoE" in e for e in check_plan(_selective(QWEN_PLAN, ["mlp"]), QWEN))
    for profile in ("torchtitan", "megatron-lm@2022", "megatron-deepspeed@2022"):
        other = make_problem(num_devices=8, framework=Framework(profile=profile))
        errors = check_plan(_selective(Plan(dp=8), ["mlp"]), other)
        assert any("recompute_modules is Megatron-Core's option" in e for e in errors), profile
        assert not check_plan(_selective(Plan(dp=8), None), other)
    with pytest.raises(ValueError, match="needs recompute: selective"):
        Plan(dp=8, recompute="full", recompute_modules=["layernorm"])
    with pytest.raises(ValueError, match="twice"):
        Plan(dp=8, recompute="selective", recompute_modules=["mlp", "mlp"])


def test_exports_write_the_modules_or_say_what_they_approximate():
    plan = _selective(DEEPSEEK_PLAN, ["mla_up_proj", "mlp"])
    megatron = export(DEEPSEEK, plan, "megatron").text
    assert "--recompute-granularity selective\n    --recompute-modules mla_up_proj mlp\n" in megatron
    bridge = export(DEEPSEEK, plan, "megatron-bridge").text
    assert '"model.recompute_modules=[mla_up_proj,mlp]"' in bridge
    titan = export(DEEPSEEK, plan, "torchtitan", "0.2").text
    assert 'mode = "full"' in titan and "APPROXIMATION: Megatron-Core's selective recompute of mla_up_proj, mlp" in titan


def test_bulk_pricing_refuses_a_plan_with_its_own_modules_and_heuristics_price_it_one_by_one():
    from planner.llm.candidates import CandidateSet
    from solvers.heuristics import price

    plan = _selective(DENSE_PLAN, ["core_attn", "mlp"])
    with pytest.raises(ValueError, match="no recompute_modules column"):
        CandidateSet.from_plans([plan])
    assert price(DENSE, plan)[0] == pytest.approx(evaluate(DENSE, plan).step_time_s)


def test_a_recompute_flag_replaces_the_plan_files_modules(capsys):
    """`--recompute none` on a plan file with selective modules drops them (the plan would be
    invalid otherwise); `--recompute-modules` replaces them."""
    import json

    from planner.cli import main

    task, plan = str(PROBLEMS / "tasks" / "deepseek-v3-1024xh100.yaml"), str(PROBLEMS / "plans" / "deepseek-v3-bridge.yaml")
    assert main(["estimate", task, "--plan", plan, "--recompute", "none", "--json"]) in (0, 3)
    priced = json.loads(capsys.readouterr().out)["plan"]
    assert priced["recompute"] == "none" and priced.get("recompute_modules") is None
    assert main(["estimate", task, "--plan", plan, "--recompute-modules", "mla_up_proj", "--json"]) in (0, 3)
    priced = json.loads(capsys.readouterr().out)["plan"]
    assert priced["recompute"] == "selective" and priced["recompute_modules"] == ["mla_up_proj"]


def test_recompute_none_on_a_plan_file_with_full_counts_drops_them(tmp_path, capsys):
    import json

    from planner.cli import main

    plan = tmp_path / "plan.yaml"
    plan.write_text("dp: 8\nrecompute: full\nrecompute_num_layers: [4]\n")
    task = str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml")
    assert main(["estimate", task, "--plan", str(plan), "--recompute", "none", "--json"]) in (0, 3)
    priced = json.loads(capsys.readouterr().out)["plan"]
    assert priced["recompute"] == "none" and priced.get("recompute_num_layers") is None


def test_compare_signs_a_faster_plan_that_does_not_fit(capsys):
    """The published DeepSeek-V3 plan is faster than the rules of thumb but over memory: its gap
    to the best fitting plan is negative and printed with its sign."""
    from planner.cli import main

    main(["compare", str(PROBLEMS / "tasks" / "deepseek-v3-1024xh100.yaml"), "--plan",
          str(PROBLEMS / "plans" / "deepseek-v3-bridge.yaml"), "--solvers", "megatron-rules,greedy"])
    out = capsys.readouterr().out
    assert "+-" not in out
    assert any(line.startswith("plan ") and " -" in line and "%" in line for line in out.splitlines())
