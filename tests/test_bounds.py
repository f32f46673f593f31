"""The pruning bounds are valid: for every configuration of small instances, the time lower
bound never exceeds the best partition's step time (exhaustive), and a configuration is declared
unable to fit only when no partition fits."""

import numpy as np
import pytest

from planner.llm.bounds import memory_lower_bound, time_lower_bound
from planner.llm.problem import load_cluster
from planner.llm.space import SpaceOptions, enumerate_candidates
from planner.llm.stage_tables import stage_model
from planner.llm.task import Framework
from solvers.exhaustive import best_partition

from .conftest import make_problem, small_model

CASES = [
    dict(n=8, layers=6, hbm=2.0e9, attention="flash", overlap=True, tied=False),
    dict(n=4, layers=7, hbm=3.0e9, attention="unfused", overlap=False, tied=True),
    dict(n=16, layers=8, hbm=4.0e9, attention="flash", overlap=False, tied=True),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c['n']}gpu-{c['layers']}layers-{c['attention']}" for c in CASES])
def test_bounds_never_exceed_the_exact_optimum(case):
    base = load_cluster("dgx-h100", num_devices=case["n"])
    cluster = base.model_copy(update={"device": base.device.model_copy(update={"hbm_bytes": case["hbm"]})})
    model = small_model(num_layers=case["layers"], hidden_size=2048, ffn_hidden_size=5632, vocab_size=50000,
                        tied_embeddings=case["tied"])
    problem = make_problem(num_devices=case["n"], model=model, global_batch_size=2 * case["n"], seq_len=1024,
                           cluster=cluster,
                           framework=Framework(attention=case["attention"], overlap_grad_reduce=case["overlap"],
                                               framework_overhead_bytes=0.1 * 2**30))
    candidates = enumerate_candidates(problem, options=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2,
                                                                    axis_orders="megatron"))
    lower = time_lower_bound(problem, candidates)
    fits = 0
    for i in range(len(candidates)):
        config = candidates.plan(i)
        best = best_partition(problem, config)
        if best is None:
            continue
        fits += 1
        assert np.isfinite(lower[i]), config.summary()
        assert lower[i] <= best[0] * (1 + 1e-9), (config.summary(), lower[i], best[0])
        sm = stage_model(problem, config)
        assert memory_lower_bound(sm) <= sm.capacity_bytes * (1 + 1e-9)
    assert fits > 0
