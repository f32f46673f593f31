"""Benchmark: bulk (numpy) pricing of the plan space vs pricing plans one by one.

Run by hand:  .venv/bin/python benchmarks/price_candidates.py
Both paths run the same cost functions; the ratio is measured side by side in one run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.llm.candidates import AXIS_ORDERS, price  # noqa: E402
from planner.llm.cost.step import evaluate  # noqa: E402
from planner.llm.problem import load_problem  # noqa: E402
from planner.llm.space import enumerate_candidates  # noqa: E402

TASKS = ["gpt3-175b-1024xa100", "llama3-70b-64xh100", "llama3-8b-8xh100"]


def main() -> None:
    print(f"{'task':24s} {'candidates':>10s} {'bulk s':>8s} {'bulk /s':>10s} {'one-by-one /s':>14s} {'ratio':>7s}")
    for name in TASKS:
        problem = load_problem(ROOT / "problems" / "tasks" / f"{name}.yaml")
        candidates = enumerate_candidates(problem, axis_orders=list(range(len(AXIS_ORDERS))))
        start = time.perf_counter()
        priced = price(problem, candidates)
        bulk_s = time.perf_counter() - start
        sample = np.random.default_rng(0).choice(len(candidates), size=min(300, len(candidates)), replace=False)
        start = time.perf_counter()
        for i in sample:
            evaluate(problem, candidates.plan(int(i)))
        single_rate = len(sample) / (time.perf_counter() - start)
        bulk_rate = len(candidates) / bulk_s
        print(
            f"{name:24s} {len(candidates):10d} {bulk_s:8.3f} {bulk_rate:10.0f} {single_rate:14.0f} "
            f"{bulk_rate / single_rate:7.0f}x   (fits: {int(priced.fits.sum())})"
        )


if __name__ == "__main__":
    main()
