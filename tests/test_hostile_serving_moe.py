"""The hostile-input corpus of MoE serving: the plan fields `ep` and `dp_attention` (types,
ranges, and every rule of planner.serving.plan: ep dividing the routed experts and tp x dp, a
multiple of tp, the expert width with ep 1, dp_attention only with MLA, neither on a dense
model), MoE tasks that cannot fit, and the search's refusals and infeasibility on them.
Each case: a clear error naming the file and the field (exit 2), or the stated exit code and
text, never a traceback, never a silent default (pattern of tests/test_hostile_serving.py)."""

from __future__ import annotations

import json

import pytest

from .test_hostile_inputs import materialize, run_cli
from .test_hostile_serving import Case

TASK = """model: qwen3-30b-a3b
cluster: dgx-h100
num_devices: 8
inference:
  requests: {input_tokens: 1024, output_tokens: 128}
  concurrency: 64
  weight_precision: fp8
  kv_cache_dtype: fp8
  engine: {name: vllm}
  targets: {ttft_s: 1s, tpot_s: 50ms}
"""
MLA_TASK = TASK.replace("model: qwen3-30b-a3b", "model: deepseek-v2").replace("num_devices: 8", "num_devices: 16")
DENSE_TASK = TASK.replace("model: qwen3-30b-a3b", "model: llama3-8b")
MIXTRAL_TASK = TASK.replace("model: qwen3-30b-a3b", "model: mixtral-8x7b")
PLAN = "family: serving\ntp: 1\npp: 1\ndp: 8\nep: 8\n"

ESTIMATE = ["estimate", "{d}/task.yaml", "--plan", "{d}/plan.yaml"]
SOLVE = ["solve", "{d}/task.yaml"]


def plan_with(old: str, new: str, text: str = PLAN) -> str:
    assert old in text, old
    return text.replace(old, new)


def plan_cases() -> list[Case]:
    c = []

    def p(id_, text, *says, code=2, task=TASK, argv=ESTIMATE):
        c.append(Case(f"plan-{id_}", argv, {"task.yaml": task, "plan.yaml": text}, code,
                      ("plan.yaml", *says) if code == 2 else says))

    # types and ranges of ep
    p("ep-0", plan_with("ep: 8", "ep: 0"), "ep: Input should be greater than 0")
    p("ep-negative", plan_with("ep: 8", "ep: -8"), "ep: Input should be greater than 0")
    p("ep-2**17", plan_with("ep: 8", "ep: 131072"), "ep: Input should be less than or equal to 65536")
    p("ep-1e30", plan_with("ep: 8", "ep: 1" + "0" * 30), "ep:")
    p("ep-float", plan_with("ep: 8", "ep: 8.0"), "ep: Input should be a valid integer")
    p("ep-half", plan_with("ep: 8", "ep: 1.5"), "ep: Input should be a valid integer")
    p("ep-string", plan_with("ep: 8", "ep: '8'"), "ep: Input should be a valid integer")
    p("ep-true", plan_with("ep: 8", "ep: true"), "ep: Input should be a valid integer")
    p("ep-null", plan_with("ep: 8", "ep: null"), "ep: Input should be a valid integer")
    p("ep-nan", plan_with("ep: 8", "ep: .nan"), "ep:")
    p("ep-list", plan_with("ep: 8", "ep: [8]"), "ep: Input should be a valid integer")
    p("ep-misspelt", plan_with("ep: 8", "expert_parallel: 8"), "expert_parallel: unknown field")
    # types of dp_attention
    for id_, value in (("string", "'yes'"), ("int", "1"), ("null", "null"), ("list", "[true]"), ("float", "1.0")):
        p(f"dp-attention-{id_}", PLAN + f"dp_attention: {value}\n", "dp_attention: Input should be a valid boolean")
    p("dp-attention-misspelt", PLAN + "dp_attn: true\n", "dp_attn: unknown field")
    # the expert-parallel rules
    p("ep-3-experts", plan_with("ep: 8", "ep: 3"), "ep (3) must divide the model's 128 routed experts",
      "ep (3) must divide tp x dp")
    p("ep-16-gpus", plan_with("ep: 8", "ep: 16"), "ep (16) must divide tp x dp = 1 x 8 = 8")
    p("ep-2-tp-4", "family: serving\ntp: 4\npp: 1\ndp: 2\nep: 2\n", "ep (2) must be 1 or a multiple of tp (4)")
    p("ep-6-tp-2", "family: serving\ntp: 2\npp: 1\ndp: 4\nep: 6\n", "ep (6) must divide the model's 128",
      "ep (6) must divide tp x dp = 2 x 4 = 8")
    p("ep-16-mixtral", "family: serving\ntp: 8\npp: 1\ndp: 2\nep: 16\n", "ep (16) must divide the model's 8 routed",
      task=MIXTRAL_TASK.replace("num_devices: 8", "num_devices: 16"))
    p("ep-pp", "family: serving\ntp: 1\npp: 2\ndp: 4\nep: 8\n", "ep (8) must divide tp x dp = 1 x 4 = 4")
    p("ep-1-expert-width", "family: serving\ntp: 8\npp: 1\ndp: 1\nep: 1\n", "expert width 772",
      task=TASK.replace("model: qwen3-30b-a3b",
                        "model: {preset: qwen3-30b-a3b, moe: {num_experts: 128, top_k: 8, ffn_hidden_size: 772}}"))
    p("dp-attention-gqa", PLAN + "dp_attention: true\n",
      "dp_attention applies to multi-head latent attention (MLA) models; Qwen3-30B-A3B")
    p("dp-attention-dense", "family: serving\ntp: 8\npp: 1\ndp: 1\ndp_attention: true\n",
      "dp_attention applies to multi-head latent attention (MLA) models; this model is dense", task=DENSE_TASK)
    p("ep-dense", "family: serving\ntp: 1\npp: 1\ndp: 8\nep: 8\n", "ep (8) applies to mixture-of-experts models",
      task=DENSE_TASK)
    p("ep-dense-json", "family: serving\ntp: 1\npp: 1\ndp: 8\nep: 2\n", "ep (2) applies", task=DENSE_TASK,
      argv=[*ESTIMATE, "--json"])
    # what is accepted, priced and said
    p("ep-1-priced", plan_with("ep: 8", "ep: 1"), "TP1 PP1 DP8", code=0)
    p("ep-8-priced", PLAN, "TP1 PP1 DP8 EP8", "ep_comm", code=0)
    p("mla-dp-attention", "family: serving\ntp: 8\npp: 1\ndp: 2\nep: 16\ndp_attention: true\n",
      "EP16 DPattn", code=0, task=MLA_TASK)
    p("mla-dp-attention-json", "family: serving\ntp: 8\npp: 1\ndp: 2\nep: 16\ndp_attention: true\n",
      '"dp_attention": true', code=0, task=MLA_TASK, argv=[*ESTIMATE, "--json"])
    p("ep-65536", plan_with("ep: 8", "ep: 65536"), "ep (65536) must divide the model's 128")
    p("does-not-fit", "family: serving\ntp: 1\npp: 1\ndp: 16\nep: 1\n", "not even one sequence fits", code=3,
      task=MLA_TASK)
    return c


def task_cases() -> list[Case]:
    c = []

    def t(id_, text, *says, code=2, argv=ESTIMATE, plan=PLAN):
        c.append(Case(f"task-{id_}", argv, {"task.yaml": text, "plan.yaml": plan}, code,
                      (("plan.yaml" if "plan" in id_ else "task.yaml"), *says) if code == 2 else says))

    t("moe-inline-bad-experts", TASK.replace("model: qwen3-30b-a3b",
                                             "model: {preset: qwen3-30b-a3b, moe: {num_experts: 1, top_k: 1, "
                                             "ffn_hidden_size: 768}}"), "model.moe.num_experts")
    t("moe-inline-topk-over", TASK.replace("model: qwen3-30b-a3b",
                                           "model: {preset: qwen3-30b-a3b, moe: {num_experts: 8, top_k: 9, "
                                           "ffn_hidden_size: 768}}"), "top_k (9) is larger than num_experts (8)")
    t("mla-with-kv-heads", TASK.replace("model: qwen3-30b-a3b", "model: {preset: deepseek-v2, num_kv_heads: 8}"),
      "num_kv_heads does not apply with mla")
    t("moe-too-long", TASK.replace("input_tokens: 1024", "input_tokens: 40960"), "inference.requests",
      "max_seq_len 40,960")
    t("moe-fp4-on-h100", TASK.replace("weight_precision: fp8", "weight_precision: fp4"),
      "inference.weight_precision: fp4 needs a fp4 peak")
    t("solve-infeasible-memory", MLA_TASK.replace("num_devices: 16", "num_devices: 1"),
      "INFEASIBLE", "memory: not one sequence per pipeline stage fits", code=3, argv=SOLVE)
    t("solve-infeasible-tpot", TASK.replace("tpot_s: 50ms", "tpot_s: 1us"), "INFEASIBLE", "tpot:", code=3,
      argv=SOLVE)
    t("solve-json", TASK, '"status": "OPTIMAL"', '"ep"', code=0, argv=[*SOLVE, "--json"])
    t("compare-moe-plan", TASK, "plan ", "EP8", code=0, argv=["compare", "{d}/task.yaml", "--plan", "{d}/plan.yaml"])
    t("compare-bad-moe-plan", TASK, "ep (3) must divide the model's 128 routed experts",
      argv=["compare", "{d}/task.yaml", "--plan", "{d}/plan.yaml"], plan=plan_with("ep: 8", "ep: 3"))
    t("compare-json", TASK, '"method": "serving-exhaustive"', code=0, argv=["compare", "{d}/task.yaml", "--json"])
    return c


CASES = plan_cases() + task_cases()


def test_the_corpus_is_large():
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_serving_moe_input(case, tmp_path, capsys):
    argv = materialize(case, tmp_path)
    code, out, err = run_cli(argv, capsys)
    text = err + out
    assert "Traceback" not in text and "internal error" not in text, text[-2000:]
    assert code == case.code, text[-2000:]
    assert len(err) < 5000, "an error message should not echo an enormous input"
    for needle in case.says:
        assert needle in text, (needle, text[-2000:])
    for needle in case.never:
        assert needle not in text, (needle, text[-2000:])
    if code == 2:
        # one line for a field error; the plan checks list each rule on its own line under one header
        first = err.strip().splitlines()[0]
        assert "plan.yaml" in first or "task.yaml" in first or "--" in first, err
    if "--json" in argv and code in (0, 3):
        json.loads(out)
