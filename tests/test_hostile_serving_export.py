"""Hostile inputs to the serving exports (planner export --to vllm | sglang | trtllm): targets of
the wrong family, plans of another family, missing and malformed files, flags that do not apply,
plans an engine cannot express. Each is one line on standard error naming the file (or flag) and
the field, with its exit code (2 bad input, 3 no feasible plan, 4 not expressible), never a
traceback; an inconsistent plan lists its inconsistencies one per line under that line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from .test_hostile_inputs import run_cli

TASK = """model: llama3-70b
cluster: dgx-h100
num_devices: 8
inference:
  requests: {input_tokens: 1024, output_tokens: 128}
  concurrency: 32
  weight_precision: fp8
  kv_cache_dtype: fp8
  engine: {name: vllm}
  targets: {ttft_s: 1s, tpot_s: 50ms}
"""
PLAN = "family: serving\ntp: 4\npp: 1\ndp: 2\nmax_num_seqs: 16\n"
TRAINING_TASK = "{P}/tasks/llama3-8b-8xh100.yaml"
TRAINING_PLAN = "{P}/plans/llama3-70b-nemo.yaml"
DLRM_TASK = "mlperf-dlrm-dcnv2-8xh100"
DLRM_PLAN = "{P}/plans/madmax-dlrm-a-mp128.yaml"
BOTH = {"task.yaml": TASK, "plan.yaml": PLAN}
WITH_PLAN = ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml"]
MOE_TASK = "{P}/tasks/qwen3-235b-nvl72-serving.yaml"


@dataclass
class Case:
    id: str
    argv: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int = 2
    says: tuple[str, ...] = ()
    lines: int | None = 1
    """Lines of standard error (None: not counted)."""


def cases() -> list[Case]:
    c = []
    # Wrong --to for the family.
    for to in ("megatron", "deepspeed", "torchtitan", "megatron-bridge", "torchrec", "torchrec-python"):
        c.append(Case(f"inference-task-to-{to}", [*WITH_PLAN, "--to", to], BOTH, 2,
                      ("task.yaml: inference: --to " + to + " exports training plans", "vllm, sglang, trtllm")))
        c.append(Case(f"inference-task-alone-to-{to}", ["export", "{d}/task.yaml", "--to", to], BOTH, 2,
                      ("task.yaml: inference: --to " + to,)))
    for to in ("vllm", "sglang", "trtllm"):
        c.append(Case(f"training-task-to-{to}", ["export", TRAINING_PLAN, "--task", TRAINING_TASK, "--to", to], {}, 2,
                      ("llama3-8b-8xh100.yaml: training: --to " + to + " exports serving plans",
                       "an LLM training task", "megatron")))
        c.append(Case(f"training-task-alone-to-{to}", ["export", TRAINING_TASK, "--to", to], {}, 2,
                      ("llama3-8b-8xh100.yaml: training: --to " + to, "training task")))
        c.append(Case(f"dlrm-task-to-{to}", ["export", DLRM_PLAN, "--task", DLRM_TASK, "--to", to], {}, 2,
                      ("mlperf-dlrm-dcnv2-8xh100.yaml: training: --to " + to, "a DLRM task", "torchrec")))
        # A plan of another family with a serving target.
        c.append(Case(f"training-plan-inference-task-{to}", ["export", TRAINING_PLAN, "--task", "{d}/task.yaml", "--to",
                                                              to], BOTH, 2,
                      ("llama3-70b-nemo.yaml: family: an inference task needs a serving plan",)))
        c.append(Case(f"dlrm-plan-inference-task-{to}", ["export", DLRM_PLAN, "--task", "{d}/task.yaml", "--to", to],
                      BOTH, 2, ("madmax-dlrm-a-mp128.yaml: family:",)))
        c.append(Case(f"serving-plan-training-task-{to}", ["export", "{d}/plan.yaml", "--task", TRAINING_TASK, "--to",
                                                            to], BOTH, 2, ("llama3-8b-8xh100.yaml: training:",)))
    c.append(Case("training-plan-alone", ["export", TRAINING_PLAN, "--to", "megatron"], {}, 2,
                  ("llama3-70b-nemo.yaml: --task is required",)))
    c.append(Case("serving-plan-alone", ["export", "{d}/plan.yaml", "--to", "vllm"], BOTH, 2,
                  ("plan.yaml: --task is required", "only an inference task")))
    c.append(Case("serving-preset-plan-alone", ["export", "llama3-70b-vllm-tp4", "--to", "sglang"], {}, 2,
                  ("llama3-70b-vllm-tp4: --task is required",)))
    # Missing and malformed files.
    c.append(Case("missing-plan", ["export", "{d}/nope.yaml", "--task", "{d}/task.yaml", "--to", "vllm"], BOTH, 2,
                  ("nope.yaml",)))
    c.append(Case("missing-task", ["export", "{d}/plan.yaml", "--task", "{d}/nope.yaml", "--to", "vllm"], BOTH, 2,
                  ("nope.yaml",)))
    c.append(Case("missing-task-alone", ["export", "{d}/nope.yaml", "--to", "trtllm"], BOTH, 2, ("nope.yaml",)))
    c.append(Case("plan-is-a-directory", ["export", "{d}/sub", "--task", "{d}/task.yaml", "--to", "vllm"],
                  {**BOTH, "sub/": ""}, 2, ("sub",)))
    for id_, text, says in (
            ("empty", "", "plan.yaml: expected a mapping of plan fields"),
            ("list", "- tp: 4\n", "plan.yaml: expected a mapping of plan fields"),
            ("bad-yaml", "family: serving\ntp: [4\n", "plan.yaml"),
            ("binary", b"\x00\xff\xfe", "plan.yaml"),
            ("unknown-field", PLAN + "tpp: 2\n", "plan.yaml: tpp"),
            ("tp-zero", PLAN.replace("tp: 4", "tp: 0"), "plan.yaml: tp"),
            ("tp-text", PLAN.replace("tp: 4", "tp: four"), "plan.yaml: tp"),
            ("max-num-seqs-negative", PLAN.replace("max_num_seqs: 16", "max_num_seqs: -1"), "plan.yaml: max_num_seqs"),
            ("no-family", PLAN.replace("family: serving\n", ""), "plan.yaml: family:"),
            ("family-dlrm", PLAN.replace("family: serving", "family: dlrm"), "plan.yaml: family:"),
            ("format-version-future", PLAN + "format_version: 99\n", "plan.yaml: format_version"),
            ("other-problem-hash", PLAN + "provenance: {problem_hash: 0123456789abcdef}\n",
             "plan.yaml: this plan was made for problem 0123456789abcdef")):
        c.append(Case(f"plan-{id_}", [*WITH_PLAN, "--to", "vllm"], {"task.yaml": TASK, "plan.yaml": text}, 2, (says,)))
    c.append(Case("plan-wrong-device-count", [*WITH_PLAN, "--to", "sglang"],
                  {"task.yaml": TASK, "plan.yaml": PLAN.replace("dp: 2", "dp: 4")}, 2,
                  ("plan.yaml: this plan is invalid for", "16 GPUs"), lines=None))
    c.append(Case("task-malformed", [*WITH_PLAN, "--to", "vllm"],
                  {"task.yaml": TASK.replace("concurrency: 32", "concurrency: many"), "plan.yaml": PLAN}, 2,
                  ("task.yaml: inference.concurrency",)))
    c.append(Case("task-alone-malformed", ["export", "{d}/task.yaml", "--to", "vllm"],
                  {"task.yaml": TASK.replace("kv_cache_dtype: fp8", "kv_cache_dtype: fp4")}, 2,
                  ("task.yaml: inference.kv_cache_dtype",)))
    c.append(Case("task-alone-yaml-error", ["export", "{d}/task.yaml", "--to", "vllm"],
                  {"task.yaml": "inference: {requests: [\n"}, 2, ("task.yaml",)))
    # Flags that do not apply.
    c.append(Case("format-on-megatron", ["export", TRAINING_PLAN, "--task", "{P}/tasks/llama3-70b-64xh100.yaml", "--to",
                                         "megatron", "--format", "config"], {}, 2,
                  ("--format: apply to the serving targets",)))
    c.append(Case("model-on-torchrec", ["export", DLRM_PLAN, "--task", DLRM_TASK, "--to", "torchrec", "--model", "x"],
                  {}, 2, ("--model: apply to the serving targets",)))
    c.append(Case("time-limit-with-plan", [*WITH_PLAN, "--to", "vllm", "--time-limit", "5"], BOTH, 2,
                  ("--time-limit: applies when an inference task is exported without a plan",)))
    c.append(Case("check-with-serving", [*WITH_PLAN, "--to", "vllm", "--check-with", "{d}"], BOTH, 2,
                  ("--check-with runs Megatron-LM's parser",)))
    c.append(Case("target-version-unknown", [*WITH_PLAN, "--to", "sglang", "--target-version", "0.4.0"], BOTH, 2,
                  ("--target-version: sglang exports are written for 0.5.23, not '0.4.0'",)))
    c.append(Case("format-unknown", [*WITH_PLAN, "--to", "vllm", "--format", "json"], BOTH, 2,
                  ("--format: invalid choice",)))
    c.append(Case("to-unknown", [*WITH_PLAN, "--to", "tgi"], BOTH, 2, ("--to: invalid choice",)))
    c.append(Case("time-limit-zero", ["export", "{d}/task.yaml", "--to", "vllm", "--time-limit", "0"], BOTH, 2,
                  ("--time-limit",)))
    c.append(Case("o-directory", [*WITH_PLAN, "--to", "vllm", "-o", "{d}/sub"], {**BOTH, "sub/": ""}, 2,
                  ("-o/--output",)))
    c.append(Case("o-is-the-task", [*WITH_PLAN, "--to", "trtllm", "-o", "{d}/task.yaml"], BOTH, 2,
                  ("is an input of this command",)))
    c.append(Case("o-is-the-plan", [*WITH_PLAN, "--to", "vllm", "-o", "{d}/plan.yaml"], BOTH, 2,
                  ("is an input of this command",)))
    c.append(Case("o-task-alone-is-the-task", ["export", "{d}/task.yaml", "--to", "vllm", "-o", "{d}/task.yaml"],
                  BOTH, 2, ("is an input of this command",)))
    c.append(Case("task-given-as-plan", ["export", "{d}/task.yaml", "--task", "{d}/task.yaml", "--to", "vllm"], BOTH, 2,
                  ("task.yaml: inference: this is an inference task, not a serving plan", "drop --task")))
    for id_, model in (("newline", "org/a\nb"), ("space", "org/a b"), ("empty", ""), ("huge", "m" * 5000)):
        c.append(Case(f"model-{id_}", [*WITH_PLAN, "--to", "vllm", "--model", model], BOTH, 2,
                      ("--model: expected a Hugging Face id or a path without spaces",)))
    disaggregated = ("family: serving\nprefill: {tp: 4, pp: 1, dp: 1, max_num_batched_tokens: 4096}\n"
                     "decode: {tp: 4, pp: 1, dp: 1, max_num_seqs: 64}\n")
    files = {"task.yaml": TASK, "plan.yaml": disaggregated}
    c.append(Case("disaggregated-plan-trtllm", [*WITH_PLAN, "--to", "trtllm"], files, 4,
                  ("a disaggregated plan exports to sglang or vllm",)))
    c.append(Case("disaggregated-plan-config", [*WITH_PLAN, "--to", "vllm", "--format", "config"], files, 4,
                  ("--format config: a disaggregated plan is two servers",)))
    c.append(Case("disaggregated-plan-gpus", [*WITH_PLAN, "--to", "sglang"],
                  {"task.yaml": TASK, "plan.yaml": disaggregated.replace("dp: 1, max_num_seqs", "dp: 3, max_num_seqs")},
                  2, ("plan.yaml: this plan is invalid", "4 + 12 = 16 GPUs, but the task has 8"), lines=None))
    # No feasible plan; plans an engine cannot express.
    c.append(Case("task-alone-infeasible", ["export", "{d}/task.yaml", "--to", "vllm"],
                  {"task.yaml": TASK.replace("tpot_s: 50ms", "tpot_s: 1us")}, 3,
                  ("task.yaml: inference: no serving plan to export: infeasible",)))
    c.append(Case("sglang-fp16-kv-bf16-weights", [*WITH_PLAN, "--to", "sglang"],
                  {"task.yaml": TASK.replace("weight_precision: fp8", "weight_precision: bf16").replace(
                      "kv_cache_dtype: fp8", "kv_cache_dtype: fp16"), "plan.yaml": PLAN}, 4,
                  ("inference.kv_cache_dtype: SGLang 0.5.23 has no float16 KV cache",)))
    moe_plan = "family: serving\ntp: 1\npp: 1\ndp: 72\nep: 8\nmax_num_seqs: 32\n"
    for to in ("sglang", "trtllm"):
        c.append(Case(f"moe-ep-across-replicas-{to}", ["export", "{d}/plan.yaml", "--task", MOE_TASK, "--to", to],
                      {"plan.yaml": moe_plan}, 4, ("ep 8:", "one server's TP group")))
    c.append(Case("dp-attention-on-vllm", ["export", "{d}/plan.yaml", "--task", "{P}/tasks/deepseek-v3-96xh100-serving.yaml",
                                           "--to", "vllm"],
                  {"plan.yaml": "family: serving\ntp: 8\npp: 1\ndp: 12\nep: 8\ndp_attention: true\nmax_num_seqs: 64\n"},
                  4, ("dp_attention", "vLLM runs attention data-parallel only as --data-parallel-size")))
    return c


CASES = cases()


def materialize(case: Case, tmp_path) -> list[str]:
    from .conftest import PROBLEMS

    for name, content in case.files.items():
        path = tmp_path / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return [a.replace("{d}", str(tmp_path)).replace("{P}", str(PROBLEMS)) for a in case.argv]


def test_the_corpus_is_large():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_serving_export(case, tmp_path, capsys):
    argv = materialize(case, tmp_path)
    code, out, err = run_cli(argv, capsys)
    text = err + out
    assert "Traceback" not in text and "internal error" not in text, text[-2000:]
    assert code == case.code, text[-2000:]
    for needle in case.says:
        assert needle in text, (needle, text[-2000:])
    assert out == "", "nothing is written to standard output when the export fails"
    if case.lines is not None:
        lines = err.strip().splitlines()
        if code == 2 and lines and lines[0].startswith("usage:"):  # argparse: its usage, then its one error line
            lines = [line for line in lines if "error:" in line]
        assert len(lines) == case.lines, err
