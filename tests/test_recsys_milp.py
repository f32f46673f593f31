"""A second exact method for embedding sharding: the MILP (solvers/recsys/milp.py, SCIP), written
independently of the CP-SAT model, reaches the same optimum on 100 random instances of up to 16
tables on up to 8 ranks in 2 hosts -- sizes where the exhaustive oracle's space has up to ~10^17
plans -- and both agree on which instances nothing fits."""

from __future__ import annotations

import random

import pytest

from planner.core.errors import InputError
from planner.core.hardware import Cluster, NetworkTier
from planner.core.inputs import load_device
from planner.recsys.cost import evaluate
from planner.recsys.model import Dlrm
from planner.recsys.problem import RecsysProblem
from planner.recsys.task import RecsysTraining
from solvers.base import SolveOptions
from solvers.recsys import RECSYS_SOLVERS
from solvers.recsys.cpsat import RecsysCpSat

OPTIONS = SolveOptions(time_limit_s=60, workers=2, seed=0)
SHAPES = [(4, 2), (2, 2), (8, 1), (4, 1), (2, 1)]
"""(ranks per host, hosts)."""


def _draw(rng: random.Random) -> RecsysProblem:
    per_host, hosts = rng.choice(SHAPES)
    world = per_host * hosts
    total = rng.randint(1, 16)
    counts: list[int] = []
    while sum(counts) < total:  # groups of identical tables
        counts.append(rng.randint(1, total - sum(counts)))
    tables = [{"name": f"t{i}", "count": c, "num_rows": rng.choice([10**3, 10**5, 10**7, 4 * 10**7]),
               "dim": rng.choice([16, 32, 64, 128]), "pooling_factor": rng.choice([1, 3, 20, 100]),
               "weighted": rng.random() < 0.2, "pooled": rng.random() < 0.9} for i, c in enumerate(counts)]
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


def random_problem(seed: int) -> RecsysProblem:
    for attempt in range(100):
        try:
            return _draw(random.Random(seed * 1000 + attempt))
        except InputError:  # a table larger than the whole cluster: draw again
            continue
    raise AssertionError("no valid draw")


PROBLEMS = [random_problem(seed) for seed in range(100)]


def test_the_instances_reach_the_sizes_the_exhaustive_oracle_cannot():
    assert max(p.model.num_tables for p in PROBLEMS) == 16
    assert any(p.cluster.num_devices == 8 and p.num_hosts == 2 and p.model.num_tables >= 12 for p in PROBLEMS)


@pytest.mark.parametrize("seed", range(100))
def test_cpsat_and_the_milp_reach_the_same_optimum(seed):
    problem = PROBLEMS[seed]
    exact = RecsysCpSat().solve(problem, OPTIONS)
    milp = RECSYS_SOLVERS["milp"].solve(problem, OPTIONS)
    assert exact.status == milp.status, (exact.notes, milp.notes)
    assert exact.status in ("OPTIMAL", "INFEASIBLE")
    if exact.status == "INFEASIBLE":
        return
    # each objective is its own plan's step time (CP-SAT within its rounding; the MILP within its
    # tolerances, 1e-6 relative in microsecond rows) ...
    assert abs(evaluate(problem, exact.plan).step_time_s - exact.objective_s) <= RecsysCpSat.rounding_s(problem)
    milp_step = evaluate(problem, milp.plan).step_time_s
    assert milp_step == pytest.approx(milp.objective_s, rel=1e-6)
    # ... and the two optima agree
    assert milp_step == pytest.approx(exact.objective_s, rel=1e-6, abs=RecsysCpSat.rounding_s(problem))


def test_the_milp_is_a_solver_of_solve_and_compare(capsys):
    from planner.cli import main

    assert main(["compare", "madmax-dlrm-a-zionex128", "--solvers", "cpsat,milp", "--time-limit", "30"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("cpsat ", "milp "))]
    assert [r[:2] for r in rows] == [["cpsat", "OPTIMAL"], ["milp", "OPTIMAL"]]
    assert rows[0][rows[0].index("ms") - 1] == rows[1][rows[1].index("ms") - 1]  # the same step time


def test_the_milp_declines_a_problem_too_large_for_an_exact_model():
    from benchmarks.recsys_workloads import heterogeneous_problem

    result = RECSYS_SOLVERS["milp"].solve(heterogeneous_problem(856, 64), OPTIONS)
    assert result.status == "UNKNOWN" and "more than the 8,000" in result.notes[0]
