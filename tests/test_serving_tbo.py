"""Two-batch overlap (inference.engine.two_batch_overlap): a mixture-of-experts pass whose expert
groups span replicas runs as two half micro-batches, the all-to-all exposed only beyond the MoE
layers' compute; off by default (prices and hashes as before), no effect where there is no
all-to-all or a single token, exported as vLLM's --enable-dbo."""

import dataclasses

import pytest

from planner.cli import main
from planner.cli.common import load_task
from planner.export.serving_check import check_flags
from planner.serving.forward import PassLoad
from planner.serving.moe_forward import _moe_pass_cost, half_load, moe_pass_cost

from .conftest import PROBLEMS

TASK = PROBLEMS / "tasks" / "deepseek-v3-96xh100-serving.yaml"


def with_overlap(problem, on: bool = True):
    engine = problem.task.engine.model_copy(update={"two_batch_overlap": on})
    return dataclasses.replace(problem, task=problem.task.model_copy(update={"engine": engine}))


PREFILL = PassLoad(prefill_tokens=16384, prefill_pairs=16384 * 1024, logit_seqs=8)
DECODE = PassLoad(decode_seqs=128, decode_context_tokens=2300, logit_seqs=128)


def test_off_by_default_and_left_out_of_the_hash(tmp_path):
    problem = load_task(str(TASK))
    assert problem.task.engine.two_batch_overlap is False
    assert "two_batch_overlap" not in problem.task.engine.model_dump()
    explicit = tmp_path / "task.yaml"
    explicit.write_text(TASK.read_text().replace("engine: {name: sglang}", "engine: {name: sglang, two_batch_overlap: false}"))
    assert load_task(str(explicit)).hash == problem.hash
    on = tmp_path / "on.yaml"
    on.write_text(TASK.read_text().replace("engine: {name: sglang}", "engine: {name: sglang, two_batch_overlap: true}"))
    assert load_task(str(on)).hash != problem.hash


@pytest.mark.parametrize("load", [PREFILL, DECODE], ids=["prefill", "decode"])
def test_the_overlapped_pass_by_hand(load):
    problem = with_overlap(load_task(str(TASK)))
    args = (1, 1, 64, False, 61, 58, True, True)  # tp 1, pp 1, ep 64: the all-to-all spans replicas
    half = _moe_pass_cost(problem, *args, half_load(load))
    got = moe_pass_cost(problem, *args, load)
    assert got.gemm == pytest.approx(2 * half.gemm) and got.attention == pytest.approx(2 * half.attention)
    compute = 2 * (half.gemm + half.attention + half.elementwise + half.lm_head)
    assert got.ep_comm == pytest.approx(max(0.0, 2 * half.ep_comm - compute * 58 / 61))
    assert got.tp_comm == pytest.approx(sum(got.tp_by_tier))
    plain = moe_pass_cost(with_overlap(problem, False), *args, load)
    assert got.ep_comm < plain.ep_comm  # something of the all-to-all is hidden


def test_prefill_gains_and_decode_pays_the_second_weight_read():
    problem = with_overlap(load_task(str(TASK)))
    args = (1, 1, 64, False, 61, 58, True, True)
    off = with_overlap(problem, False)
    assert moe_pass_cost(problem, *args, PREFILL).total_s < moe_pass_cost(off, *args, PREFILL).total_s
    on_decode, off_decode = moe_pass_cost(problem, *args, DECODE), moe_pass_cost(off, *args, DECODE)
    assert on_decode.gemm > off_decode.gemm  # two halves read the touched experts twice


@pytest.mark.parametrize(("tp", "ep", "load"), [(8, 8, PREFILL), (1, 1, PREFILL), (1, 64, PassLoad(decode_seqs=1,
                                                decode_context_tokens=100, logit_seqs=1))])
def test_no_effect_without_an_all_to_all_or_with_one_token(tp, ep, load):
    problem = load_task(str(TASK))
    args = (tp, 1, ep, False, 61, 58, True, True)
    assert moe_pass_cost(with_overlap(problem), *args, load) == moe_pass_cost(problem, *args, load)


def test_exported_as_vllms_dual_batch_overlap(tmp_path, capsys):
    task = tmp_path / "task.yaml"
    task.write_text(TASK.read_text().replace("engine: {name: sglang}", "engine: {name: vllm, two_batch_overlap: true}"))
    plan = tmp_path / "plan.yaml"
    plan.write_text("family: serving\ntp: 1\ndp: 96\nep: 16\nmax_num_seqs: 43\n")
    assert main(["export", str(plan), "--task", str(task), "--to", "vllm"]) == 0
    text = capsys.readouterr().out
    from planner.export.serving_base import command_argv
    from planner.export.vllm import PROGRAM

    values, problems = check_flags("vllm", command_argv(text, PROGRAM))
    assert not problems and values.get("enable_dbo")
    # without the overlap, no --enable-dbo
    task.write_text(TASK.read_text().replace("engine: {name: sglang}", "engine: {name: vllm}"))
    assert main(["export", str(plan), "--task", str(task), "--to", "vllm"]) == 0
    values, _ = check_flags("vllm", command_argv(capsys.readouterr().out, PROGRAM))
    assert not values.get("enable_dbo")


@pytest.mark.parametrize("value", ['"yes"', "1.5", "[true]"])
def test_bad_values_name_the_field(tmp_path, capsys, value):
    task = tmp_path / "task.yaml"
    task.write_text(TASK.read_text().replace("engine: {name: sglang}", f"engine: {{name: sglang, two_batch_overlap: {value}}}"))
    assert main(["estimate", str(task), "--tp", "1", "--dp", "96"]) == 2
    err = capsys.readouterr().err
    assert "inference.engine.two_batch_overlap" in err and "Traceback" not in err


def test_the_search_bound_premise_holds_with_the_overlap():
    """solvers.serving bounds batch ranges on TPOT, the slowest TTFT and D(B) never decreasing in
    the batch; the overlap switches on at two tokens and prices max(compute, compute (1 - f) +
    all-to-all) per pass, both nondecreasing: checked over consecutive batches of every layout
    with an all-to-all."""
    from planner.serving.cost import evaluate
    from solvers.serving import _served, layouts, plan_of

    problem = with_overlap(load_task(str(TASK)))
    checked = 0
    for lay in layouts(problem):
        if lay.ep <= lay.tp or lay.size < 2:
            continue
        previous = None
        for batch in range(lay.pp, min(lay.batch_cap, lay.pp + 24) + 1):
            e = evaluate(problem, plan_of(lay, batch), lay.max_batch_fits)
            now = (e.tpot_s, e.ttft_max_s, _served(problem, lay, batch) / e.output_tokens_per_s_per_gpu)
            if previous is not None:
                checked += 1
                assert all(b >= a * (1 - 1e-12) for a, b in zip(previous, now, strict=True)), (lay, batch)
            previous = now
    assert checked > 100
