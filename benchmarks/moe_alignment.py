"""Benchmark: what the exact search's restriction to aligned stage partitions excludes for MoE
models (planner.llm.candidates.Alignment).

Two measurements:
  1. Partitions: for each MoE preset, how many stage partitions (stages of whole chunks of v
     layers) are aligned, out of all of them, at a few pipeline depths.
  2. Optima: on random small MoE instances (the generator of tests/test_moe_search.py), the
     exhaustive oracle over the aligned partitions against the oracle over every partition
     (the MoE blocks of each stage counted by planner.llm.cost.blocks.layer_mix), same space
     otherwise: how often, and by how much, the best plan is outside the aligned space.

Run by hand:  .venv/bin/python benchmarks/moe_alignment.py [--instances 200]
Results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import planner.llm.candidates as candidates_module
import planner.llm.space as space_module
import planner.llm.stage_tables as stage_tables_module
import solvers.exhaustive as exhaustive_module
from planner.llm.candidates import Alignment, alignment
from planner.llm.problem import load_model
from solvers import SOLVERS

PRESETS = ["deepseek-v2", "deepseek-v3", "kimi-k2", "llama4-maverick", "mixtral-8x7b", "mixtral-8x22b",
           "qwen3-30b-a3b", "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b"]


def partitions() -> None:
    print("| model | L | P | K | v | PP | partitions | aligned | excluded |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in PRESETS:
        model = load_model(name)
        align = alignment(model)
        L = model.num_layers
        for v in (1, 2):
            if L % v:
                continue
            for pp in (4, 8, 16):
                chunks = L // v
                if chunks < pp:
                    continue
                every = math.comb(chunks - 1, pp - 1)
                units = align.units(L, v)
                extra = align.min_first_units - 1
                aligned = math.comb(units - extra - 1, pp - 1) if units is not None and units - extra >= pp else 0
                share = 100 * (1 - aligned / every)
                print(f"| {model.name} | {L} | {align.period} | {align.deficit} | {v} | {pp} | {every:,} | {aligned:,} "
                      f"| {share:.1f}% |")


def unrestricted():
    """Patches the search so that every partition into chunks of v layers is admitted (the MoE
    blocks per stage still come from layer_mix in the oracle)."""
    free = Alignment(period=1, deficit=0, moe=True)

    def pick(model):
        return free if getattr(model, "family", "dense") == "moe" else Alignment()

    import solvers.diagnose as diagnose_module

    return [mock.patch.object(module, "alignment", pick)
            for module in (candidates_module, space_module, exhaustive_module, stage_tables_module)] + [
        mock.patch.object(diagnose_module, "explain_infeasible", lambda *args, **kwargs: "infeasible")]


def optima(count: int) -> None:
    from hypothesis import HealthCheck, given, settings

    sys.path.insert(0, str(ROOT))
    from tests.test_moe_search import instances

    rows = []

    @settings(max_examples=count, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(instance=instances())
    def run(instance):
        problem, options = instance
        aligned = SOLVERS["exhaustive"].solve(problem, options)
        patches = unrestricted()
        for patch in patches:
            patch.start()
        try:
            every = SOLVERS["exhaustive"].solve(problem, options)
        finally:
            for patch in patches:
                patch.stop()
        if "UNKNOWN" in (aligned.status, every.status):
            return
        align = alignment(problem.model)
        rows.append((problem.model.name, align, aligned, every))

    run()
    print("| models | instances | feasible only outside | both feasible | aligned slower | mean loss | max loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    kinds = {"all MoE (P = 1, K = 0)": lambda a: a.period == 1 and a.deficit == 0,
             "dense prefix (K > 0, P = 1)": lambda a: a.period == 1 and a.deficit > 0,
             "every 2nd layer (P = 2)": lambda a: a.period == 2}
    for label, selects in kinds.items():
        chosen = [r for r in rows if selects(r[1])]
        worse, lost_feasible, losses = 0, 0, []
        for _, _, aligned, every in chosen:
            if every.status == "OPTIMAL" and aligned.status == "INFEASIBLE":
                lost_feasible += 1
            elif every.status == "OPTIMAL" and aligned.status == "OPTIMAL":
                loss = aligned.objective_s / every.objective_s - 1
                losses.append(loss)
                worse += loss > 1e-9
        mean = f"{100 * sum(losses) / len(losses):.2f}%" if losses else "-"
        top = f"{100 * max(losses):.2f}%" if losses else "-"
        print(f"| {label} | {len(chosen)} | {lost_feasible} | {len(losses)} | {worse} | {mean} | {top} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=200)
    args = parser.parse_args()
    print("## Aligned partitions of the MoE presets\n")
    partitions()
    print("\n## Optima: aligned partitions against every partition (exhaustive, small instances)\n")
    optima(args.instances)


if __name__ == "__main__":
    main()
