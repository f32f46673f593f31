"""Embedding sharding: the exact CP-SAT model equals the exhaustive oracle on random small
instances, its objective is the cost model's step time of the plan it returns, no rule beats it,
and no-fit is reported with the resource that ran out."""

from __future__ import annotations

import random

import pytest

from planner.core.errors import InputError
from planner.core.hardware import Cluster, NetworkTier
from planner.core.inputs import load_device
from planner.recsys.cost import evaluate
from planner.recsys.model import Dlrm
from planner.recsys.plan import check_plan
from planner.recsys.problem import RecsysProblem
from planner.recsys.task import RecsysTraining
from solvers.base import SolveOptions
from solvers.recsys import RECSYS_SOLVERS, solve_recsys
from solvers.recsys.cpsat import RecsysCpSat

OPTIONS = SolveOptions(time_limit_s=20, workers=2, seed=0, max_evaluations=20_000)


def random_problem(seed: int) -> RecsysProblem:
    """A random small problem (the first draw from `seed` whose tables fit the cluster at all)."""
    for attempt in range(100):
        try:
            return _draw(random.Random(seed * 1000 + attempt))
        except InputError:
            continue
    raise AssertionError("no valid draw")


def _draw(rng: random.Random) -> RecsysProblem:
    per_host, hosts = rng.choice([(2, 2), (2, 1), (4, 1), (1, 2)])
    world = per_host * hosts
    counts = rng.choice([[1], [2], [1, 1], [3], [2, 1], [1, 1, 1]])
    tables = [{"name": f"t{i}", "count": c, "num_rows": rng.choice([10**3, 10**5, 10**7, 4 * 10**7]),
               "dim": rng.choice([16, 32, 64, 128]), "pooling_factor": rng.choice([1, 3, 20, 100]),
               "weighted": rng.random() < 0.2, "pooled": rng.random() < 0.9}
              for i, c in enumerate(counts)]
    model = Dlrm(name="random", num_dense_features=13, bottom_mlp=[rng.choice([64, 512]), 32],
                 interaction={"type": "concat"}, top_mlp=[rng.choice([256, 1024]), 1], tables=tables,
                 embedding_dtype=rng.choice(["fp32", "fp16"]))
    device = load_device(rng.choice(["a100-sxm4-40gb", "h100-sxm5-80gb"]))
    hbm = rng.choice([None, "6GB", "12GB"])
    if hbm:
        device = type(device).model_validate(device.model_dump() | {"hbm_bytes": hbm})
    tiers = [NetworkTier(name="nvlink", size=per_host, bandwidth_bytes_per_s=rng.choice([150e9, 450e9]),
                         latency_s=10e-6, efficiency=0.8),
             NetworkTier(name="ib", bandwidth_bytes_per_s=rng.choice([12.5e9, 50e9]), latency_s=30e-6, efficiency=0.9)]
    cluster = Cluster(name="random", device=device, num_devices=world, tiers=tiers)
    task = RecsysTraining(global_batch_size=world * rng.choice([256, 4096, 32768]),
                          embedding_optimizer=rng.choice(["rowwise_adagrad", "adam", "sgd"]),
                          framework={"pipelined_input_dist": rng.random() < 0.8, "framework_overhead_bytes": "1GiB"})
    return RecsysProblem(model=model, cluster=cluster, task=task)


@pytest.mark.parametrize("seed", range(110))
def test_cpsat_equals_the_exhaustive_oracle(seed):
    problem = random_problem(seed)
    oracle = RECSYS_SOLVERS["exhaustive"].solve(problem, OPTIONS)
    assert oracle.status in ("OPTIMAL", "INFEASIBLE"), oracle.notes
    exact, *rules = solve_recsys(problem, ["cpsat", "greedy", "madmax-mp", "row-wise"], OPTIONS)
    if oracle.status == "INFEASIBLE":
        assert exact.status == "INFEASIBLE"
        assert exact.infeasibility
        return
    assert exact.status == "OPTIMAL"
    tolerance = RecsysCpSat.rounding_s(problem) + 1e-12
    assert exact.breakdown.step_time_s == pytest.approx(oracle.objective_s, abs=tolerance)
    assert exact.objective_s == pytest.approx(exact.breakdown.step_time_s, abs=tolerance)
    assert check_plan(exact.plan, problem) == []
    for rule in rules:
        if rule.plan is not None:
            assert exact.breakdown.step_time_s <= rule.breakdown.step_time_s + tolerance


def test_the_objective_is_the_cost_models_step_time_at_scale():
    """DLRM-A on 128 GPUs: proven optimal, and the cost model re-prices the plan to the objective."""
    from planner.cli.common import load_task

    problem = load_task("madmax-dlrm-a-zionex128")
    exact, greedy = solve_recsys(problem, ["cpsat", "greedy"], SolveOptions(time_limit_s=30))
    assert exact.status == "OPTIMAL" and exact.best_bound_s == pytest.approx(exact.objective_s, rel=1e-9)
    assert abs(evaluate(problem, exact.plan).step_time_s - exact.objective_s) <= RecsysCpSat.rounding_s(problem)
    assert exact.objective_s <= greedy.objective_s


def test_no_fit_names_the_resource():
    """One 2.6 GB table on two 3 GB ranks that also hold 2 GiB of framework memory: it fits the
    cluster's total, so the problem loads, but no sharding fits a rank."""
    device = load_device("a100-sxm4-40gb")
    device = type(device).model_validate(device.model_dump() | {"hbm_bytes": "3GB"})
    cluster = Cluster(name="small", device=device, num_devices=2, tiers=[
        NetworkTier(name="nvlink", size=2, bandwidth_bytes_per_s=300e9, latency_s=10e-6, efficiency=0.8)])
    model = Dlrm(name="big", num_dense_features=13, bottom_mlp=[64, 16], interaction={"type": "concat"},
                 top_mlp=[64, 1], tables=[{"name": "big", "num_rows": 10**7, "dim": 64, "pooling_factor": 1}])
    task = RecsysTraining(global_batch_size=512, embedding_optimizer="sgd",
                          framework={"framework_overhead_bytes": "2GiB"})
    result = RECSYS_SOLVERS["cpsat"].solve(RecsysProblem(model=model, cluster=cluster, task=task), OPTIONS)
    assert result.status == "INFEASIBLE"
    assert "GiB" in result.infeasibility and "per rank" in result.infeasibility
