"""The hostile-input corpus: every command, every class of bad input, a clear error and no traceback.

Each case writes its files into a fresh directory, runs the CLI in-process and asserts the exit
code (2 = bad input unless stated) and that the message names the file or flag and the field.
No case may end in a traceback or an "internal error" (exit 70).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from planner.cli import main

from .conftest import PROBLEMS

TASK = """model: llama3-8b
cluster: dgx-h100
num_devices: 8
training:
  global_batch_size: 128
  seq_len: 8192
  precision: bf16
"""
PLAN = "tp: 8\nsp: true\ndp: 1\n"
RUN = """- id: tiny-run
  workload: training
  model: {name: tiny, num_layers: 4, hidden_size: 1024, num_heads: 16, seq_len: 2048, ffn_hidden_size: 4096}
  hardware: {gpu: H100-SXM5-80GB, num_gpus: 8, gpus_per_node: 8}
  plan: {tp: 1, pp: 1, dp: 8, global_batch_size: 64, micro_batch_size: 1, precision: bf16}
  measured: {step_time_s: 1.0}
"""
EFFICIENCY = """gemm_by_size:
  - {gpu: A100-PCIe-80GB, peak_tflops: 312, rows: [[4096, 4096, 4096, nn, 0.7], [1024, 1024, 1024, nn, 0.5]]}
gemm_best_shape:
  - {gpu: A100-PCIe-80GB, dtype: bf16, peak: 312, fraction: 0.8}
"""


@dataclass
class Case:
    """argv uses {d} for the case directory and {P} for the shipped problems/."""

    id: str
    argv: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int = 2
    says: tuple[str, ...] = ()


def task_with(old: str, new: str) -> str:
    assert old in TASK, old
    return TASK.replace(old, new)


# -- every reader meets every kind of broken file ---------------------------------------------

BROKEN_FILES: dict[str, tuple[str | bytes | None, tuple[str, ...]]] = {
    "binary": (b"\x00\x01\x02\xff" * 16, ("binary data",)),
    "latin-1": ("model: caf\xe9\n".encode("latin-1"), ("not UTF-8 text", "byte 0xe9")),
    "utf-16": (TASK.encode("utf-16"), ("UTF-16",)),
    "empty": ("", ("expected a",)),
    "scalar": ("42\n", ("expected a",)),
    "deep-flow": ("a: " + "[" * 3000 + "]" * 3000 + "\n", ("nested",)),
    "deep-block": ("".join(" " * i + f"k{i}:\n" for i in range(200)), ("nested",)),
    "duplicate-key": ("a: 1\nb: 2\na: 3\n", ("duplicate key 'a'", "line 3")),
    "alias": ("a: &x [1, 2]\nb: *x\n", ("aliases", "line 2")),
    "alias-bomb": ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
                   ("aliases",)),
    "tab-indent": ("a:\n\tb: 1\n", ("not valid YAML", "line")),
    "bool-key": ("yes: 1\n", ("is not a string", "quote it")),
    "unclosed": ("a: [1, 2\n", ("not valid YAML",)),
    "bad-float-tag": ("zz: !!float abc\n", ("line 1", "'abc' cannot be read")),
    "impossible-date": ("zz: 2001-02-30\n", ("line 1", "cannot be read", "day is out of range")),
    "5000-digit-integer": ("zz: " + "9" * 5000 + "\n", ("line 1", "cannot be read")),
    "python-tag": ("zz: !!python/object:os.system x\n", ("not valid YAML", "python/object")),
    "two-documents": ("a: 1\n---\nb: 2\n", ("not valid YAML", "single document")),
    "too-many-values": ("a: [" + "1," * 100_001 + "1]\n", ("more than 100,000 values",)),
    "directory": (None, ("is a directory",)),
    "missing": ("<missing>", ("cannot read file", "No such file")),
    "symlink-loop": ("<loop>", ("cannot read file", "symbolic links")),
}

READERS = {
    "estimate-task": ["estimate", "{d}/f.yaml"],
    "solve-task": ["solve", "{d}/f.yaml"],
    "compare-task": ["compare", "{d}/f.yaml"],
    "estimate-plan": ["estimate", "{P}/tasks/llama3-8b-8xh100.yaml", "--plan", "{d}/f.yaml"],
    "export-plan": ["export", "{d}/f.yaml", "--task", "{P}/tasks/llama3-8b-8xh100.yaml", "--to", "megatron"],
    "export-task": ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task", "{d}/f.yaml", "--to", "megatron"],
    "validate-runs": ["validate", "--runs", "{d}/f.yaml"],
    "calibrate-data": ["calibrate", "--data", "{d}/f.yaml"],
}


def broken_file_cases() -> list[Case]:
    cases = []
    for kind, (content, says) in BROKEN_FILES.items():
        for reader, argv in READERS.items():
            files = {} if content in (None, "<missing>", "<loop>") else {"f.yaml": content}
            if content is None:
                files = {"f.yaml/": ""}
            if content == "<loop>":
                files = {"f.yaml@": "f.yaml"}
            shape_says = says
            if kind in ("empty", "scalar") and reader in ("validate-runs",):
                shape_says = ("expected a list of runs",)
            if kind == "too-many-values" and reader in ("validate-runs", "calibrate-data"):
                # data files may hold 500,000 values (test_data_files_have_their_own_value_limit)
                shape_says = ("expected a list",) if reader == "validate-runs" else ("gemm_by_size: field required",)
            cases.append(Case(f"{kind}-{reader}", argv, files, 2, ("f.yaml", *shape_says)))
    return cases


# -- task fields: wrong shapes, types and impossible values -----------------------------------

def task_field_cases() -> list[Case]:
    c = []

    def t(id_, text, *says, code=2):
        c.append(Case(f"task-{id_}", ["estimate", "{d}/task.yaml"], {"task.yaml": text}, code, ("task.yaml", *says)))

    t("num-devices-true", task_with("num_devices: 8", "num_devices: true"), "num_devices", "integer")
    t("num-devices-float", task_with("num_devices: 8", "num_devices: 8.0"), "num_devices")
    t("num-devices-string", task_with("num_devices: 8", "num_devices: '8'"), "num_devices")
    t("num-devices-zero", task_with("num_devices: 8", "num_devices: 0"), "num_devices")
    t("num-devices-negative", task_with("num_devices: 8", "num_devices: -8"), "num_devices")
    t("num-devices-2**25", task_with("num_devices: 8", "num_devices: 33554432"), "num_devices", "16,777,216")
    t("num-devices-1e30", task_with("num_devices: 8", "num_devices: 1000000000000000000000000000000"),
      "num_devices", "out of range")
    t("duplicate-num-devices", TASK + "num_devices: 16\n", "duplicate key 'num_devices'")
    t("unknown-top-key", TASK + "modle: x\n", "modle: unknown field")
    t("family-list", task_with("model: llama3-8b", "model: {preset: llama3-8b, family: [1]}"),
      "model.family", "unknown model family")
    t("family-moe-without-experts", task_with("model: llama3-8b", "model: {preset: llama3-8b, family: moe}"),
      "model.moe: Field required")
    t("model-null", task_with("model: llama3-8b", "model: null"), "model:", "expected a preset name")
    t("model-list", task_with("model: llama3-8b", "model: [llama3-8b]"), "model:", "expected a preset name")
    t("model-long-name", task_with("model: llama3-8b", "model: " + "x" * 100_000), "model:", "more characters")
    t("model-unknown", task_with("model: llama3-8b", "model: llama9-8b"), "model:", "neither a file nor a preset")
    t("model-escape-in-reference", task_with("model: llama3-8b", 'model: "\\e[31mred"'), "model:", "\\x1b")
    t("model-layers-true", task_with("model: llama3-8b", "model: {preset: llama3-8b, num_layers: true}"),
      "model.num_layers", "valid integer")
    t("model-layers-huge", task_with("model: llama3-8b", "model: {preset: llama3-8b, num_layers: 100000000}"),
      "model.num_layers")
    t("model-heads-zero", task_with("model: llama3-8b", "model: {preset: llama3-8b, num_heads: 0}"), "model.num_heads")
    t("model-gated-string", task_with("model: llama3-8b", "model: {preset: llama3-8b, gated_mlp: 'yes'}"),
      "model.gated_mlp", "valid boolean")
    t("model-params-inf", task_with("model: llama3-8b", "model: {preset: llama3-8b, published_params: .inf}"),
      "model.published_params", "not a finite number")
    t("model-params-nan", task_with("model: llama3-8b", "model: {preset: llama3-8b, published_params: .nan}"),
      "model.published_params", "not a finite number")
    t("model-kv-5", task_with("model: llama3-8b", "model: {preset: llama3-8b, num_kv_heads: 5}"), "num_kv_heads")
    t("model-name-number", task_with("model: llama3-8b", "model: {preset: llama3-8b, name: 42}"),
      "model.name", "valid string")
    t("training-list", TASK.split("training:")[0] + "training: [1, 2]\n", "training:", "mapping")
    t("training-missing", TASK.split("training:")[0], "training: field required")
    t("seq-len-zero", task_with("seq_len: 8192", "seq_len: 0"), "training.seq_len")
    t("seq-len-true", task_with("seq_len: 8192", "seq_len: true"), "training.seq_len", "valid integer")
    t("seq-len-float", task_with("seq_len: 8192", "seq_len: 8192.5"), "training.seq_len")
    t("seq-len-over-model", task_with("seq_len: 8192", "seq_len: 16384"), "max_seq_len")
    t("batch-zero", task_with("global_batch_size: 128", "global_batch_size: 0"), "training.global_batch_size")
    t("batch-huge-tokens", task_with("global_batch_size: 128", "global_batch_size: 1000000000"), "tokens per step")
    t("batch-twice", task_with("global_batch_size: 128", "global_batch_size: 128\n  global_batch_tokens: 1048576"),
      "exactly one of")
    t("precision-fp4", task_with("precision: bf16", "precision: fp4"), "training.precision")
    t("precision-fp8-a100", task_with("cluster: dgx-h100", "cluster: dgx-a100-80gb").replace("bf16", "fp8"),
      "training.precision", "fp8 needs a fp8 peak", "A100")
    t("headroom-one", TASK + "  memory_headroom: 1.0\n", "training.memory_headroom")
    t("headroom-nan", TASK + "  memory_headroom: .nan\n", "training.memory_headroom", "not a finite number")
    t("headroom-bool", TASK + "  memory_headroom: true\n", "training.memory_headroom")
    t("optimizer-states-huge", TASK + "  optimizer: {num_states: 1000}\n", "training.optimizer.num_states")
    t("framework-overlap-int", TASK + "  framework: {overlap_grad_reduce: 1}\n",
      "training.framework.overlap_grad_reduce", "valid boolean")
    t("bucket-1e400", TASK + "  framework: {grad_bucket_bytes: 1e400GB}\n",
      "training.framework.grad_bucket_bytes", "not a finite")
    t("bucket-negative", TASK + "  framework: {grad_bucket_bytes: -1GB}\n", "training.framework.grad_bucket_bytes")
    t("bucket-unit", TASK + "  framework: {grad_bucket_bytes: 4 parsecs}\n", "training.framework.grad_bucket_bytes")
    t("bucket-long-string", TASK + "  framework: {grad_bucket_bytes: '" + "9" * 5000 + "GB'}\n",
      "training.framework.grad_bucket_bytes")
    t("fragmentation-2", TASK + "  framework: {allocator_fragmentation: 2}\n", "allocator_fragmentation")
    t("constraint-tp-zero", TASK + "  constraints: {tp: {max: 0}}\n", "training.constraints.tp.max")
    t("constraint-tp-true", TASK + "  constraints: {tp: {fixed: true}}\n", "training.constraints.tp.fixed")
    t("constraint-zero-true", TASK + "  constraints: {zero_stages: [true]}\n", "training.constraints.zero_stages")
    t("constraint-zero-5", TASK + "  constraints: {zero_stages: [5]}\n", "training.constraints.zero_stages")
    t("constraint-schedule", TASK + "  constraints: {schedules: [zb-v]}\n", "training.constraints.schedules")
    t("constraint-schedules-empty", TASK + "  constraints: {schedules: []}\n", "training.constraints.schedules")
    t("constraint-zero-empty", TASK + "  constraints: {zero_stages: []}\n", "training.constraints.zero_stages")
    t("constraint-recompute-empty", TASK + "  constraints: {recompute: []}\n", "training.constraints.recompute")
    t("constraint-min-over-max", TASK + "  constraints: {tp: {min: 4, max: 2}}\n", "training.constraints.tp",
      "no degree is allowed")
    t("constraint-fixed-outside", TASK + "  constraints: {pp: {fixed: 8, max: 4}}\n", "training.constraints.pp",
      "outside")
    t("model-name-newline", task_with("model: llama3-8b", 'model: {preset: llama3-8b, name: "a\\nb"}'),
      "model.name", "one line")
    t("model-name-empty", task_with("model: llama3-8b", 'model: {preset: llama3-8b, name: ""}'), "model.name")
    return c


def cluster_cases() -> list[Case]:
    c = []

    def dev(id_, override, *says):
        text = task_with("cluster: dgx-h100", f"cluster: {{preset: dgx-h100, device: {{preset: h100-sxm5-80gb, {override}}}}}")
        c.append(Case(f"device-{id_}", ["estimate", "{d}/task.yaml"], {"task.yaml": text}, 2, ("task.yaml", *says)))

    dev("hbm-inf", "hbm_bytes: .inf", "cluster.device.hbm_bytes", "not a finite number")
    dev("hbm-1e400", "hbm_bytes: '1e400GB'", "cluster.device.hbm_bytes", "not a finite")
    dev("hbm-zero", "hbm_bytes: 0GB", "cluster.device.hbm_bytes")
    dev("hbm-bool", "hbm_bytes: true", "cluster.device.hbm_bytes", "boolean")
    dev("hbm-list", "hbm_bytes: [80GB]", "cluster.device.hbm_bytes")
    dev("hbm-exabytes", "hbm_bytes: 100EB", "cluster.device.hbm_bytes")
    dev("bandwidth-tiny", "hbm_bandwidth_bytes_per_s: 1e-300", "cluster.device.hbm_bandwidth_bytes_per_s")
    dev("peak-inf", "peak_flops: {bf16: .inf}", "cluster.device.peak_flops.bf16", "not a finite number")
    dev("peak-string", "peak_flops: {bf16: fast}", "cluster.device.peak_flops.bf16", "cannot read")
    dev("efficiency-zero", "efficiency: {gemm_fraction: 0, gemm_overhead_s: 0, attention_fraction: 0.5, "
        "hbm_fraction: 0.8, source: x}", "cluster.device.efficiency.gemm_fraction")
    dev("efficiency-over-one", "efficiency: {gemm_fraction: 1.5, gemm_overhead_s: 0, attention_fraction: 0.5, "
        "hbm_fraction: 0.8, source: x}", "cluster.device.efficiency.gemm_fraction")
    dev("unknown-field", "hbm_gb: 80", "cluster.device.hbm_gb", "unknown field")
    dev("no-bf16-peak", "peak_flops: {fp16: 989TFLOPS}", "cluster.device.peak_flops.bf16", "no bf16 peak")
    dev("name-escape", 'name: "H100\\e[2J"', "cluster.device.name", "one line")
    dev("source-newline", 'source: "a\\n[training]"', "cluster.device.source", "one line")

    def tiers(id_, text, *says):
        t = task_with("cluster: dgx-h100", f"cluster: {{preset: dgx-h100, tiers: {text}}}")
        c.append(Case(f"tiers-{id_}", ["estimate", "{d}/task.yaml"], {"task.yaml": t}, 2, ("task.yaml", *says)))

    ok = "bandwidth_bytes_per_s: 450GB/s, latency_s: 5us, efficiency: 0.8"
    tiers("empty", "[]", "cluster.tiers")
    tiers("latency-inf", "[{name: nvlink, size: 8, bandwidth_bytes_per_s: 450GB/s, latency_s: .inf, efficiency: 0.8}]",
          "cluster.tiers[0].latency_s", "not a finite number")
    tiers("latency-negative", "[{name: nvlink, size: 8, bandwidth_bytes_per_s: 450GB/s, latency_s: -1us, "
          "efficiency: 0.8}]", "cluster.tiers.0.latency_s")
    tiers("bandwidth-zero", "[{name: nvlink, size: 8, bandwidth_bytes_per_s: 0GB/s, latency_s: 5us, efficiency: 0.8}]",
          "cluster.tiers.0.bandwidth_bytes_per_s")
    tiers("efficiency-nan", "[{name: nvlink, size: 8, bandwidth_bytes_per_s: 450GB/s, latency_s: 5us, "
          "efficiency: .nan}]", "cluster.tiers[0].efficiency", "not a finite number")
    tiers("size-true", f"[{{name: nvlink, size: true, {ok}}}]", "cluster.tiers.0.size")
    tiers("size-not-multiple", f"[{{name: a, size: 8, {ok}}}, {{name: b, size: 12, {ok}}}]", "multiple of")
    tiers("too-small", f"[{{name: a, size: 4, {ok}}}]", "outermost tier")
    tiers("not-a-list", "nvlink", "cluster.tiers")
    return c


# -- command-line flags ------------------------------------------------------------------------

def flag_cases() -> list[Case]:
    task = "{P}/tasks/llama3-8b-8xh100.yaml"
    c = []

    def f(id_, argv, *says, code=2):
        c.append(Case(f"flag-{id_}", argv, {}, code, says))

    for flag in ("--tp", "--cp", "--pp", "--dp", "--vpp", "--mbs"):
        f(f"estimate{flag}-0", ["estimate", task, flag, "0"], f"argument {flag}")
        f(f"estimate{flag}-word", ["estimate", task, flag, "two"], f"argument {flag}", "expected an integer")
    f("estimate-tp-huge", ["estimate", task, "--tp", "9" * 40], "argument --tp")
    f("estimate-zero-5", ["estimate", task, "--zero", "5"], "argument --zero")
    f("estimate-plan-empty", ["estimate", task, "--plan", ""], "plan file (--plan): empty path")
    f("estimate-task-empty", ["estimate", ""], "task: empty path")
    f("estimate-task-blank", ["estimate", "  "], "task: empty path")
    f("validate-runs-empty", ["validate", "--runs", ""], "--runs: empty path")
    f("export-plan-empty", ["export", "", "--task", task, "--to", "megatron"], "plan file (--plan): empty path")
    f("compare-plan-empty", ["compare", task, "--plan", "{P}/plans/llama3-70b-nemo.yaml", "--plan", ""],
      "plan file (--plan): empty path")
    f("solve-output-empty", ["solve", task, "-o", ""], "--output: empty path")
    rm = "argument --recompute-modules"
    f("estimate-recompute-modules-unknown", ["estimate", task, "--recompute-modules", "moe"], rm, "comma-separated")
    f("estimate-recompute-modules-empty", ["estimate", task, "--recompute-modules", ""], rm)
    f("estimate-recompute-modules-comma", ["estimate", task, "--recompute-modules", "layernorm,"], rm)
    f("estimate-recompute-modules-twice", ["estimate", task, "--recompute-modules", "layernorm,layernorm"], rm, "twice")
    f("estimate-recompute-modules-huge", ["estimate", task, "--recompute-modules", "x" * 100_000], rm)
    f("estimate-recompute-modules-without-selective", ["estimate", task, "--recompute-modules", "layernorm"],
      "recompute_modules needs recompute: selective")
    f("estimate-recompute-modules-moe-act-dense", ["estimate", task, "--recompute", "selective",
                                                   "--recompute-modules", "moe_act"], "moe_act needs an MoE model")
    f("estimate-recompute-modules-mla-dense", ["estimate", task, "--recompute", "selective",
                                               "--recompute-modules", "mla_up_proj"], "mla_up_proj needs multi-latent")
    f("estimate-recompute-modules-dlrm", ["estimate", "{P}/tasks/mlperf-dlrm-dcnv2-8xh100.yaml",
                                          "--recompute-modules", "layernorm"], "--recompute-modules", "DLRM")
    f("estimate-zero-5000-digits", ["estimate", task, "--zero", "9" * 5000], "argument --zero")
    f("estimate-tp-underscore", ["estimate", task, "--tp", "1_0"], "argument --tp", "expected an integer")
    f("estimate-tp-arabic-digit", ["estimate", task, "--tp", "\u0668"], "argument --tp", "expected an integer")
    f("estimate-tp-fullwidth", ["estimate", task, "--tp", "\uff18"], "argument --tp", "expected an integer")
    f("estimate-sp-without-tp", ["estimate", task, "--sp"], "--sp", "sp: true needs tp > 1")
    f("estimate-overlap-without-sp", ["estimate", task, "--tp", "8", "--tp-comm-overlap"], "--tp-comm-overlap",
      "needs sp: true")
    f("estimate-plan-with-schedule-flag", ["estimate", "{P}/tasks/llama3-70b-64xh100.yaml", "--plan", "llama3-70b-nemo",
                                           "--schedule", "1f1b"], "llama3-70b-nemo with --schedule", "virtual_stages")
    f("estimate-tp-3", ["estimate", task, "--tp", "3"], "the plan flags", "tp (3)")
    f("estimate-dp-3", ["estimate", task, "--dp", "3"], "the plan flags", "dp*micro_batch_size")
    for command in ("solve", "compare"):
        for flag, value in (("--time-limit", "0"), ("--time-limit", "-1"), ("--time-limit", "nan"),
                            ("--time-limit", "inf"), ("--time-limit", "1e9"), ("--time-limit", "soon"),
                            ("--workers", "-1"), ("--workers", "0"), ("--workers", "1000"), ("--seed", "-1"),
                            ("--seed", "2147483648"), ("--max-configs", "0"), ("--max-mbs", "0"),
                            ("--max-vpp", "0"), ("--axis-orders", "random")):
            f(f"{command}{flag}-{value}", [command, task, flag, value], f"argument {flag}")
        f(f"{command}-time-limit-underscore", [command, task, "--time-limit", "1_0"], "argument --time-limit")
    f("solve-unknown-solver", ["solve", task, "--solver", "magic"], "--solver", "unknown solver")
    f("compare-unknown-solver", ["compare", task, "--solvers", "cpsat,magic"], "--solvers", "unknown solver")
    f("compare-no-solver", ["compare", task, "--solvers", ","], "--solvers", "no solver")
    f("compare-solver-twice", ["compare", task, "--solvers", "greedy,greedy"], "--solvers", "twice")
    f("solve-check-with-alone", ["solve", task, "--check-with", "/tmp"], "--check-with", "--export")
    f("solve-check-with-deepspeed", ["solve", task, "--export", "deepspeed", "--check-with", "/tmp"],
      "--check-with", "--to megatron")
    f("export-to-unknown", ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task", "{P}/tasks/llama3-70b-64xh100.yaml",
                            "--to", "jax"], "argument --to")
    f("export-version-unknown", ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task",
                                 "{P}/tasks/llama3-70b-64xh100.yaml", "--to", "torchtitan", "--target-version", "9.9"],
      "--target-version", "9.9")
    f("export-version-empty", ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task",
                               "{P}/tasks/llama3-70b-64xh100.yaml", "--to", "megatron", "--target-version", ""],
      "--target-version")
    f("export-version-banana", ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task",
                                "{P}/tasks/llama3-70b-64xh100.yaml", "--to", "deepspeed", "--target-version", "banana"],
      "--target-version", "banana")
    f("export-version-newline", ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task",
                                 "{P}/tasks/llama3-70b-64xh100.yaml", "--to", "megatron-bridge", "--target-version",
                                 "0.2\nmodel.fp8=none \\"], "--target-version")
    f("export-check-with-missing", ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task",
                                    "{P}/tasks/llama3-70b-64xh100.yaml", "--to", "megatron", "--check-with",
                                    "/nonexistent"], "--check-with", "megatron/training/arguments.py")
    f("solve-check-with-missing", ["solve", task, "--export", "megatron", "--check-with", "/nonexistent"],
      "--check-with", "megatron/training/arguments.py")
    f("no-command", [], "required")
    f("unknown-command", ["optimise"], "invalid choice")
    return c


# -- plan files --------------------------------------------------------------------------------

def plan_cases() -> list[Case]:
    c = []

    def p(id_, text, *says, name="plan.yaml"):
        c.append(Case(f"plan-{id_}", ["estimate", "{P}/tasks/llama3-8b-8xh100.yaml", "--plan", "{d}/" + name],
                      {name: text}, 2, (name, *says)))

    p("tp-true", "tp: true\n", "tp", "valid integer")
    p("tp-zero", "tp: 0\n", "tp", "greater than 0")
    p("tp-float", "tp: 8.0\n", "tp", "valid integer")
    p("zero-true", "zero_stage: true\ndp: 8\n", "zero_stage", "boolean")
    p("zero-4", "zero_stage: 4\ndp: 8\n", "zero_stage")
    p("recompute-partial", "recompute: partial\ndp: 8\n", "recompute")
    p("stage-layers-zero", "pp: 2\ndp: 4\nstage_layers: [0, 32]\n", "stage_layers")
    p("stage-layers-text", "pp: 2\ndp: 4\nstage_layers: abc\n", "stage_layers")
    p("stage-layers-sum", "pp: 2\ndp: 4\nstage_layers: [10, 10]\n", "stage_layers sum")
    p("axis-order", "dp: 8\naxis_order: [tp, tp, dp, pp]\n", "axis_order", "permutation")
    p("recompute-layers", "dp: 8\nrecompute: full\nrecompute_num_layers: [99]\n", "recompute_num_layers")
    p("recompute-modules-full", "dp: 8\nrecompute: full\nrecompute_modules: [layernorm]\n", "recompute_modules",
      "needs recompute: selective")
    p("recompute-modules-unknown", "dp: 8\nrecompute: selective\nrecompute_modules: [moe]\n", "recompute_modules")
    p("recompute-modules-empty", "dp: 8\nrecompute: selective\nrecompute_modules: []\n", "recompute_modules")
    p("recompute-modules-text", "dp: 8\nrecompute: selective\nrecompute_modules: layernorm\n", "recompute_modules")
    p("recompute-modules-twice", "dp: 8\nrecompute: selective\nrecompute_modules: [mlp, mlp]\n", "twice")
    p("recompute-modules-number", "dp: 8\nrecompute: selective\nrecompute_modules: [1]\n", "recompute_modules")
    p("hsdp-not-dividing", "dp: 8\nzero_stage: 3\nzero_shard_size: 3\n", "zero_shard_size")
    p("vpp-1f1b", "pp: 2\ndp: 4\nvirtual_stages: 2\n", "virtual_stages")
    p("sp-without-tp", "dp: 8\nsp: true\n", "sp")
    p("provenance-nan", "dp: 8\nprovenance: {objective_s: .nan}\n", "provenance.objective_s", "not a finite number")
    p("provenance-hash-other", "dp: 8\nprovenance: {problem_hash: 0123456789abcdef}\n", "made for problem")
    p("format-future", "format_version: 99\ntp: 8\n", "format_version", "newer")
    p("provenance-negative", "tp: 8\nsp: true\ndp: 1\nprovenance: {objective_s: -5}\n", "provenance.objective_s")
    p("provenance-gap-3", "tp: 8\nsp: true\ndp: 1\nprovenance: {gap: 3}\n", "provenance.gap")
    p("provenance-hash-newline", 'tp: 8\nsp: true\ndp: 1\nprovenance: {problem_hash: "ab\\nstep time 0.001 s"}\n',
      "provenance.problem_hash")
    p("overlap-without-sp", "tp: 8\ntp_comm_overlap: true\ndp: 1\n", "tp_comm_overlap", "needs sp: true")
    p("json-huge-integer", '{"tp": ' + "1" * 5000 + "}", "cannot be read", name="plan.json")
    p("format-bool", "format_version: true\ntp: 8\n", "format_version")
    p("unknown-field", "tp: 8\nteepee: 2\n", "teepee", "unknown field")
    p("list", "- tp: 8\n", "expected a mapping")
    p("json-nan", '{"tp": NaN}', "not a finite number", name="plan.json")
    p("json-infinity", '{"tp": 8, "provenance": {"gap": Infinity}}', "not a finite number", name="plan.json")
    p("json-duplicate", '{"tp": 1, "tp": 8}', "duplicate key 'tp'", name="plan.json")
    p("json-broken", '{"tp": ', "not valid JSON", name="plan.json")
    p("json-deep", "[" * 100_000 + "]" * 100_000, "nested", name="plan.json")
    p("json-array", "[8]", "expected a mapping", name="plan.json")
    c.append(Case("compare-plan-other-problem",
                  ["compare", "{P}/tasks/llama3-8b-8xh100.yaml", "--solvers", "megatron-rules", "--plan", "{d}/p.yaml"],
                  {"p.yaml": "dp: 8\nprovenance: {problem_hash: 0123456789abcdef}\n"}, 2, ("p.yaml", "made for problem")))
    c.append(Case("compare-plan-invalid",
                  ["compare", "{P}/tasks/llama3-8b-8xh100.yaml", "--solvers", "megatron-rules", "--plan", "{d}/p.yaml"],
                  {"p.yaml": "tp: 3\ndp: 8\n"}, 2, ("p.yaml", "tp (3)")))
    c.append(Case("export-plan-other-task",
                  ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task", "{P}/tasks/llama3-8b-8xh100.yaml", "--to",
                   "megatron"], {}, 2, ("llama3-70b-nemo.yaml", "invalid for")))
    return c


MOE_TASK = ("model: qwen3-30b-a3b\ncluster: dgx-h100\nnum_devices: 16\n"
            "training: {global_batch_size: 64, seq_len: 4096, precision: fp8}\n")


def moe_cases() -> list[Case]:
    """The expert-parallel fields of plans and tasks, on an MoE task (128 experts, 16 GPUs)."""
    c = []

    def p(id_, text, *says, task=MOE_TASK):
        c.append(Case(f"moe-plan-{id_}", ["estimate", "{d}/task.yaml", "--plan", "{d}/plan.yaml"],
                      {"task.yaml": task, "plan.yaml": text}, 2, ("plan.yaml", *says)))

    def t(id_, training, *says):
        task = MOE_TASK.replace("precision: fp8}", "precision: fp8, " + training + "}")
        c.append(Case(f"moe-task-{id_}", ["estimate", "{d}/task.yaml"], {"task.yaml": task}, 2, ("task.yaml", *says)))

    p("ep-zero", "dp: 16\nep: 0\n", "ep", "greater than 0")
    p("ep-true", "dp: 16\nep: true\n", "ep", "valid integer")
    p("ep-string", "dp: 16\nep: '8'\n", "ep")
    p("etp-float", "dp: 16\netp: 1.0\n", "etp")
    p("ep-not-dividing-experts", "dp: 16\nep: 3\n", "num_experts (128) is not divisible by ep (3)")
    p("ep-beyond-stage", "dp: 16\nep: 32\n", "does not divide the ranks of a pipeline stage")
    p("dispatcher-unknown", "dp: 16\nep: 8\ndispatcher: deepep\n", "dispatcher")
    p("overlap-without-ep", "dp: 16\nep_comm_overlap: true\n", "ep_comm_overlap", "ep > 1")
    p("overlap-allgather", "dp: 16\nep: 8\ndispatcher: allgather\nep_comm_overlap: true\n", "ep_comm_overlap")
    p("overlap-1f1b", "pp: 2\ndp: 8\nep: 8\nep_comm_overlap: true\n", "schedule: interleaved")
    p("overlap-full-recompute", "dp: 16\nep: 8\nrecompute: full\nep_comm_overlap: true\n", "recompute: full")
    p("flex-etp", "tp: 2\nsp: true\ndp: 8\nep: 4\netp: 2\ndispatcher: flex\n", "flex", "etp: 1")
    p("tp-without-sp", "tp: 2\ndp: 8\nep: 8\n", "need sp: true")
    p("pp-not-outermost", "pp: 2\ndp: 8\nep: 8\naxis_order: [tp, pp, cp, dp]\n", "outermost")
    p("dense-with-ep", "dp: 8\nep: 2\n", "apply to MoE models", task="model: llama3-8b\ncluster: dgx-h100\n"
      "num_devices: 8\ntraining: {global_batch_size: 64, seq_len: 4096}\n")
    t("imbalance-below-one", "moe_load_imbalance: 0.5", "moe_load_imbalance", "greater than or equal to 1")
    t("imbalance-true", "moe_load_imbalance: true", "moe_load_imbalance")
    t("imbalance-nan", "moe_load_imbalance: .nan", "moe_load_imbalance", "not a finite number")
    t("ep-constraint-zero", "constraints: {ep: {max: 0}}", "constraints.ep.max")
    t("etp-constraint-range", "constraints: {etp: {min: 4, max: 2}}", "constraints.etp", "min (4) is larger than max (2)")
    return c


# -- outputs -----------------------------------------------------------------------------------

def output_cases() -> list[Case]:
    task = "{P}/tasks/llama3-8b-8xh100.yaml"
    export = ["export", "{P}/plans/llama3-70b-nemo.yaml", "--task", "{P}/tasks/llama3-70b-64xh100.yaml", "--to",
              "megatron"]
    return [
        Case("out-solve-directory", ["solve", task, "-o", "{d}/sub"], {"sub/": ""}, 2, ("-o", "is a directory")),
        Case("out-solve-no-directory", ["solve", task, "-o", "{d}/missing/plan.yaml"], {}, 2,
             ("-o", "does not exist")),
        Case("out-solve-is-the-task", ["solve", "{d}/task.yaml", "-o", "{d}/task.yaml"], {"task.yaml": TASK}, 2,
             ("-o", "is an input")),
        Case("out-solve-is-a-preset", ["solve", task, "-o", "{P}/models/llama3-8b.yaml"], {}, 2, ("-o", "is an input")),
        Case("out-export-directory", [*export, "-o", "{d}/sub"], {"sub/": ""}, 2, ("-o", "is a directory")),
        Case("out-export-no-directory", [*export, "-o", "{d}/missing/x.sh"], {}, 2, ("-o", "does not exist")),
        Case("out-export-is-the-plan", ["export", "{d}/p.yaml", "--task", "{P}/tasks/llama3-70b-64xh100.yaml", "--to",
                                        "megatron", "-o", "{d}/p.yaml"],
             {"p.yaml": (PROBLEMS / "plans" / "llama3-70b-nemo.yaml").read_text()}, 2, ("-o", "is an input")),
        Case("out-export-nul", [*export, "-o", "{d}/a\x00b"], {}, 2, ("-o",)),
        Case("out-solve-fifo", ["solve", task, "-o", "{d}/fifo"], {"fifo|": ""}, 2, ("-o", "not a regular file")),
        Case("out-export-symlink-to-fifo", [*export, "-o", "{d}/link"], {"fifo|": "", "link@": "fifo"}, 2,
             ("-o", "not a regular file")),
    ]


# -- measured runs and efficiency files --------------------------------------------------------

def fidelity_cases() -> list[Case]:
    c = []

    def runs(id_, text, code, *says):
        c.append(Case(f"runs-{id_}", ["validate", "--runs", "{d}/runs.yaml"], {"runs.yaml": text}, code, says))

    runs("mapping", "a: 1\n", 2, "runs.yaml", "expected a list")
    runs("rows-not-mappings", "- 1\n- null\n", 3, "[0]: bad row: expected a mapping", "[1]: bad row")
    runs("row-missing-model", "- {id: r1, workload: training}\n", 3, "r1: bad row: model: field required")
    runs("row-layers-text", RUN.replace("num_layers: 4", "num_layers: four"), 3, "tiny-run: bad row",
         "model.num_layers")
    runs("row-gpus-zero", RUN.replace("num_gpus: 8", "num_gpus: 0"), 3, "tiny-run: bad row", "hardware.num_gpus")
    runs("row-sp-text", RUN.replace("tp: 1,", "tp: 1, sp: maybe,"), 3, "tiny-run: bad row", "plan.sp")
    runs("row-step-negative", RUN.replace("step_time_s: 1.0", "step_time_s: -1.0"), 3, "measured.step_time_s")
    runs("row-step-inf", RUN.replace("step_time_s: 1.0", "step_time_s: .inf"), 2, "runs.yaml",
         "[0].measured.step_time_s", "not a finite number")
    runs("row-id-list", RUN.replace("id: tiny-run", "id: [1]"), 3, "[0]: bad row", "id")
    runs("row-no-measurement", RUN.replace("step_time_s: 1.0", "step_time_s: null"), 3, "tiny-run",
         "no step time")
    runs("row-dp-indivisible", RUN.replace("dp: 8", "dp: 3"), 3, "tiny-run")
    runs("row-fp8-on-a100", RUN.replace("H100-SXM5-80GB", "A100-SXM4-80GB").replace("precision: bf16",
                                                                                   "precision: fp8"),
         3, "tiny-run", "fp8")
    runs("one-good-one-bad", RUN + "- {id: broken, workload: training}\n", 0, "skipped 1 rows", "broken: bad row")
    runs("row-step-denormal", RUN.replace("step_time_s: 1.0", "step_time_s: 5.0e-324"), 3, "tiny-run",
         "measured.step_time_s")
    runs("row-peak-denormal", RUN.replace("num_gpus: 8,", "num_gpus: 8, peak_dense_tflops_per_gpu: 5.0e-324,"), 3,
         "hardware.peak_dense_tflops_per_gpu")
    runs("row-more-stages-than-layers", RUN.replace("tp: 1, pp: 1, dp: 8", "tp: 1, pp: 8, dp: 1"), 3,
         "plan.pp (8) is larger than model.num_layers (4)")
    runs("empty-list", "[]\n", 2, "runs.yaml", "no runs")
    runs("repeated-id", RUN + RUN, 2, "runs.yaml", "'tiny-run' is given to more than one run")
    runs("id-surrounding-space", RUN.replace("id: tiny-run", "id: ' tiny-run '"), 3, "bad row", "id")
    runs("row-modules-unknown", RUN.replace("tp: 1,", "tp: 1, recompute_modules: [not_a_module],"), 3,
         "bad row", "plan.recompute_modules")
    runs("row-modules-number", RUN.replace("tp: 1,", "tp: 1, recompute_modules: 7,"), 3, "bad row",
         "plan.recompute_modules")
    runs("row-moe-act-dense", RUN.replace("tp: 1,", "tp: 1, recompute: selective, recompute_modules: [moe_act],"),
         3, "tiny-run", "moe_act needs an MoE model")

    def eff(id_, text, *says):
        c.append(Case(f"efficiency-{id_}", ["calibrate", "--data", "{d}/eff.yaml"], {"eff.yaml": text}, 2,
                      ("eff.yaml", *says)))

    eff("empty-mapping", "{}\n", "gemm_by_size", "field required")
    eff("list", "[]\n", "expected a mapping")
    eff("no-reference-gpu", EFFICIENCY.replace("gpu: A100-PCIe-80GB, peak", "gpu: H100, peak"), "A100-PCIe-80GB")
    eff("no-rows", EFFICIENCY.replace(", rows: [[4096, 4096, 4096, nn, 0.7], [1024, 1024, 1024, nn, 0.5]]", ""),
        "two rows")
    eff("row-negative", EFFICIENCY.replace("[1024, 1024, 1024", "[1024, -1024, 1024"), "rows[1]")
    eff("row-fraction-zero", EFFICIENCY.replace("nn, 0.5", "nn, 0"), "rows[1]")
    eff("row-short", EFFICIENCY.replace("[1024, 1024, 1024, nn, 0.5]", "[1024]"), "gemm_by_size.0.rows.1")
    eff("bad-bucket", EFFICIENCY.replace("peak_tflops: 312,", "peak_tflops: 312, buckets_gflop: {abc: {median: 1}},"),
        "buckets_gflop", "abc")
    eff("fraction-inf", EFFICIENCY.replace("fraction: 0.8", "fraction: .inf"), "not a finite number")
    eff("no-bf16-reference", EFFICIENCY.replace("dtype: bf16", "dtype: fp8"), "gemm_best_shape", "bf16")
    eff("sweep-small", EFFICIENCY + "allreduce_sweeps: [{system: s, link_unidirectional_gb_s: 300, "
        "points: [[1024, 1.0]]}]\n", "allreduce_sweeps[0].points", "1 MiB")
    eff("median-nan", EFFICIENCY.replace("peak_tflops: 312,", "peak_tflops: 312, buckets_gflop: {10-100: {median: 'nan'}},"),
        "buckets_gflop", "median fraction")
    eff("too-many-rows", EFFICIENCY.replace("[1024, 1024, 1024, nn, 0.5]", ", ".join(["[1024, 1024, 1024, nn, 0.5]"] * 1001)),
        "gemm_by_size.0.rows", "at most 1000")
    eff("peak-denormal", EFFICIENCY.replace("peak_tflops: 312", "peak_tflops: 5.0e-324"), "gemm_by_size.0.peak_tflops")
    eff("sweep-point-shape", EFFICIENCY + "allreduce_sweeps: [{system: s, link_unidirectional_gb_s: 300, "
        "points: [[1024]]}]\n", "allreduce_sweeps.0.points.0")
    return c


CASES = broken_file_cases() + task_field_cases() + cluster_cases() + flag_cases() + plan_cases() + moe_cases() + output_cases() \
    + fidelity_cases()


def materialize(case: Case, directory) -> list[str]:
    for name, content in case.files.items():
        if name.endswith("/"):
            (directory / name.rstrip("/")).mkdir()
        elif name.endswith("|"):
            os.mkfifo(directory / name.rstrip("|"))
        elif name.endswith("@"):
            os.symlink(directory / content, directory / name.rstrip("@"))
        elif isinstance(content, bytes):
            (directory / name).write_bytes(content)
        else:
            (directory / name).write_text(content)
    return [a.replace("{d}", str(directory)).replace("{P}", str(PROBLEMS)) for a in case.argv]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_corpus_is_large():
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case, tmp_path, capsys):
    argv = materialize(case, tmp_path)
    code, out, err = run_cli(argv, capsys)
    text = err + out
    assert "Traceback" not in text and "internal error" not in text, text[-2000:]
    assert code == case.code, text[-2000:]
    assert len(err) < 5000, "an error message should not echo an enormous input"
    for needle in case.says:
        assert needle in text, (needle, text[-2000:])


def test_data_files_have_their_own_value_limit(tmp_path, monkeypatch, capsys):
    from planner.core import files

    monkeypatch.setattr(files._DataLoader, "max_nodes", 1000)
    runs = tmp_path / "runs.yaml"
    runs.write_text("- [" + "1," * 1000 + "1]\n")
    code, out, err = run_cli(["validate", "--runs", str(runs)], capsys)
    assert code == 2 and "runs.yaml: line 1: more than 1,000 values in one file" in err


def test_names_must_be_one_printable_line(tmp_path, capsys):
    """A newline or an escape sequence in a name could forge report lines or break out of a
    comment in an exported launch script: names are refused, naming the field."""
    for name in ("\\e[31mRED", "x\\n)\\necho INJECTED"):
        task = tmp_path / "task.yaml"
        task.write_text(task_with("model: llama3-8b", f'model: {{preset: llama3-8b, name: "{name}"}}'))
        code, out, err = run_cli(["estimate", str(task), "--tp", "8", "--sp"], capsys)
        assert code == 2
        assert "model.name: must be one line of printable text" in err
        assert "\x1b" not in out + err


def test_control_characters_in_messages_are_escaped(tmp_path, capsys):
    task = tmp_path / "task.yaml"
    task.write_text(task_with("model: llama3-8b", 'model: "\\e]0;pwned\\a\\e[2J"'))
    code, out, err = run_cli(["estimate", str(task)], capsys)
    assert code == 2
    assert "\x1b" not in err and "\x07" not in err
    from planner.cli.output import printable

    assert printable("a\x1b[31mb\u202ec\n") == "a\\x1b[31mb\\u202ec\n"


def test_a_closed_standard_output_is_not_a_traceback():
    import subprocess
    import sys

    command = [sys.executable, "-c", "import sys; from planner.cli import main; sys.exit(main())", "validate"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child has imported anything, let alone written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err
