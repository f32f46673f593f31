"""The solvers' priced tables reproduce `evaluate` for any partition of a configuration."""

import itertools

import pytest

from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan
from planner.llm.stage_tables import plan_with_partition, stage_model, step_time_s
from planner.llm.task import Framework

from .conftest import make_problem, small_model

CONFIGS = [
    Plan(tp=2, sp=True, pp=4, dp=2, recompute="full", micro_batch_size=2),
    Plan(tp=1, pp=2, dp=8, zero_stage=1, recompute="none", micro_batch_size=1, schedule="interleaved", virtual_stages=2),
    Plan(tp=4, sp=True, tp_comm_overlap=True, cp=2, pp=2, dp=1, recompute="selective"),
    Plan(tp=2, pp=4, dp=2, zero_stage=3, recompute="full", axis_order=["tp", "pp", "dp", "cp"]),
]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.summary() for c in CONFIGS])
@pytest.mark.parametrize("attention", ["flash", "unfused"])
def test_tables_reproduce_evaluate(config, attention):
    problem = make_problem(num_devices=16, model=small_model(tied_embeddings=True), framework=Framework(attention=attention))
    sm = stage_model(problem, config)
    chunks_total = sm.chunks
    tried = 0
    for chunks in itertools.product(range(1, chunks_total + 1), repeat=sm.num_stages):
        if sum(chunks) != chunks_total:
            continue
        layers = [c * sm.virtual_stages for c in chunks]
        options = [range(0, n + 1) for n in layers] if sm.recompute_full else [[0] for _ in layers]
        for recomputed in list(itertools.product(*options))[:6]:
            plan = plan_with_partition(sm, list(chunks), list(recomputed))
            b = evaluate(problem, plan)
            t, peak = step_time_s(sm, list(chunks), list(recomputed))
            assert t == pytest.approx(b.step_time_s, rel=1e-9)
            assert peak == pytest.approx(b.peak_memory_bytes, rel=1e-9)
            tried += 1
    assert tried > 0
