"""Shared fixtures: small problems built in code, and paths to the shipped presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.core.hardware import Cluster, NetworkTier
from planner.llm.model import DenseTransformer
from planner.llm.problem import Problem, load_cluster, load_model
from planner.llm.task import Framework, TrainingTask

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = ROOT / "problems"


def _family_of_task(path: Path) -> str | None:
    from planner.core.inputs import read_task, task_model_family

    return task_model_family(path, read_task(path))


def _plan_family(path: Path) -> str | None:
    import yaml

    return (yaml.safe_load(path.read_text()) or {}).get("family")


def _is_inference_task(path: Path) -> bool:
    from planner.core.inputs import read_task

    return "inference" in read_task(path)


ALL_TASKS = sorted((PROBLEMS / "tasks").glob("*.yaml"))
SERVING_TASKS = [p for p in ALL_TASKS if _is_inference_task(p)]
DLRM_TASKS = [p for p in ALL_TASKS if p not in SERVING_TASKS and _family_of_task(p) == "dlrm"]
LLM_TASKS = [p for p in ALL_TASKS if p not in DLRM_TASKS and p not in SERVING_TASKS]
"""Shipped task files by family (LLM: dense and MoE training; DLRM: embedding sharding; serving:
inference tasks)."""
ALL_PLANS = sorted((PROBLEMS / "plans").glob("*.yaml"))
DLRM_PLANS = [p for p in ALL_PLANS if _plan_family(p) == "dlrm"]
SERVING_PLANS = [p for p in ALL_PLANS if _plan_family(p) == "serving"]
LLM_PLANS = [p for p in ALL_PLANS if p not in DLRM_PLANS and p not in SERVING_PLANS]


def small_model(**overrides) -> DenseTransformer:
    data = dict(
        name="tiny",
        num_layers=8,
        hidden_size=1024,
        num_heads=16,
        num_kv_heads=4,
        ffn_hidden_size=2816,
        gated_mlp=True,
        vocab_size=32000,
        max_seq_len=4096,
    )
    data.update(overrides)
    return DenseTransformer(**data)


def make_problem(
    num_devices: int = 16,
    model: DenseTransformer | None = None,
    global_batch_size: int = 64,
    seq_len: int = 2048,
    cluster: Cluster | None = None,
    **task_overrides,
) -> Problem:
    cluster = cluster or load_cluster("dgx-h100", num_devices=num_devices)
    task = TrainingTask(global_batch_size=global_batch_size, seq_len=seq_len, **task_overrides)
    return Problem(model=model or small_model(), cluster=cluster, task=task)


def with_bandwidth(cluster: Cluster, scale: float) -> Cluster:
    tiers = [
        NetworkTier(**(t.model_dump() | {"bandwidth_bytes_per_s": t.bandwidth_bytes_per_s * scale}))
        for t in cluster.tiers
    ]
    return cluster.model_copy(update={"tiers": tiers})


@pytest.fixture(scope="session")
def solved():
    """Every shipped task solved by CP-SAT (3 s limit): {task: (problem, plan)}."""
    from planner.llm.problem import load_problem
    from solvers import SOLVERS, SolveOptions

    plans = {}
    for path in LLM_TASKS:
        problem = load_problem(path)
        result = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=3))
        plans[path.stem] = (problem, result.plan)
    return plans


@pytest.fixture
def gpt3():
    return load_model("gpt3-175b")


@pytest.fixture
def llama3_70b():
    return load_model("llama3-70b")


__all__ = ["PROBLEMS", "ROOT", "small_model", "make_problem", "with_bandwidth", "Framework"]
