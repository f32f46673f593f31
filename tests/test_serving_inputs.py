"""Bad input for every field and file of the serving family: a clear error that names the file
and the field (exit 2), never a traceback; the style of tests/test_hostile_inputs.py."""

from __future__ import annotations

import pytest

from planner.cli import main

from .conftest import PROBLEMS

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
PLAN = "family: serving\ntp: 4\npp: 1\ndp: 2\n"


def task_with(old: str, new: str) -> str:
    assert old in TASK, old
    return TASK.replace(old, new)


def plan_with(old: str, new: str) -> str:
    assert old in PLAN, old
    return PLAN.replace(old, new)


TASK_CASES = [
    # (id, task text, what the message must say)
    ("requests-missing", task_with("  requests: {input_tokens: 1024, output_tokens: 128}\n", ""),
     "inference.requests: Field required"),
    ("requests-list", task_with("{input_tokens: 1024, output_tokens: 128}", "[1024, 128]"), "inference.requests"),
    ("input-missing", task_with("input_tokens: 1024, ", ""), "inference.requests: input_tokens is missing"),
    ("input-zero", task_with("input_tokens: 1024", "input_tokens: 0"), "inference.requests.input_tokens"),
    ("input-true", task_with("input_tokens: 1024", "input_tokens: true"), "inference.requests.input_tokens"),
    ("input-string", task_with("input_tokens: 1024", "input_tokens: '1024'"), "inference.requests.input_tokens"),
    ("input-float", task_with("input_tokens: 1024", "input_tokens: 1024.5"), "inference.requests.input_tokens"),
    ("output-huge", task_with("output_tokens: 128", "output_tokens: 99999999999"), "inference.requests.output_tokens"),
    ("too-long-for-the-model", task_with("input_tokens: 1024", "input_tokens: 9000"),
     "inference.requests: a request reaches 9,128 tokens", "max_seq_len 8,192"),
    ("fixed-and-buckets", task_with("output_tokens: 128}", "output_tokens: 128, buckets: [{input_tokens: 1, "
                                    "output_tokens: 1}]}"), "inference.requests", "not both"),
    ("buckets-empty", task_with("{input_tokens: 1024, output_tokens: 128}", "{buckets: []}"),
     "inference.requests.buckets"),
    ("bucket-weight-zero", task_with("{input_tokens: 1024, output_tokens: 128}",
                                     "{buckets: [{input_tokens: 10, output_tokens: 10, weight: 0}]}"),
     "inference.requests.buckets.0.weight"),
    ("bucket-unknown-key", task_with("{input_tokens: 1024, output_tokens: 128}",
                                     "{buckets: [{input_tokens: 10, output_tokens: 10, share: 1}]}"),
     "inference.requests.buckets.0.share: unknown field"),
    ("concurrency-zero", task_with("concurrency: 32", "concurrency: 0"), "inference.concurrency"),
    ("concurrency-true", task_with("concurrency: 32", "concurrency: true"), "inference.concurrency"),
    ("concurrency-float", task_with("concurrency: 32", "concurrency: 32.0"), "inference.concurrency"),
    ("weight-precision-int4", task_with("weight_precision: fp8", "weight_precision: int4"),
     "inference.weight_precision"),
    ("fp4-on-h100", task_with("weight_precision: fp8", "weight_precision: fp4"),
     "inference.weight_precision: fp4 needs a fp4 peak", "H100-SXM5-80GB"),
    ("fp8-on-a100", task_with("cluster: dgx-h100", "cluster: dgx-a100-80gb"),
     "inference.weight_precision: fp8 needs a fp8 peak"),
    ("kv-dtype-fp4", task_with("kv_cache_dtype: fp8", "kv_cache_dtype: fp4"), "inference.kv_cache_dtype"),
    ("engine-unknown", task_with("{name: vllm}", "{name: tgi}"), "inference.engine.name"),
    ("engine-string", task_with("{name: vllm}", "vllm"), "inference.engine"),
    ("batching-unknown", task_with("{name: vllm}", "{name: vllm, batching: dynamic}"), "inference.engine.batching"),
    ("decode-attention-unknown", task_with("{name: vllm}", "{name: vllm, decode_attention: paged}"),
     "inference.engine.decode_attention"),
    ("kv-block-zero", task_with("{name: vllm}", "{name: vllm, kv_block_tokens: 0}"),
     "inference.engine.kv_block_tokens"),
    ("memory-utilization-zero", task_with("{name: vllm}", "{name: vllm, gpu_memory_utilization: 0}"),
     "inference.engine.gpu_memory_utilization"),
    ("memory-utilization-above-one", task_with("{name: vllm}", "{name: vllm, gpu_memory_utilization: 1.5}"),
     "inference.engine.gpu_memory_utilization"),
    ("overhead-unit", task_with("{name: vllm}", "{name: vllm, framework_overhead_bytes: 2GiBs}"),
     "inference.engine.framework_overhead_bytes"),
    ("engine-misspelt-key", task_with("{name: vllm}", "{name: vllm, batchng: static}"),
     "inference.engine.batchng: unknown field"),
    ("ttft-negative", task_with("ttft_s: 1s", "ttft_s: -1"), "inference.targets.ttft_s"),
    ("ttft-zero", task_with("ttft_s: 1s", "ttft_s: 0"), "inference.targets.ttft_s"),
    ("tpot-unit", task_with("tpot_s: 50ms", "tpot_s: 50 parsecs"), "inference.targets.tpot_s"),
    ("inference-misspelt-key", task_with("  concurrency: 32", "  concurency: 32"),
     "inference.concurency: unknown field"),
    ("inference-not-a-mapping", "model: llama3-70b\ncluster: dgx-h100\ninference: [1]\n",
     "inference: expected a mapping"),
    ("training-and-inference", TASK + "training: {global_batch_size: 8, seq_len: 128}\n",
     "inference: a task has one workload block"),
    ("no-workload", "model: llama3-70b\ncluster: dgx-h100\n", "training: field required (or inference"),
    ("dlrm-model", task_with("model: llama3-70b", "model: criteo-kaggle-dlrm"),
     "model:", "dlrm", "dense and mixture-of-experts decoders only"),
    ("model-missing-field", task_with("model: llama3-70b", "model: {preset: llama3-70b, num_layers: 0}"),
     "model.num_layers"),
]


@pytest.mark.parametrize(("id_", "text", "says"), [(c[0], c[1], c[2:]) for c in TASK_CASES],
                         ids=[c[0] for c in TASK_CASES])
def test_bad_task_field(tmp_path, capsys, id_, text, says):
    (tmp_path / "task.yaml").write_text(text)
    (tmp_path / "plan.yaml").write_text(PLAN)
    code = main(["estimate", str(tmp_path / "task.yaml"), "--plan", str(tmp_path / "plan.yaml")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "task.yaml" in err, err
    for text_ in says:
        assert text_ in err, err
    assert "internal error" not in err and "Traceback" not in err


PLAN_CASES = [
    ("no-family", "tp: 4\ndp: 2\n", "family: an inference task needs a serving plan", "a training plan"),
    ("dlrm-family", "family: dlrm\ndense: {strategy: ddp}\ntables: []\n", "family: an inference task needs",
     "family 'dlrm'"),
    ("tp-zero", plan_with("tp: 4", "tp: 0"), "tp: Input should be greater than 0"),
    ("tp-string", plan_with("tp: 4", "tp: '4'"), "tp: Input should be a valid integer"),
    ("pp-true", plan_with("pp: 1", "pp: true"), "pp: Input should be a valid integer"),
    ("dp-negative", plan_with("dp: 2", "dp: -2"), "dp: Input should be greater than 0"),
    ("misspelt-key", PLAN + "max_num_seq: 8\n", "max_num_seq: unknown field"),
    ("max-num-seqs-zero", PLAN + "max_num_seqs: 0\n", "max_num_seqs"),
    ("max-batched-tokens-bool", PLAN + "max_num_batched_tokens: true\n", "max_num_batched_tokens"),
    ("training-field", PLAN + "zero_stage: 1\n", "zero_stage: unknown field"),
    ("format-version", "format_version: 99\n" + PLAN, "format_version: 99 is newer"),
    ("provenance-bad-hash", PLAN + "provenance: {problem_hash: XYZ}\n", "provenance.problem_hash"),
    ("other-problem", PLAN + "provenance: {problem_hash: 0123456789abcdef}\n",
     "this plan was made for problem 0123456789abcdef"),
    ("wrong-device-count", plan_with("dp: 2", "dp: 4"), "tp x pp x dp = 4 x 1 x 4 = 16 GPUs, but the task has 8"),
    ("tp-not-dividing-heads", plan_with("tp: 4", "tp: 3").replace("dp: 2", "dp: 1"),
     "tp (3) must divide the model's 64 query heads"),
    ("pp-beyond-layers", "family: serving\ntp: 1\npp: 160\ndp: 1\n", "pp (160) is larger than the model's 80 layers"),
    ("max-seqs-below-pp", "family: serving\ntp: 4\npp: 2\ndp: 1\nmax_num_seqs: 1\n",
     "max_num_seqs (1) is smaller than pp (2)"),
    ("budget-below-seqs", PLAN + "max_num_seqs: 64\nmax_num_batched_tokens: 32\n",
     "max_num_batched_tokens (32) is smaller than max_num_seqs (64)"),
    ("binary", b"\x00\x01\xff" * 8, "binary data"),
    ("duplicate-key", PLAN + "tp: 8\n", "duplicate key 'tp'"),
    ("empty", "", "expected a mapping"),
]


@pytest.mark.parametrize(("id_", "text", "says"), [(c[0], c[1], c[2:]) for c in PLAN_CASES],
                         ids=[c[0] for c in PLAN_CASES])
def test_bad_plan_file(tmp_path, capsys, id_, text, says):
    (tmp_path / "task.yaml").write_text(TASK)
    plan = tmp_path / "plan.yaml"
    plan.write_bytes(text) if isinstance(text, bytes) else plan.write_text(text)
    code = main(["estimate", str(tmp_path / "task.yaml"), "--plan", str(plan)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "plan.yaml" in err, err
    for text_ in says:
        assert text_ in err, err
    assert "internal error" not in err


@pytest.mark.parametrize(("flags", "says"), [
    (["--vpp", "2"], "--vpp: training plan flags do not apply to an inference task"),
    (["--zero", "1"], "--zero: training plan flags do not apply"),
    (["--sp"], "--sp: training plan flags"),
    (["--tp", "0"], "--tp: must be from 1"),
    (["--tp", "3"], "the plan flags (--tp): this plan is invalid"),
])
def test_bad_flags_on_an_inference_task(tmp_path, capsys, flags, says):
    (tmp_path / "task.yaml").write_text(TASK)
    with pytest.raises(SystemExit) if flags[-1] == "0" else _no_exit():
        code = main(["estimate", str(tmp_path / "task.yaml"), *flags])
        assert code == 2
    err = capsys.readouterr().err
    assert says in err, err


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_serving_plan_on_a_training_task_names_the_field(capsys):
    code = main(["estimate", str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml"),
                 "--plan", str(PROBLEMS / "plans" / "llama3-70b-vllm-tp4.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert "llama3-70b-vllm-tp4.yaml: family: this is a serving plan; give it with an inference task" in err
