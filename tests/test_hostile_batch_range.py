"""The hostile-input corpus of the global batch as a decision (a task's global_batch_size or
global_batch_tokens given as a range {min, max, multiple_of}; plans that carry their own
global_batch_size).

Every case runs the real CLI in-process (estimate, solve, compare, report -o, export to every
training framework, sweep) on files written into a fresh directory, and asserts: no traceback
and no internal error; the exit code of the README's "Exit codes" table (2 bad input, 3 no
result, 4 the export cannot express the plan); that a bad input's message names the file and
the field; and, for valid inputs, the value that must come out (the batch chosen, the batch
each export carries, micro-batch and accumulation counts consistent with it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib

from planner.cli import main

from .test_hostile_inputs import run_cli

SEQ = 8192


def llama(batch: str, extra: str = "") -> str:
    """Llama-3 8B on one DGX H100, 8192-token sequences; `batch` holds the batch lines."""
    return (f"model: llama3-8b\ncluster: dgx-h100\nnum_devices: 8\ntraining:\n{batch}"
            f"  seq_len: {SEQ}\n  precision: bf16\n{extra}")


RANGE = llama("  global_batch_size: {min: 96, max: 128, multiple_of: 8}\n")  # 96, 104, ..., 128
ODD = llama("  global_batch_size: {min: 96, max: 127}\n")  # 127 divides by no DP > 1
FIXED = llama("  global_batch_size: 128\n")
TINY_MODEL = ("{name: tiny, num_layers: 1, hidden_size: 64, num_heads: 1, num_kv_heads: 1, "
              "ffn_hidden_size: 128, vocab_size: 1000, max_seq_len: 2048, gated_mlp: false}")
# One head, one layer, an odd sequence: TP, PP and CP are all 1, so DP is the GPU count.
TINY = (f"model: {TINY_MODEL}\ncluster: dgx-h100\nnum_devices: 8\ntraining:\n"
        "  global_batch_size: {min: 1, max: 7}\n  seq_len: 1023\n")
FAST = ["--time-limit", "3", "--workers", "1"]
ZERO3 = "dp: 8\nzero_stage: 3\n"  # fits Llama-3 8B at these batches


@dataclass
class Case:
    """argv uses {d} for the case directory; `pre` commands run first and must exit 0;
    `check(out, directory)` asserts on a valid result."""

    id: str
    argv: list[str]
    files: dict[str, str] = field(default_factory=dict)
    code: int = 2
    says: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
    pre: list[list[str]] = field(default_factory=list)
    check: Callable[[str, Path], None] | None = None


def flag(text: str, name: str) -> int:
    match = re.search(rf"{re.escape(name)}[ =]+(\d+)", text)
    assert match, (name, text[-1500:])
    return int(match.group(1))


def json_after(text: str) -> dict:
    return json.loads(text[text.index("{"):])


# -- the task's batch fields: shapes, types, values ------------------------------------------------

def task_cases() -> list[Case]:
    c: list[Case] = []

    def t(id_, batch, *says, command="estimate", code=2, never=("constrained-int", "union:")):
        argv = {"estimate": ["estimate", "{d}/task.yaml", "--tp", "8", "--sp"],
                "solve": ["solve", "{d}/task.yaml", *FAST],
                "compare": ["compare", "{d}/task.yaml", "--solvers", "cpsat", *FAST],
                "report": ["report", "{d}/task.yaml", "-o", "{d}/r.html", "--solvers", "cpsat", *FAST],
                "export": ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "megatron"]}[command]
        files = {"task.yaml": llama(batch), "plan.yaml": ZERO3}
        c.append(Case(f"task-{id_}", argv, files, code, ("task.yaml", *says), never))

    both = "both ranges", "give exactly one of global_batch_size (sequences) or global_batch_tokens"
    t("both-ranges", "  global_batch_size: {min: 96, max: 128}\n  global_batch_tokens: {min: 786432, max: 1048576}\n",
      "training", both[1])
    t("range-and-fixed-tokens", "  global_batch_size: {min: 96, max: 128}\n  global_batch_tokens: 1048576\n",
      "training", both[1], command="solve")
    t("fixed-and-token-range", "  global_batch_size: 128\n  global_batch_tokens: {min: 786432, max: 1048576}\n",
      "training", both[1], command="compare")
    t("null", "  global_batch_size: null\n", "training", both[1])
    t("min-above-max", "  global_batch_size: {min: 128, max: 96}\n", "training.global_batch_size",
      "min (128) is larger than max (96)", command="solve")
    t("multiple-above-max", "  global_batch_size: {min: 96, max: 128, multiple_of: 256}\n",
      "global_batch_size: no multiple of 256 sequences lies within 96..128", command="report")
    t("min-equals-max-not-a-multiple", "  global_batch_size: {min: 100, max: 100, multiple_of: 8}\n",
      "global_batch_size: no multiple of 8 sequences lies within 100..100", command="export")
    t("max-2**40-sequences", "  global_batch_size: {min: 1, max: 1099511627776}\n",
      "global_batch_size: 1099511627776 sequences (the range's largest) x seq_len 8192", "more than the 2**40")
    t("min-max-2**40-sequences", "  global_batch_size: {min: 1099511627776, max: 1099511627776}\n",
      "global_batch_size: 1099511627776 sequences x seq_len 8192", "more than the 2**40", command="solve")
    t("max-beyond-2**40", "  global_batch_size: {min: 1, max: 1099511627777}\n",
      "training.global_batch_size.max", "less than or equal to 1099511627776")
    t("tokens-max-beyond-2**40", "  global_batch_tokens: {min: 1, max: 1099511627777}\n",
      "training.global_batch_tokens.max", "less than or equal to 1099511627776", command="solve")
    t("multiple-beyond-2**40", "  global_batch_size: {min: 1, max: 8, multiple_of: 1099511627777}\n",
      "training.global_batch_size.multiple_of", "less than or equal")
    t("beyond-2**53", "  global_batch_size: {min: 1, max: 9007199254740993}\n", "training.global_batch_size.max")
    t("max-inf", "  global_batch_size: {min: 1, max: .inf}\n", "global_batch_size.max", "not a finite number")
    t("min-float", "  global_batch_size: {min: 96.0, max: 128}\n", "training.global_batch_size.min: Input should be "
      "a valid integer")
    t("max-exponent", "  global_batch_size: {min: 96, max: 1e3}\n", "training.global_batch_size.max: Input should "
      "be a valid integer", command="solve")
    t("min-string", "  global_batch_size: {min: '96', max: 128}\n", "training.global_batch_size.min: Input should "
      "be a valid integer")
    t("max-bool", "  global_batch_size: {min: 96, max: true}\n", "training.global_batch_size.max: Input should "
      "be a valid integer")
    t("min-null", "  global_batch_size: {min: null, max: 128}\n", "training.global_batch_size.min")
    t("min-nested", "  global_batch_size: {min: {value: 96}, max: 128}\n", "training.global_batch_size.min: Input "
      "should be a valid integer", command="compare")
    t("min-list", "  global_batch_size: {min: [96], max: 128}\n", "training.global_batch_size.min")
    t("min-negative", "  global_batch_size: {min: -96, max: 128}\n", "training.global_batch_size.min: Input should "
      "be greater than 0")
    t("multiple-zero", "  global_batch_size: {min: 96, max: 128, multiple_of: 0}\n",
      "training.global_batch_size.multiple_of: Input should be greater than 0", command="solve")
    t("multiple-negative", "  global_batch_size: {min: 96, max: 128, multiple_of: -8}\n",
      "training.global_batch_size.multiple_of: Input should be greater than 0")
    t("multiple-float", "  global_batch_size: {min: 96, max: 128, multiple_of: 8.0}\n",
      "training.global_batch_size.multiple_of: Input should be a valid integer")
    t("unknown-key", "  global_batch_size: {min: 96, max: 128, step: 8}\n",
      "training.global_batch_size.step: unknown field (misspelt?)", command="report")
    t("empty-mapping", "  global_batch_size: {}\n", "training.global_batch_size.min: Field required",
      "training.global_batch_size.max: Field required")
    t("only-multiple", "  global_batch_size: {multiple_of: 8}\n", "training.global_batch_size.min: Field required")
    t("duplicate-key", "  global_batch_size: {min: 96, max: 128, max: 256}\n", "duplicate key 'max'")
    t("list", "  global_batch_size: [96, 128]\n",
      "training.global_batch_size: expected a number of sequences or a range {min, max, multiple_of}", command="solve")
    t("text-range", "  global_batch_size: '96..128'\n", "training.global_batch_size: Input should be a valid integer")
    t("fixed-float", "  global_batch_size: 128.0\n", "training.global_batch_size: Input should be a valid integer")
    t("fixed-bool", "  global_batch_size: true\n", "training.global_batch_size: Input should be a valid integer")
    t("fixed-zero", "  global_batch_size: 0\n", "training.global_batch_size: Input should be greater than 0")
    t("tokens-list", "  global_batch_tokens: [1048576]\n",
      "training.global_batch_tokens: expected a number of tokens or a range {min, max, multiple_of}")
    t("tokens-no-whole-sequence", "  global_batch_tokens: {min: 1000, max: 8000}\n",
      "global_batch_tokens: no multiple of 1 tokens (8192 per sequence) lies within 1000..8000", command="solve")
    t("tokens-multiple-skips-the-range", "  global_batch_tokens: {min: 8192, max: 16384, multiple_of: 24576}\n",
      "global_batch_tokens: no multiple of 24576 tokens (8192 per sequence) lies within 8192..16384")
    t("tokens-fixed-not-whole", "  global_batch_tokens: 1000000\n",
      "global_batch_tokens (1000000) is not a multiple of seq_len (8192)")
    t("tokens-unknown-key", "  global_batch_tokens: {min: 786432, max: 1048576, multiple: 8192}\n",
      "training.global_batch_tokens.multiple: unknown field", command="export")
    dlrm = ("model: madmax-dlrm-a-small\ncluster: zionex\nnum_devices: 8\ntraining:\n"
            "  global_batch_size: {min: 1024, max: 65536}\n")
    c.append(Case("task-dlrm-range", ["solve", "{d}/task.yaml", *FAST], {"task.yaml": dlrm}, 2,
                  ("task.yaml", "training.global_batch_size: Input should be a valid integer")))
    return c


# -- valid ranges: the batch chosen and carried --------------------------------------------------

def _solved_range(out: str, d: Path) -> None:
    result = json_after(out)
    plan = result["plan"]
    assert result["status"] == "OPTIMAL" and result["stats"]["reference_batch"] == 128
    assert plan["global_batch_size"] in range(96, 129, 8)
    assert plan["global_batch_size"] % (plan["dp"] * plan["micro_batch_size"]) == 0
    estimate = result["estimate"]
    assert estimate["num_micro_batches"] == plan["global_batch_size"] // (plan["dp"] * plan["micro_batch_size"])
    # the objective is the time per reference batch: tokens/s = reference tokens / objective
    assert estimate["tokens_per_s"] == pytest.approx(128 * SEQ / result["objective_s"], rel=1e-6)
    assert estimate["tokens_per_s"] == pytest.approx(plan["global_batch_size"] * SEQ / estimate["step_time_s"])


def _one_value_range(out: str, d: Path) -> None:
    assert "per 128 sequences" not in out and "128 x 8192 tokens/step" in out and "gbs" not in out


def _odd_range(out: str, d: Path) -> None:
    assert "objective" in out and "per 127 sequences" in out
    batch = int(re.search(r" gbs(\d+) ", out).group(1))
    assert 96 <= batch <= 127 and f"{batch} x 8192 tokens/step" in out


def _tokens_fixed_by_rounding(out: str, d: Path) -> None:
    # multiples of 1000 tokens of 8192-token sequences: multiples of 125 sequences; 1e6..1.1e6
    # tokens hold 122.07..134.28 sequences, so 125 is the only batch
    assert "125 x 8192 tokens/step" in out and "per 125" not in out


def _tiny_micro_batches(out: str, d: Path) -> None:
    plan = (d / "plan.yaml").read_text()
    batch, dp, mbs = (int(re.search(rf"^{k}: (\d+)", plan, re.M).group(1))
                      for k in ("global_batch_size", "dp", "micro_batch_size"))
    assert 1 <= batch <= 15 and batch % (dp * mbs) == 0
    config = json.loads(out)
    assert config["train_batch_size"] == batch and config["train_micro_batch_size_per_gpu"] == mbs
    assert config["gradient_accumulation_steps"] == batch // (dp * mbs)


def valid_range_cases() -> list[Case]:
    c: list[Case] = []
    c.append(Case("solve-range-json", ["solve", "{d}/task.yaml", "--json", *FAST], {"task.yaml": RANGE}, 0,
                  check=_solved_range))
    c.append(Case("solve-one-value-range", ["solve", "{d}/task.yaml", *FAST],
                  {"task.yaml": llama("  global_batch_size: {min: 128, max: 128}\n")}, 0, check=_one_value_range))
    c.append(Case("solve-range-largest-indivisible", ["solve", "{d}/task.yaml", *FAST], {"task.yaml": ODD}, 0,
                  check=_odd_range))
    c.append(Case("solve-token-range-rounds-to-one-batch", ["solve", "{d}/task.yaml", *FAST],
                  {"task.yaml": llama("  global_batch_tokens: {min: 1000000, max: 1100000, multiple_of: 1000}\n")},
                  0, check=_tokens_fixed_by_rounding))
    def tokens_chosen(out, d):  # multiples of 65536 tokens: of 8 sequences, 96..128
        plan = (d / "plan.yaml").read_text()
        batch = int(re.search(r"^global_batch_size: (\d+)", plan, re.M).group(1))
        assert 786432 <= batch * SEQ <= 1048576 and batch * SEQ % 65536 == 0
        assert flag(out, "--global-batch-size") == batch

    c.append(Case("token-range-solve-export",
                  ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "megatron"],
                  {"task.yaml": llama("  global_batch_tokens: {min: 786432, max: 1048576, multiple_of: 65536}\n")},
                  0, pre=[["solve", "{d}/task.yaml", "-o", "{d}/plan.yaml", *FAST]], check=tokens_chosen))
    c.append(Case("solve-token-range-up-to-2**40",
                  ["solve", "{d}/task.yaml", *FAST],
                  {"task.yaml": llama("  global_batch_tokens: {min: 1, max: 1099511627776}\n")}, 0,
                  ("per 134217728 sequences",)))
    c.append(Case("range-forces-few-micro-batches",
                  ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "deepspeed"],
                  {"task.yaml": llama("  global_batch_size: {min: 1, max: 15}\n",
                                      "  constraints: {pp: {fixed: 1}, tp: {fixed: 1}}\n")}, 0,
                  pre=[["solve", "{d}/task.yaml", "-o", "{d}/plan.yaml", *FAST]], check=_tiny_micro_batches))
    # The exhaustive oracle prices every batch of the range: a wide range is refused at once
    # (it used to list them all, past the time limit, to 11 GB for 10**7 batches).
    wide = llama("  global_batch_size: {min: 1, max: 10000000}\n")
    c.append(Case("exhaustive-wide-range", ["solve", "{d}/task.yaml", "--solver", "exhaustive", *FAST],
                  {"task.yaml": wide}, 3, ("UNKNOWN", "space too large to enumerate", "10,000,000")))
    c.append(Case("compare-exhaustive-wide-range",
                  ["compare", "{d}/task.yaml", "--solvers", "exhaustive,cpsat", *FAST], {"task.yaml": wide}, 0,
                  ("space too large to enumerate", "OPTIMAL")))
    return c


# -- no plan divides any batch of the range ---------------------------------------------------------

def _says_no_plan_divides(page: str) -> None:
    assert "1..7 x 1023 tokens/step" in page and "no plan divides the problem" in page


def infeasible_cases() -> list[Case]:
    divides = ("no plan divides the problem", "1..7 sequences per step")
    return [
        Case("tiny-solve", ["solve", "{d}/task.yaml", *FAST], {"task.yaml": TINY}, 3, divides),
        Case("tiny-solve-json", ["solve", "{d}/task.yaml", "--json", *FAST], {"task.yaml": TINY}, 3,
             ('"status": "INFEASIBLE"', "1..7 sequences per step")),
        Case("tiny-compare", ["compare", "{d}/task.yaml", *FAST], {"task.yaml": TINY}, 3,
             ("1..7 x 1023 tokens/step", "no plan divides the problem")),
        Case("tiny-estimate-largest", ["estimate", "{d}/task.yaml"], {"task.yaml": TINY}, 2,
             ("task.yaml", "global batch (7 sequences) is not divisible by dp*micro_batch_size (8*1)",
              "runs at the largest of the task's range 1..7", "--gbs")),
        Case("dp-constraint-excludes-the-range", ["solve", "{d}/task.yaml", *FAST],
             {"task.yaml": llama("  global_batch_size: {min: 9, max: 15}\n", "  constraints: {dp: {fixed: 8}}\n")},
             3, ("INFEASIBLE", "the task's constraints")),
        Case("tiny-report", ["report", "{d}/task.yaml", "-o", "{d}/r.html", *FAST], {"task.yaml": TINY}, 0,
             ("report written",), check=lambda out, d: _says_no_plan_divides((d / "r.html").read_text())),
        Case("tiny-sweep", ["sweep", "{d}/sweep.yaml", "--jobs", "1", *FAST],
             {"task.yaml": TINY, "sweep.yaml": "task: task.yaml\nprovider: hyperstack\naxes:\n  num_devices: [8]\n"},
             3, ("INFEASIBLE", "1..7 sequences per step")),
    ]


# -- plans that carry a batch -------------------------------------------------------------------------

def plan_cases() -> list[Case]:
    c: list[Case] = []
    allowed = "(a multiple of 8 within 96..128)"

    def p(id_, plan, *says, task=RANGE, command="estimate", code=2, check=None):
        argv = {"estimate": ["estimate", "{d}/task.yaml", "--plan", "{d}/plan.yaml"],
                "compare": ["compare", "{d}/task.yaml", "--plan", "{d}/plan.yaml", "--solvers", "cpsat", *FAST],
                "report": ["report", "{d}/task.yaml", "--plan", "{d}/plan.yaml", "-o", "{d}/r.html",
                           "--solvers", "cpsat", *FAST],
                "megatron": ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "megatron"],
                "deepspeed": ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "deepspeed"],
                "torchtitan": ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "torchtitan"],
                "bridge": ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "megatron-bridge"]}[command]
        c.append(Case(f"plan-{id_}-{command}", argv, {"task.yaml": task, "plan.yaml": plan}, code,
                      ("plan.yaml", *says) if code == 2 else says, check=check))

    p("above", ZERO3 + "global_batch_size: 136\n", "global_batch_size (136 sequences) is not one the task allows",
      allowed)
    p("below", ZERO3 + "global_batch_size: 88\n", "global_batch_size (88 sequences)", allowed, command="compare")
    p("not-a-multiple", ZERO3 + "global_batch_size: 100\n", "global_batch_size (100 sequences)", allowed,
      "global batch (100 sequences) is not divisible by dp*micro_batch_size (8*1)", command="report")
    p("not-a-multiple", ZERO3 + "global_batch_size: 100\n", "global_batch_size (100 sequences)", command="megatron")
    p("outside-step-1-range", ZERO3 + "global_batch_size: 128\n", "is not one the task allows (96..127)", task=ODD,
      command="deepspeed")
    p("float", ZERO3 + "global_batch_size: 96.0\n", "global_batch_size: Input should be a valid integer")
    p("string", ZERO3 + "global_batch_size: '96'\n", "global_batch_size: Input should be a valid integer",
      command="torchtitan")
    p("bool", ZERO3 + "global_batch_size: true\n", "global_batch_size: Input should be a valid integer")
    p("a-range", ZERO3 + "global_batch_size: {min: 96, max: 128}\n", "global_batch_size: Input should be a valid "
      "integer", command="bridge")
    p("list", ZERO3 + "global_batch_size: [96]\n", "global_batch_size: Input should be a valid integer")
    p("zero", ZERO3 + "global_batch_size: 0\n", "global_batch_size: Input should be greater than 0")
    p("2**41", ZERO3 + "global_batch_size: 2199023255552\n", "global_batch_size: Input should be less than or equal")
    p("misspelt", ZERO3 + "global_batch_sise: 96\n", "global_batch_sise: unknown field")
    p("micro-batch-does-not-divide", ZERO3 + "micro_batch_size: 16\nglobal_batch_size: 104\n",
      "global batch (104 sequences) is not divisible by dp*micro_batch_size (8*16)")
    p("batch-on-fixed-task-differs", ZERO3 + "global_batch_size: 96\n",
      "global_batch_size (96 sequences) is not one the task allows (128)", task=FIXED)
    p("batch-on-fixed-task-differs", ZERO3 + "global_batch_size: 64\n", "is not one the task allows (128)",
      task=FIXED, command="megatron")
    p("batch-on-fixed-task-equal", ZERO3 + "global_batch_size: 128\n", "128 x 8192 tokens/step", "gbs128",
      task=FIXED, code=0)
    p("null-runs-at-the-largest", ZERO3 + "global_batch_size: null\n", "128 x 8192 tokens/step",
      "(16 micro-batches", code=0)
    p("none-runs-at-the-largest", ZERO3, "--global-batch-size 128", command="megatron", code=0)
    p("none-largest-indivisible", ZERO3, "global batch (127 sequences) is not divisible by dp*micro_batch_size (8*1)",
      "the plan gives no global_batch_size, so it runs at the largest of the task's range 96..127", task=ODD)
    p("none-largest-indivisible", ZERO3, "runs at the largest of the task's range 96..127", task=ODD,
      command="torchtitan")
    p("inside", ZERO3 + "global_batch_size: 104\n", "104 x 8192 tokens/step", "(13 micro-batches", code=0)
    interleaved = "pp: 2\ndp: 4\nschedule: interleaved\nvirtual_stages: 2\nzero_stage: 1\n"
    p("interleaved-odd-micro-batches", interleaved + "global_batch_size: 108\n",
      "interleaved schedule needs the number of micro-batches to be a multiple of pp", task=ODD, command="megatron")
    p("interleaved", interleaved + "global_batch_size: 104\n", "--global-batch-size 104",
      "--num-layers-per-virtual-pipeline-stage 8", task=ODD, command="megatron", code=0)

    def megatron(out, d):
        assert flag(out, "--global-batch-size") == 104 and flag(out, "--micro-batch-size") == 1

    def deepspeed(out, d):
        config = json.loads(out)
        assert config["train_batch_size"] == 104 == (config["train_micro_batch_size_per_gpu"]
                                                     * config["gradient_accumulation_steps"] * 8)

    def bridge(out, d):
        assert flag(out, "train.global_batch_size") == 104 and flag(out, "train.micro_batch_size") == 1

    p("inside", ZERO3 + "global_batch_size: 104\n", "104 x 8192 tokens/step", command="megatron", code=0,
      check=megatron)
    p("inside", ZERO3 + "global_batch_size: 104\n", command="deepspeed", code=0, check=deepspeed)
    p("inside", ZERO3 + "global_batch_size: 104\n", command="bridge", code=0, check=bridge)

    def titan(out, d):  # PP 2: the local batch is every micro-batch of one DP rank
        config = tomllib.loads(out)
        training, parallel = config["training"], config["parallelism"]
        assert training["global_batch_size"] == 96 and parallel["pipeline_parallel_microbatch_size"] == 2
        assert training["local_batch_size"] == 24 and training["local_batch_size"] * 4 == 96

    p("pipeline", "pp: 2\ndp: 4\nzero_stage: 1\nmicro_batch_size: 2\nglobal_batch_size: 96\n", command="torchtitan",
      code=0, check=titan)

    def titan_flags(out, d):  # 0.3: flags; no PP: the local batch is the micro-batch, DP accumulates
        assert flag(out, "--training.global_batch_size") == 120
        local = flag(out, "--training.local_batch_size")
        assert 120 % (local * 8) == 0

    c.append(Case("plan-inside-torchtitan-0.3",
                  ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "torchtitan", "--target-version",
                   "0.3"], {"task.yaml": ODD, "plan.yaml": ZERO3 + "global_batch_size: 120\n"}, 0, check=titan_flags))
    c.append(Case("plan-deepspeed-cannot-express", ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to",
                                                   "deepspeed"],
                  {"task.yaml": RANGE, "plan.yaml": "pp: 2\ndp: 4\nzero_stage: 3\nglobal_batch_size: 96\n"}, 4,
                  ("ZeRO-3",)))
    c.append(Case("plan-made-for-the-range-given-the-fixed-task",
                  ["export", "{d}/plan.yaml", "--task", "{d}/fixed.yaml", "--to", "megatron"],
                  {"task.yaml": RANGE, "fixed.yaml": FIXED}, 2, ("plan.yaml", "this plan was made for problem",
                                                                 "fixed.yaml"),
                  pre=[["solve", "{d}/task.yaml", "-o", "{d}/plan.yaml", *FAST]]))

    def same_batch(out, d):
        saved = re.search(r"^global_batch_size: (\d+)", (d / "plan.yaml").read_text(), re.M)
        assert saved and flag(out, "--global-batch-size") == int(saved.group(1))

    c.append(Case("solve-o-then-export", ["export", "{d}/plan.yaml", "--task", "{d}/task.yaml", "--to", "megatron"],
                  {"task.yaml": ODD}, 0, pre=[["solve", "{d}/task.yaml", "-o", "{d}/plan.yaml", *FAST]],
                  check=same_batch))

    def solve_export(out, d):
        batch = int(re.search(r" gbs(\d+) ", out).group(1))
        config = json_after(out[out.index('"_comment"') - 4:])
        assert config["train_batch_size"] == batch
        dp = int(re.search(r" DP(\d+)", out).group(1))
        assert batch == config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * dp

    def per_token(out, d):
        rows = {row["method"]: row for row in json.loads(out)["rows"]}
        best, given = rows["cpsat"], rows[f"plan {d}/plan.yaml"]
        assert " gbs120 " in best["plan"] + " " and given["plan"].endswith("gbs104")
        # the same FSDP plan at 104 sequences: each part per token is the same but the
        # per-step optimizer, shared by fewer tokens (compared per token, not per step, where
        # every part of the smaller batch's step is shorter)
        assert 0 <= given["gap_to_best"] < 0.01 and "optimizer" in given["why"] and "compute" not in given["why"]

    c.append(Case("compare-plans-at-different-batches-json",
                  ["compare", "{d}/task.yaml", "--plan", "{d}/plan.yaml", "--solvers", "cpsat", "--json", *FAST],
                  {"task.yaml": ODD, "plan.yaml": ZERO3 + "global_batch_size: 104\n"}, 0, check=per_token))
    c.append(Case("solve-export-deepspeed", ["solve", "{d}/task.yaml", "--export", "deepspeed", *FAST],
                  {"task.yaml": ODD}, 0, check=solve_export))
    return c


# -- estimate --gbs -------------------------------------------------------------------------------------

def gbs_flag_cases() -> list[Case]:
    def g(id_, task, args, code, *says, check=None):
        return Case(f"gbs-{id_}", ["estimate", "{d}/task.yaml", "--dp", "8", "--zero", "3", *args],
                    {"task.yaml": task}, code, says, check=check)

    def priced(out, d):
        result = json.loads(out)
        assert result["plan"]["global_batch_size"] == 112 and result["num_micro_batches"] == 14
        assert result["tokens_per_s"] == pytest.approx(112 * SEQ / result["step_time_s"])

    return [
        g("outside", RANGE, ["--gbs", "136"], 2, "--gbs", "task.yaml", "global_batch_size (136 sequences)",
          "(a multiple of 8 within 96..128)"),
        g("fixed-task-differs", FIXED, ["--gbs", "96"], 2, "--gbs", "is not one the task allows (128)"),
        g("zero", RANGE, ["--gbs", "0"], 2, "--gbs"),
        g("text", RANGE, ["--gbs", "lots"], 2, "--gbs"),
        g("beyond-2**40", RANGE, ["--gbs", "2199023255552"], 2, "--gbs"),
        g("json", RANGE, ["--gbs", "112", "--json"], 0, check=priced),
    ]


# -- sweeps over a range task ------------------------------------------------------------------------

def sweep_cases() -> list[Case]:
    def s(id_, head, axes, code, *says, files=None, check=None):
        sweep = f"{head}provider: hyperstack\naxes:\n{axes}"
        return Case(f"sweep-{id_}", ["sweep", "{d}/sweep.yaml", "--jobs", "1", "-o", "{d}/result.json", *FAST],
                    {"sweep.yaml": sweep, **(files or {})}, code, says, check=check)

    def chosen(out, d):
        assert re.search(r"TP\d+ CP\d+ PP\d+ DP\d+\S* mbs\d+ rc:\w+ gbs(9[6-9]|1[01]\d|12[0-7]) ", out), out

    def axis_replaces(out, d):
        assert "gbs" not in out.split("Pareto front")[0].split("-----")[-1]  # fixed batches: no gbs in plans
        assert re.search(r"^64 +OPTIMAL", out, re.M) and re.search(r"^127 +OPTIMAL", out, re.M)

    def report_of_result(out, d):
        result = json.loads((d / "result.json").read_text())
        plans = [row["plan"] for row in result["scenarios"]]
        assert all(re.search(r" gbs(9[6-9]|1[01]\d|12[0-7])$", plan) for plan in plans), plans
        assert main(["report", str(d / "result.json"), "-o", str(d / "sweep.html")]) == 0
        page = (d / "sweep.html").read_text()
        assert all(plan in page for plan in plans)

    inline = "task: {model: llama3-8b, cluster: dgx-h100, num_devices: 8, training: {global_batch_size: %s, " \
             "seq_len: 8192}}\n"
    return [
        s("range-task", "task: task.yaml\n", "  num_devices: [8]\n", 0, files={"task.yaml": ODD}, check=chosen),
        s("batch-axis-over-a-range-task", "task: task.yaml\n", "  global_batch_size: [64, 127]\n", 0,
          files={"task.yaml": ODD}, check=axis_replaces),
        s("one-scenario-divides", "task: task.yaml\n", "  num_devices: [1, 8]\n", 0, "gbs7", "INFEASIBLE",
          files={"task.yaml": TINY}),
        s("inline-min-above-max", inline % "{min: 96, max: 64}", "  num_devices: [8]\n", 2, "sweep.yaml",
          "task.training.global_batch_size", "min (96) is larger than max (64)"),
        s("inline-unknown-key", inline % "{min: 96, max: 128, step: 8}", "  num_devices: [8]\n", 2, "sweep.yaml",
          "task.training.global_batch_size.step: unknown field"),
        s("inline-list", inline % "[96, 128]", "  num_devices: [8]\n", 2, "sweep.yaml",
          "task.training.global_batch_size: expected a number of sequences or a range"),
        s("axis-range", "task: task.yaml\n", "  global_batch_size: [{min: 96, max: 128}]\n", 2, "sweep.yaml",
          "axes.global_batch_size.0", files={"task.yaml": ODD}),
        s("result-drawn-by-report", "task: task.yaml\n", "  num_devices: [8, 16]\n", 0, files={"task.yaml": ODD},
          check=report_of_result),
        s("axis-beyond-2**40", "task: task.yaml\n", "  global_batch_size: [2199023255552]\n", 2, "sweep.yaml",
          "axes.global_batch_size", files={"task.yaml": ODD}),
    ]


# -- report -o -------------------------------------------------------------------------------------------

def report_cases() -> list[Case]:
    def drawn(out, d):
        page = (d / "r.html").read_text()
        assert "96..127 x 8192 tokens/step" in page and "gbs104" in page
        # the plan drawn as chosen is compare's best (the highest tokens/s, cpsat at its batch),
        # not the given plan whose smaller batch makes a shorter step
        assert "gantt:cpsat" in out and "gantt:plan" in out

    return [Case("report-range-with-a-given-batch",
                 ["report", "{d}/task.yaml", "--plan", "{d}/plan.yaml", "-o", "{d}/r.html", "--solvers", "cpsat",
                  *FAST], {"task.yaml": ODD, "plan.yaml": ZERO3 + "global_batch_size: 104\n"}, 0,
                 ("report written",), check=drawn)]


CASES = task_cases() + valid_range_cases() + infeasible_cases() + plan_cases() + gbs_flag_cases() \
    + sweep_cases() + report_cases()


def test_the_corpus_is_large():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_batch_range(case, tmp_path, capsys):
    for name, content in case.files.items():
        (tmp_path / name).write_text(content)

    def expand(argv):
        return [a.replace("{d}", str(tmp_path)) for a in argv]

    for argv in case.pre:
        code, out, err = run_cli(expand(argv), capsys)
        assert code == 0, (argv, err[-2000:], out[-2000:])
    code, out, err = run_cli(expand(case.argv), capsys)
    text = err + out
    assert "Traceback" not in text and "internal error" not in text, text[-2000:]
    assert code == case.code, text[-2000:]
    for needle in case.says:
        assert needle in text, (needle, text[-2000:])
    for needle in case.never:
        assert needle not in text, (needle, text[-2000:])
    if case.check is not None:
        case.check(out, tmp_path)


def test_batch_count_is_the_length_of_batch_choices():
    """enumerate_within(limit=...) counts a configuration's batches without listing them."""
    from planner.llm.space import batch_choices, batch_count
    from planner.llm.task import TrainingTask

    for low, high, step in ((1, 1, 1), (5, 5, 1), (1, 100, 1), (7, 93, 3), (24, 64, 8), (60, 70, 32), (3, 4, 1)):
        task = TrainingTask.model_validate({"seq_len": 1024, "global_batch_size": {
            "min": low, "max": high, "multiple_of": step}})
        for dp in (1, 2, 3, 4, 8):
            for mbs in (1, 2, 5):
                for pp, vs in ((1, 1), (2, 1), (4, 2), (3, 3)):
                    for every in (False, True):
                        assert batch_count(task, dp, mbs, pp, vs, every) == \
                            len(batch_choices(task, dp, mbs, pp, vs, every)), (low, high, step, dp, mbs, pp, vs)


def _same_batch_two_ways(task_file: str, plan, batch: int, high: int):
    """A plan at `batch` sequences priced on a range task (its global_batch_size) and on a task
    whose fixed batch is `batch`: the two must agree (the range only says which batches are allowed)."""
    from planner.llm.cost.step import evaluate
    from planner.llm.problem import Problem, load_problem
    from planner.llm.task import TrainingTask

    from .conftest import PROBLEMS

    base = load_problem(PROBLEMS / "tasks" / task_file)
    data = base.task.model_dump()
    fixed = TrainingTask.model_validate({**data, "global_batch_size": batch})
    free = TrainingTask.model_validate({**data, "global_batch_size": {"min": batch, "max": high}})
    at_fixed = evaluate(Problem(model=base.model, cluster=base.cluster, task=fixed), plan)
    at_range = evaluate(Problem(model=base.model, cluster=base.cluster, task=free),
                        plan.model_copy(update={"global_batch_size": batch}))
    assert at_range.num_micro_batches == at_fixed.num_micro_batches
    assert at_range.step_time_s == pytest.approx(at_fixed.step_time_s, rel=1e-12)
    assert at_range.peak_memory_bytes == pytest.approx(at_fixed.peak_memory_bytes, rel=1e-12)


def test_a_plan_prices_the_same_at_its_batch_on_a_range_task():
    from planner.llm.plan import Plan

    for plan in (Plan(dp=8, zero_stage=3), Plan(pp=4, dp=2, zero_stage=1, recompute="full"),
                 Plan(pp=2, dp=4, schedule="interleaved", virtual_stages=2, micro_batch_size=2)):
        _same_batch_two_ways("llama3-8b-8xh100.yaml", plan, 32, 1024)
    _same_batch_two_ways("qwen3-30b-a3b-16xh100.yaml", Plan(dp=16, ep=8, zero_stage=1), 32, 1024)


def test_an_ep_overlap_plan_prices_the_same_at_its_batch_on_a_range_task():
    # the EP overlap's unpaired share (planner.llm.cost.moe.unpaired_share) counts the plan's own
    # micro-batches (PlanVars.num_sequences), not the range's largest
    from planner.llm.plan import Plan

    _same_batch_two_ways("qwen3-30b-a3b-16xh100.yaml",
                         Plan(dp=16, ep=8, ep_comm_overlap=True, zero_stage=1, recompute="selective"), 32, 1024)
