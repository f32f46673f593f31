"""The hostile-input corpus of disaggregated serving (a prefill pool and a decode pool,
planner.serving.disagg): `planner solve TASK --disaggregated` on odd tasks and flags, `planner
estimate TASK --plan PLAN` on malformed and inconsistent disaggregated plans, `planner compare
TASK --disaggregated`, and `planner export PLAN --task TASK --to sglang|vllm|trtllm`.

Every case: the documented exit code (0 fine, 2 bad input, 3 infeasible or no plan, 4 cannot
export), no traceback or internal error, the file and the field named, and an error is one line
(an inconsistent plan: that line, then its inconsistencies one per line, each `  - `).

Findings of this pass that were fixed, pinned here (`never` holds the old text where it had one):
- a pool's own `provenance` (with another problem's hash) was dropped unread: now
  `prefill.provenance: unknown field`;
- a plan without `family` said "got 'None'": now `family: field required`;
- a decode pool's max_num_batched_tokens did not cap the sequences it runs (the task's
  concurrency or what fits ran past the token budget, as colocated replicas once did): now capped,
  with the note;
- a decode pool that holds not one sequence said "at most 0 sequences fit; try a smaller
  max_num_seqs": now that not one fits and what to try;
- an export refusal (exit 4: an expert layout the engine cannot express) did not say which
  pool: now `the decode pool: ep 16: ...`;
- a disaggregated export of a plan predicted not to fit was written with no warning (a colocated
  export carries one): now a WARNING naming the pool, stage and bytes over, in the header and on
  standard error;
- `solve --disaggregated --check-with DIR` (and --target-version) were ignored silently: refused,
  as for a colocated serving search;
- `compare --disaggregated` cut short by --time-limit showed an UNKNOWN row with no reason: now
  the time-limit note;
- an infeasible search whose pools are each feasible at some split said only that: now the
  smallest feasible pools, and what the other pool misses there and by how much;
- a decode rate of inf (every request ends at its first token) was printed "decode 1 x inf
  requests/s"; a search of one GPU said "0 prefill/decode splits ()".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from .test_hostile_inputs import run_cli
from .test_hostile_serving_export import materialize

TASK = """model: llama3-70b
cluster: dgx-h100
num_devices: 8
inference:
  requests: {input_tokens: 2048, output_tokens: 256}
  concurrency: 128
  weight_precision: fp8
  kv_cache_dtype: fp8
  engine: {name: vllm}
  targets: {ttft_s: 1s, tpot_s: 50ms}
"""
PREFILL = "prefill: {tp: 4, pp: 1, dp: 1, max_num_batched_tokens: 4096}\n"
DECODE = "decode: {tp: 4, pp: 1, dp: 1, max_num_seqs: 64}\n"
PLAN = "family: serving\n" + PREFILL + DECODE
MOE = """model: qwen3-235b-a22b
cluster: gb200-nvl72
num_devices: 8
inference:
  requests: {input_tokens: 2048, output_tokens: 512}
  concurrency: 256
  weight_precision: fp8
  kv_cache_dtype: fp8
  engine: {name: vllm}
  targets: {ttft_s: 2s, tpot_s: 50ms}
"""
MLA = """model: deepseek-v3
cluster: dgx-h100
num_devices: 16
inference:
  requests: {input_tokens: 2048, output_tokens: 512}
  concurrency: 1024
  weight_precision: fp8
  kv_cache_dtype: fp8
  engine: {name: sglang}
  targets: {ttft_s: 2s, tpot_s: 100ms}
"""

ESTIMATE = ["estimate", "{d}/task.yaml", "--plan", "{d}/plan.yaml"]
SOLVE = ["solve", "{d}/task.yaml", "--disaggregated"]
COMPARE = ["compare", "{d}/task.yaml", "--disaggregated"]
EXPORT = ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to"]


@dataclass
class Case:
    id: str
    argv: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int = 2
    says: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
    """Substrings that must not be in the output (a fixed finding)."""
    one_error: bool = True
    """Exit 2 and 4: one error line (and an inconsistent plan's `  - ` lines); False: a known
    defect outside the disaggregated-serving files, not checked."""


def task_with(old: str, new: str, text: str = TASK) -> str:
    assert old in text, old
    return text.replace(old, new)


def plan_with(old: str, new: str, text: str = PLAN) -> str:
    assert old in text, old
    return text.replace(old, new)


# -- planner estimate TASK --plan DISAGGREGATED_PLAN -------------------------------------------

def estimate_cases() -> list[Case]:
    c = []

    def e(id_, plan, *says, code=2, task=TASK, argv=ESTIMATE, name="plan.yaml", never=()):
        argv = [a.replace("plan.yaml", name) for a in argv]
        c.append(Case(f"estimate-{id_}", argv, {"task.yaml": task, name: plan}, code,
                      (name, *says) if code == 2 else says, never))

    e("fine", PLAN, "prefill TP4 PP1 DP1, chunk 4096 | decode TP4 PP1 DP1, max 64 seqs", code=0)
    e("fine-json", PLAN, '"disaggregated": true', code=0, argv=[*ESTIMATE, "--json"])
    # Pools of the wrong shape.
    for pool, line in (("prefill", PREFILL), ("decode", DECODE)):
        for id_, value in (("list", "[4, 1, 1]"), ("string", "tp4"), ("null", "null"), ("int", "8")):
            e(f"{pool}-{id_}", plan_with(line, f"{pool}: {value}\n"), f"{pool}: Input should be a valid dictionary")
    e("prefill-missing", "family: serving\n" + DECODE, "prefill: Field required")
    e("decode-missing", "family: serving\n" + PREFILL, "decode: Field required")
    e("prefill-empty", plan_with(PREFILL, "prefill: {}\n"), "1 + 4 = 5 GPUs, but the task has 8")
    # Degrees: negative, zero, huge, float, boolean, text.
    for pool, degree, value, says in (
            ("prefill", "tp", "-4", "Input should be greater than 0"),
            ("prefill", "tp", "0", "Input should be greater than 0"),
            ("prefill", "tp", "1" + "0" * 20, "out of range"),
            ("prefill", "tp", "4.5", "Input should be a valid integer"),
            ("prefill", "tp", "4.0", "Input should be a valid integer"),
            ("prefill", "tp", "true", "Input should be a valid integer"),
            ("prefill", "pp", "four", "Input should be a valid integer"),
            ("prefill", "pp", ".nan", "not a finite number"),
            ("decode", "dp", "0", "Input should be greater than 0"),
            ("decode", "dp", "33554432", "less than or equal to 16777216"),
            ("decode", "tp", "131072", "less than or equal to 65536"),
            ("decode", "pp", "-1", "Input should be greater than 0")):
        old = "tp: 4, pp: 1, dp: 1, max_num_b" if pool == "prefill" else "tp: 4, pp: 1, dp: 1, max_num_s"
        new = old.replace(f"{degree}: {'4' if degree == 'tp' else '1'}", f"{degree}: {value}")
        e(f"{pool}-{degree}-{value[:12]}", plan_with(old, new), f"{pool}.{degree}: ", says)
    e("decode-dp-2**24", plan_with("dp: 1, max_num_s", "dp: 16777216, max_num_s"),
      "4 + 67,108,864 = 67,108,868 GPUs, but the task has 8")
    e("prefill-pp-81", plan_with("tp: 4, pp: 1, dp: 1, max_num_b", "tp: 1, pp: 81, dp: 1, max_num_b"),
      "81 + 4 = 85 GPUs", "prefill: pp (81) is larger than the model's 80 layers")
    e("decode-tp-3", plan_with("tp: 4, pp: 1, dp: 1, max_num_s", "tp: 3, pp: 1, dp: 1, max_num_s"),
      "decode: tp (3) must divide the model's 64 query heads")
    e("decode-pp-above-seqs", plan_with("tp: 4, pp: 1, dp: 1, max_num_seqs: 64", "tp: 1, pp: 4, dp: 1, max_num_seqs: 2"),
      "decode: max_num_seqs (2) is smaller than pp (4)")
    # Unknown keys, family, provenance.
    e("pool-unknown-key", plan_with("max_num_seqs: 64", "max_num_seqs: 64, tensor: 2"), "decode.tensor: unknown field")
    e("top-unknown-key", PLAN + "colocated: false\n", "colocated: unknown field")
    e("top-level-tp", PLAN + "tp: 4\n", "tp: unknown field")
    e("pool-family-dlrm", plan_with("max_num_seqs: 64", "max_num_seqs: 64, family: dlrm"), "decode.family")
    e("family-missing", plan_with("family: serving\n", ""), "family: field required", never=("'None'",))
    e("family-null", plan_with("family: serving", "family: null"), "family: a disaggregated serving plan has family: "
      "serving, got 'None'")
    e("family-training", plan_with("family: serving", "family: training"), "family:", "got 'training'")
    e("family-list", plan_with("family: serving", "family: [serving]"), "family:")
    e("provenance-other-problem", PLAN + "provenance: {problem_hash: 0123456789abcdef}\n",
      "this plan was made for problem 0123456789abcdef", "remove provenance.problem_hash")
    e("provenance-unknown-key", PLAN + "provenance: {foo: 1}\n", "provenance.foo: unknown field")
    # Fixed: a pool's provenance (another problem's hash) was accepted and never read.
    for pool in ("prefill", "decode"):
        line = PREFILL if pool == "prefill" else DECODE
        e(f"{pool}-provenance-other-problem",
          plan_with(line, line.replace("}", ", provenance: {problem_hash: 0123456789abcdef}}")),
          f"{pool}.provenance: unknown field", "top level")
    e("format-version-99", "format_version: 99\n" + PLAN, "format_version: 99 is newer")
    # Expert and attention parallelism on a dense model's pools.
    e("decode-ep-dense", plan_with("max_num_seqs: 64", "max_num_seqs: 64, ep: 4"),
      "decode: ep (4) applies to mixture-of-experts models")
    e("prefill-dp-attention-dense", plan_with("max_num_batched_tokens: 4096",
                                              "max_num_batched_tokens: 4096, dp_attention: true"),
      "prefill: dp_attention applies to multi-head latent attention")
    e("moe-decode-ep-16", "family: serving\nprefill: {tp: 4, ep: 4}\ndecode: {tp: 4, ep: 16, max_num_seqs: 8}\n",
      "decode: ep (16) must divide tp x dp", task=MOE)
    e("moe-dp-attention-gqa", "family: serving\nprefill: {tp: 4}\ndecode: {tp: 4, dp_attention: true, "
      "max_num_seqs: 8}\n", "decode: dp_attention applies to multi-head latent attention", task=MOE)
    e("moe-fine", "family: serving\nprefill: {tp: 1, pp: 2, dp: 2, max_num_batched_tokens: 16384}\n"
      "decode: {tp: 1, dp: 4, ep: 4, max_num_seqs: 64}\n", "decode TP1 PP1 DP4 EP4", code=0, task=MOE)
    # GPUs: the pools sum to more or fewer than the task has.
    e("sum-more", plan_with("tp: 4, pp: 1, dp: 1, max_num_s", "tp: 8, pp: 1, dp: 1, max_num_s"),
      "4 + 8 = 12 GPUs, but the task has 8", "make the sum equal")
    e("sum-less", plan_with("tp: 4, pp: 1, dp: 1, max_num_s", "tp: 2, pp: 1, dp: 1, max_num_s"),
      "4 + 2 = 6 GPUs, but the task has 8")
    e("one-pool-takes-all", plan_with("tp: 4, pp: 1, dp: 1, max_num_b", "tp: 8, pp: 1, dp: 1, max_num_b"),
      "8 + 4 = 12 GPUs")
    # Limits in the wrong pool, or missing.
    e("prefill-max-num-seqs", plan_with("max_num_batched_tokens: 4096", "max_num_batched_tokens: 4096, max_num_seqs: 8"),
      "prefill.max_num_seqs: a prefill pool runs passes of max_num_batched_tokens")
    e("decode-no-seqs-no-concurrency", plan_with(", max_num_seqs: 64", ""),
      "decode.max_num_seqs: give the decode pool's sequences per replica (or the task's concurrency)",
      task=task_with("  concurrency: 128\n", ""))
    e("decode-no-seqs-concurrency", plan_with(", max_num_seqs: 64", ""), "128 sequences per decode replica", code=0)
    e("decode-seqs-0", plan_with("max_num_seqs: 64", "max_num_seqs: 0"), "decode.max_num_seqs")
    e("decode-seqs-2**24", plan_with("max_num_seqs: 64", "max_num_seqs: 16777216"),
      "decode: max_num_batched_tokens (8192) is smaller than max_num_seqs (16777216)")
    e("decode-budget-below-seqs", plan_with("max_num_seqs: 64", "max_num_seqs: 64, max_num_batched_tokens: 8"),
      "decode: max_num_batched_tokens (8) is smaller than max_num_seqs (64)")
    # Fixed: the token budget did not cap the concurrency's sequences per decode replica.
    e("decode-budget-caps-concurrency", plan_with(", max_num_seqs: 64", ", max_num_batched_tokens: 8"),
      "8 sequences per decode replica", "decode.max_num_batched_tokens caps it at 8", code=0,
      never=("128 sequences per decode replica",))
    e("decode-budget-caps-concurrency-json", plan_with(", max_num_seqs: 64", ", max_num_batched_tokens: 8"),
      '"batch_per_replica": 8', code=0, argv=[*ESTIMATE, "--json"])
    e("prefill-chunk-0", plan_with("max_num_batched_tokens: 4096", "max_num_batched_tokens: 0"),
      "prefill.max_num_batched_tokens")
    e("prefill-chunk-default", plan_with(", max_num_batched_tokens: 4096", ""), "chunk 8192", code=0)
    e("prefill-chunk-2**24", plan_with("max_num_batched_tokens: 4096", "max_num_batched_tokens: 16777216"),
      "prefill pool stage 0 needs", "over by", "try a smaller max_num_batched_tokens", code=3)
    # Fixed: "at most 0 sequences per decode replica fit; try a smaller max_num_seqs".
    e("moe-2-gpus-nothing-fits", "family: serving\nprefill: {tp: 1}\ndecode: {tp: 1, max_num_seqs: 8}\n",
      "decode pool stage 0 needs", "not even one sequence per pipeline stage fits", code=3,
      task=task_with("num_devices: 8", "num_devices: 2", MOE), never=("at most 0 sequences",))
    e("static-batching", PLAN, "disaggregated serving runs continuous batching",
      task=task_with("engine: {name: vllm}", "engine: {name: tensorrt-llm, batching: static}"))
    # Fixed: an inf decode rate printed as "decode 1 x inf requests/s".
    e("one-output-token", PLAN, "no request decodes past its first token", code=0,
      task=task_with("output_tokens: 256", "output_tokens: 1"), never=("x inf",))
    e("one-output-token-json", PLAN, '"decode_requests_per_s_per_replica": null', code=0,
      task=task_with("output_tokens: 256", "output_tokens: 1"), argv=[*ESTIMATE, "--json"])
    e("plan-flags", PLAN, "--tp: a disaggregated plan", "prefill and decode blocks", argv=[*ESTIMATE, "--tp", "2"])
    # Files: JSON, YAML of the wrong kind, empty, a directory, binary garbage.
    e("json", json.dumps({"family": "serving", "prefill": {"tp": 4, "max_num_batched_tokens": 4096},
                          "decode": {"tp": 4, "max_num_seqs": 64}}), "decode TP4 PP1 DP1", code=0, name="plan.json")
    e("json-prefill-list", '{"family": "serving", "prefill": [], "decode": {"tp": 4, "max_num_seqs": 64}}',
      "prefill: Input should be a valid dictionary", name="plan.json")
    e("json-nan", '{"family": "serving", "prefill": {"tp": NaN}, "decode": {"tp": 4}}', "not a finite number",
      name="plan.json")
    e("json-duplicate-pool", '{"family": "serving", "prefill": {"tp": 4}, "prefill": {"tp": 2}, '
      '"decode": {"tp": 4, "max_num_seqs": 8}}', "duplicate key 'prefill'", name="plan.json")
    e("json-truncated", '{"family": "serving", "prefill": {"tp": 4', "plan.json", name="plan.json")
    e("yaml-unclosed", "family: serving\nprefill: {tp: 4\n", "plan.yaml")
    e("empty", "", "got nothing (an empty file)")
    e("a-list", "- " + PREFILL, "expected a mapping of plan fields")
    e("binary-nul", b"\x00\xff\xfe\x89PNG", "binary data")
    e("binary-high-bytes", bytes(range(128, 256)), "plan.yaml")
    e("utf-16", PLAN.encode("utf-16"), "UTF-16 text")
    e("yaml-aliases", "family: serving\nprefill: &p {tp: 4}\ndecode: *p\n", "YAML aliases")
    e("pool-key-only", "prefill:\n", "family: field required")
    e("mla-dp-attention-decode", "family: serving\nprefill: {tp: 8, pp: 2}\ndecode: {tp: 8, dp: 2, ep: 16, "
      "dp_attention: true, max_num_seqs: 64}\n", "EP16 DPattn", code=0,
      task=task_with("num_devices: 16", "num_devices: 32", MLA))
    c.append(Case("estimate-plan-a-directory", ESTIMATE, {"task.yaml": TASK, "plan.yaml/": ""}, 2,
                  ("plan.yaml", "is a directory")))
    c.append(Case("estimate-plan-missing", ESTIMATE, {"task.yaml": TASK}, 2, ("plan.yaml", "cannot read file")))
    c.append(Case("estimate-dlrm-task", ["estimate", "mlperf-dlrm-dcnv2-8xh100", "--plan", "{d}/plan.yaml"],
                  {"plan.yaml": PLAN}, 2, ("plan.yaml: family:", "this file is family 'serving'")))
    return c


# -- planner solve TASK --disaggregated ---------------------------------------------------------

def solve_cases() -> list[Case]:
    c = []

    def s(id_, task, *says, code=0, flags=(), never=(), files=None):
        c.append(Case(f"solve-{id_}", [*SOLVE, *flags], files or {"task.yaml": task}, code, says, never))

    s("fine", TASK, "solver serving-disaggregated: OPTIMAL", "colocated (serving-exhaustive, OPTIMAL)")
    s("pareto-json-o", TASK, '"pareto": [', '"status": "OPTIMAL"', flags=("--pareto", "--json", "-o", "{d}/out.json"))
    s("pareto", TASK, "Pareto front", flags=("--pareto",))
    # Fixed: "0 prefill/decode splits ()".
    s("one-gpu", task_with("num_devices: 8", "num_devices: 1", task_with("llama3-70b", "llama3-8b")),
      "INFEASIBLE", "no split: 1 GPU(s) cannot hold a prefill pool and a decode pool", "0 prefill/decode splits (none)",
      code=3, never=("splits ()",))
    s("one-gpu-json", task_with("num_devices: 8", "num_devices: 1", task_with("llama3-70b", "llama3-8b")),
      '"status": "INFEASIBLE"', code=3, flags=("--json",))
    s("static", task_with("engine: {name: vllm}", "engine: {name: tensorrt-llm, batching: static}"),
      "infeasible: disaggregated serving runs continuous batching", code=3)
    s("static-json-pareto", task_with("engine: {name: vllm}", "engine: {name: tensorrt-llm, batching: static}"),
      '"infeasibility": "disaggregated serving runs continuous batching', code=3, flags=("--json", "--pareto"))
    s("concurrency-2**24", task_with("concurrency: 128", "concurrency: 16777216"), "OPTIMAL")
    s("no-concurrency-no-targets", task_with("  concurrency: 128\n", "", task_with(
        "  targets: {ttft_s: 1s, tpot_s: 50ms}\n", "")), "as many requests as fit", "OPTIMAL")
    s("tiny-ttft", task_with("ttft_s: 1s", "ttft_s: 1us"),
      "ttft: no prefill pool meets the 1.0 us TTFT target (the closest misses it by", code=3)
    s("tiny-tpot", task_with("tpot_s: 50ms", "tpot_s: 1us"),
      "tpot: no decode pool meets the 1.0 us TPOT target (the closest misses it by", code=3)
    s("huge-targets", task_with("ttft_s: 1s", "ttft_s: 1e6s", task_with("tpot_s: 50ms", "tpot_s: 1e6s")), "OPTIMAL")
    s("buckets", task_with("{input_tokens: 2048, output_tokens: 256}",
                           "{buckets: [{input_tokens: 100, output_tokens: 1, weight: 1}, "
                           "{input_tokens: 8000, output_tokens: 100, weight: 1}]}"), "slowest kind", "OPTIMAL")
    s("one-output-token", task_with("output_tokens: 256", "output_tokens: 1"), "no request decodes past its first token",
      never=("x inf",))
    # Fixed: "(each is feasible at some split: ...)" without what ran out, where, by how much.
    s("pools-never-both-feasible", task_with("engine: {name: vllm}", "engine: {name: vllm, gpu_memory_utilization: 0.2}"),
      "no split has both a feasible prefill pool and a feasible decode pool", "the prefill pool needs at least",
      "decode pool misses memory (over by", code=3)
    s("fp4-on-h100", task_with("weight_precision: fp8", "weight_precision: fp4"),
      "task.yaml: inference.weight_precision: fp4 needs a fp4 peak", code=2)
    s("moe-8-gpus", MOE, "OPTIMAL", "EP")
    s("moe-8-gpus-pareto-json", MOE, '"pareto"', flags=("--pareto", "--json"))
    # Fixed: the decode pool's memory miss had no amount ("not one sequence per pipeline stage").
    s("moe-2-gpus", task_with("num_devices: 8", "num_devices: 2", MOE),
      "memory: a decode replica does not fit on any split (the closest is over by", code=3)
    s("mla-2-nodes", MLA, "memory: a prefill replica does not fit on any split (the closest is over by",
      "memory: a decode replica does not fit on any split (the closest is over by", code=3)
    s("mla-4-nodes-json", task_with("num_devices: 16", "num_devices: 32", MLA), '"disaggregated": true',
      flags=("--json",))
    s("time-limit-tiny", TASK, "UNKNOWN", "no plan was found: give a longer --time-limit", code=3,
      flags=("--time-limit", "0.001"))
    s("time-limit-tiny-json-o", TASK, '"status": "UNKNOWN"', code=3, flags=("--time-limit", "0.001", "--json", "-o",
                                                                            "{d}/out.yaml"))
    for value, says in (("0", "must be a finite number of seconds"), ("-1", "must be a finite number"),
                        ("nan", "expected a number of seconds"), ("inf", "expected a number of seconds"),
                        ("1e9", "must be a finite number of seconds in (0, 604800]")):
        s(f"time-limit-{value}", TASK, f"--time-limit: {says}", code=2, flags=("--time-limit", value))
    s("o-a-directory", TASK, "-o/--output", "is a directory", code=2, flags=("-o", "{d}/out"),
      files={"task.yaml": TASK, "out/": ""})
    s("o-the-task", TASK, "-o/--output", "is an input of this command", code=2, flags=("-o", "{d}/task.yaml"))
    s("solver-greedy", TASK, "--solver 'greedy': --disaggregated runs the serving-disaggregated search", code=2,
      flags=("--solver", "greedy"))
    s("export-megatron", TASK, "--export megatron: solve --export writes training and DLRM", "planner export PLAN",
      code=2, flags=("--export", "megatron"))
    # Fixed: ignored silently.
    s("check-with", TASK, "--check-with and --target-version apply to solve --export", code=2,
      flags=("--check-with", "{d}"))
    s("target-version", TASK, "--check-with and --target-version apply to solve --export", code=2,
      flags=("--target-version", "0.5.23"))
    s("bad-task", task_with("concurrency: 128", "concurrency: -1"), "task.yaml: inference.concurrency", code=2)
    c.append(Case("solve-training-task", ["solve", "{P}/tasks/llama3-8b-8xh100.yaml", "--disaggregated"], {}, 2,
                  ("--disaggregated: prefill/decode disaggregation is for inference tasks",)))
    return c


# -- planner compare TASK --disaggregated -------------------------------------------------------

def compare_cases() -> list[Case]:
    c = []

    def k(id_, task, *says, code=0, flags=(), files=None):
        c.append(Case(f"compare-{id_}", [*COMPARE, *flags], files or {"task.yaml": task}, code, says))

    k("fine", TASK, "serving-disaggregated  OPTIMAL", "prefill TP")
    k("json", TASK, '"method": "serving-disaggregated"', flags=("--json",))
    k("static", task_with("engine: {name: vllm}", "engine: {name: tensorrt-llm, batching: static}"),
      "serving-disaggregated  INFEASIBLE", "serving-disaggregated: disaggregated serving runs continuous batching")
    k("one-gpu-json", task_with("num_devices: 8", "num_devices: 1", task_with("llama3-70b", "llama3-8b")),
      '"note": "no split: 1 GPU(s)', flags=("--json",))
    # Fixed: the UNKNOWN row had no reason.
    k("time-limit-tiny", TASK, "serving-disaggregated: the time limit was reached", flags=("--time-limit", "0.001"))
    c.append(Case("compare-training-task", ["compare", "{P}/tasks/llama3-8b-8xh100.yaml", "--disaggregated"], {}, 2,
                  ("for inference tasks",)))
    # compare --plan prices a disaggregated plan as a GIVEN row; an inconsistent one is refused.
    c.append(Case("compare-plan-disaggregated-mismatch", [*COMPARE, "--plan", "{d}/plan.yaml"],
                  {"task.yaml": TASK.replace("num_devices: 8", "num_devices: 16"), "plan.yaml": PLAN}, 2,
                  ("plan.yaml: this plan is invalid",), one_error=False))
    return c


# -- planner export DISAGGREGATED_PLAN --task TASK --to ... -------------------------------------

def export_cases() -> list[Case]:
    c = []
    both = {"task.yaml": TASK, "plan.yaml": PLAN}

    def x(id_, to, *says, code=0, flags=(), files=None, never=()):
        c.append(Case(f"export-{id_}", [*EXPORT, to, *flags], files or both, code, says, never))

    x("sglang", "sglang", "--disaggregation-mode", "prefill)", "decode)")
    x("vllm-o", "vllm", "written to", flags=("-o", "{d}/serve.sh"))
    x("trtllm", "trtllm", "--to trtllm: a disaggregated plan exports to sglang or vllm", code=4)
    x("config-sglang", "sglang", "--format config: a disaggregated plan is two servers", code=4,
      flags=("--format", "config"))
    x("config-vllm", "vllm", "--format config", code=4, flags=("--format", "config"))
    x("o-the-plan", "sglang", "-o/--output", "plan.yaml: is an input of this command", code=2,
      flags=("-o", "{d}/plan.yaml"))
    x("o-the-task", "vllm", "task.yaml: is an input of this command", code=2, flags=("-o", "{d}/task.yaml"))
    x("o-a-directory", "vllm", "-o/--output", code=2, flags=("-o", "{d}/out"), files={**both, "out/": ""})
    x("megatron", "megatron", "task.yaml: inference: --to megatron exports training plans", code=2)
    x("pool-unknown-key", "sglang", "plan.yaml: decode.tpp: unknown field", code=2,
      files={"task.yaml": TASK, "plan.yaml": plan_with("max_num_seqs: 64", "max_num_seqs: 64, tpp: 1")})
    x("pool-provenance", "vllm", "plan.yaml: prefill.provenance: unknown field", code=2,
      files={"task.yaml": TASK, "plan.yaml": plan_with(PREFILL, PREFILL.replace("}", ", provenance: {}}"))})
    x("other-problem", "sglang", "plan.yaml: this plan was made for problem 0123456789abcdef", code=2,
      files={"task.yaml": TASK, "plan.yaml": PLAN + "provenance: {problem_hash: 0123456789abcdef}\n"})
    x("sum-less", "vllm", "plan.yaml: this plan is invalid", "4 + 2 = 6 GPUs, but the task has 8", code=2,
      files={"task.yaml": TASK, "plan.yaml": plan_with("tp: 4, pp: 1, dp: 1, max_num_s", "tp: 2, pp: 1, dp: 1, "
                                                                                          "max_num_s")})
    x("static", "vllm", "disaggregated serving runs continuous batching", code=2,
      files={"task.yaml": task_with("engine: {name: vllm}", "engine: {name: tensorrt-llm, batching: static}"),
             "plan.yaml": PLAN})
    x("no-seqs-no-concurrency", "vllm", "decode.max_num_seqs: give the decode pool's sequences", code=2,
      files={"task.yaml": task_with("  concurrency: 128\n", ""), "plan.yaml": plan_with(", max_num_seqs: 64", "")})
    x("time-limit", "sglang", "--time-limit: applies when an inference task is exported without a plan", code=2,
      flags=("--time-limit", "5"))
    x("model-with-space", "sglang", "--model: expected a Hugging Face id", code=2, flags=("--model", "a b"))
    x("target-version-unknown", "sglang", "--target-version", code=2, flags=("--target-version", "0.4.0"))
    x("empty-plan", "sglang", "plan.yaml: expected a mapping of plan fields", code=2,
      files={"task.yaml": TASK, "plan.yaml": ""})
    x("binary-plan", "vllm", "plan.yaml: binary data", code=2, files={"task.yaml": TASK, "plan.yaml": b"\x00\x01"})
    # Fixed: written with no word that it does not fit (a colocated export warns).
    x("does-not-fit", "vllm", "WARNING: predicted not to fit: the prefill pool's stage 0 needs", "over by",
      files={"task.yaml": TASK, "plan.yaml": plan_with("max_num_batched_tokens: 4096",
                                                       "max_num_batched_tokens: 16777216")})
    x("moe-ep-4-sglang", "sglang", "--disaggregation-mode",
      files={"task.yaml": MOE, "plan.yaml": "family: serving\nprefill: {tp: 4}\ndecode: {tp: 4, ep: 4, "
                                            "max_num_seqs: 64}\n"})
    # Fixed: the refusal did not say which pool.
    x("moe-ep-across-replicas-sglang", "sglang", "the decode pool: ep 4:", "one server's TP group", code=4,
      files={"task.yaml": MOE, "plan.yaml": "family: serving\nprefill: {tp: 4}\ndecode: {tp: 1, dp: 4, ep: 4, "
                                            "max_num_seqs: 64}\n"})
    x("moe-ep-across-replicas-vllm", "vllm", "--kv-transfer-config",
      files={"task.yaml": MOE, "plan.yaml": "family: serving\nprefill: {tp: 4}\ndecode: {tp: 1, dp: 4, ep: 4, "
                                            "max_num_seqs: 64}\n"})
    mla = task_with("num_devices: 16", "num_devices: 32", MLA)
    dpa = ("family: serving\nprefill: {tp: 8, pp: 2}\ndecode: {tp: 8, dp: 2, ep: 16, dp_attention: true, "
           "max_num_seqs: 64}\n")
    x("mla-dp-attention-vllm", "vllm", "the decode pool: dp_attention", code=4, files={"task.yaml": mla, "plan.yaml": dpa})
    x("mla-ep-16-sglang", "sglang", "the decode pool: ep 16:", code=4, files={"task.yaml": mla, "plan.yaml": dpa})
    c.append(Case("export-plan-alone", ["export", "{d}/plan.yaml", "--to", "sglang"], both, 2,
                  ("plan.yaml: --task is required",)))
    c.append(Case("export-training-task", ["export", "{d}/plan.yaml", "--task", "{P}/tasks/llama3-8b-8xh100.yaml",
                                           "--to", "vllm"], both, 2,
                  ("llama3-8b-8xh100.yaml: training: --to vllm exports serving plans",)))
    return c


CASES = estimate_cases() + solve_cases() + compare_cases() + export_cases()


def test_the_corpus_is_large():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def _error_lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse: its usage, then its one error line
        lines = [line for line in lines if "error:" in line]
    return lines


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_disaggregated_input(case, tmp_path, capsys):
    argv = materialize(case, tmp_path)
    started = time.perf_counter()
    code, out, err = run_cli(argv, capsys)
    elapsed = time.perf_counter() - started
    text = err + out
    assert "Traceback" not in text and "internal error" not in text, text[-2000:]
    assert code == case.code, text[-2000:]
    assert len(err) < 5000, "an error message should not echo an enormous input"
    assert elapsed < 10, f"{elapsed:.1f} s"
    for needle in case.says:
        assert needle in text, (needle, text[-2000:])
    for needle in case.never:
        assert needle not in text, (needle, text[-2000:])
    if code == 2 and case.one_error:
        # One line naming the file or flag; an inconsistent plan's inconsistencies one per line under it.
        lines = _error_lines(err)
        assert lines and lines[0].startswith(("error:", "planner")), err
        assert all(line.startswith("  - ") for line in lines[1:]), err
        assert out == "", "nothing is written to standard output on bad input"
    if code == 4 and case.one_error:
        assert len(_error_lines(err)) == 1 and out == "", err
    if "--json" in argv and code in (0, 3):
        json.loads(out)  # strict JSON on every path that prints a result


def test_the_budget_cap_keeps_the_searched_plans(capsys, tmp_path):
    """The decode pool's token budget caps its batch (fixed above); the search's decode pools
    carry a budget of at least their batch, so a solved plan reprices to its objective."""
    from planner.cli import main

    (tmp_path / "task.yaml").write_text(TASK)
    out_path = tmp_path / "plan.yaml"
    assert main([*[a.replace("{d}", str(tmp_path)) for a in SOLVE], "--json", "-o", str(out_path)]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert main(["estimate", str(tmp_path / "task.yaml"), "--plan", str(out_path), "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)
    assert priced["output_tokens_per_s_per_gpu"] == pytest.approx(solved["objective_tokens_per_s_per_gpu"], rel=1e-12)
    assert not any("caps it" in w for w in priced["warnings"])
