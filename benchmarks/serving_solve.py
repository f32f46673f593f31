"""The serving search on the issue's four deployments: solve time (wall and CPU), status, the
plan and its throughput per GPU, beside the two baselines and, where asked, the disaggregated
(prefill/decode) search; the Pareto front's size and its ends.

    .venv/bin/python benchmarks/serving_solve.py [--time-limit 60]

Cases: Llama-3 70B on 8 H100 at TPOT <= 50 ms (the shipped task), Llama-3 405B fp8 on 16 H100
(2 nodes, offline: as many requests as fit, TPOT <= 100 ms), DeepSeek-V3 on 12 x 8 H100 with
prefill/decode disaggregation, Qwen3-235B-A22B on a GB200 NVL72 (shipped tasks).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.cli.common import load_task  # noqa: E402
from planner.serving.cost import evaluate  # noqa: E402
from solvers.serving import baseline_plans, solve_serving, violations  # noqa: E402
from solvers.serving_disagg import solve_disaggregated  # noqa: E402

LLAMA_405B = """\
model: llama3-405b
cluster: dgx-h100
num_devices: 16
inference:
  requests: {input_tokens: 2048, output_tokens: 256}
  weight_precision: fp8
  kv_cache_dtype: fp8
  engine: {name: vllm}
  targets: {tpot_s: 100ms}
"""


def cases(tmp: Path) -> list[tuple[str, str, bool]]:
    path = tmp / "llama3-405b-16xh100-serving.yaml"
    path.write_text(LLAMA_405B)
    return [
        ("Llama-3 70B fp8, 8 x H100, TPOT <= 50 ms", str(ROOT / "problems/tasks/llama3-70b-8xh100-serving.yaml"), True),
        ("Llama-3 405B fp8, 16 x H100, offline, TPOT <= 100 ms", str(path), True),
        ("DeepSeek-V3 fp8, 12 x 8 H100 (SGLang)", str(ROOT / "problems/tasks/deepseek-v3-96xh100-serving.yaml"), True),
        ("Qwen3-235B-A22B fp8, GB200 NVL72", str(ROOT / "problems/tasks/qwen3-235b-nvl72-serving.yaml"), True),
    ]


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    print("| case | method | status | plan | tok/s/GPU | TPOT | TTFT | wall s | CPU s | vs solver |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    fronts = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, disaggregated in cases(Path(tmp)):
            problem = load_task(path)
            result, wall, cpu = timed(lambda: solve_serving(problem, time.perf_counter() + args.time_limit,
                                                            pareto=True))
            best = result.objective_tokens_per_s_per_gpu
            rows = [("search (colocated)", result.status, result.best, wall, cpu)]
            if disaggregated:
                split, wall_d, cpu_d = timed(lambda: solve_disaggregated(problem, time.perf_counter()
                                                                         + args.time_limit))
                rows.append(("search (disaggregated)", split.status, split.best, wall_d, cpu_d))
            for name, plan, _ in baseline_plans(problem):
                if plan is None:
                    rows.append((name, "no plan", None, 0.0, 0.0))
                    continue
                e = evaluate(problem, plan)
                status = "BASELINE" if not violations(problem, e) else "misses " + ",".join(violations(problem, e))
                rows.append((name, status, type("P", (), {"plan": plan, "estimate": e})(), 0.0, 0.0))
            for name, status, priced, w, c in rows:
                if priced is None:
                    print(f"| {label} | {name} | {status} | - | - | - | - | {w:.1f} | {c:.1f} | - |")
                    continue
                e = priced.estimate
                vs = f"{100 * (e.output_tokens_per_s_per_gpu / best - 1):+.1f}%" if best else "-"
                print(f"| {label} | {name} | {status} | {priced.plan.summary()} | {e.output_tokens_per_s_per_gpu:,.1f} "
                      f"| {e.tpot_s * 1e3:.1f} ms | {e.ttft_max_s * 1e3:.0f} ms | {w:.1f} | {c:.1f} | {vs} |")
            front = result.pareto
            if front:
                fronts.append(f"- {label}: {len(front)} points, from {front[0].plan.summary()} at "
                              f"{front[0].estimate.tpot_s * 1e3:.1f} ms / {front[0].throughput_per_gpu:,.1f} tok/s/GPU "
                              f"to {front[-1].plan.summary()} at {front[-1].estimate.tpot_s * 1e3:.1f} ms / "
                              f"{front[-1].throughput_per_gpu:,.1f} tok/s/GPU")
    print()
    print("Pareto fronts (colocated; output tokens/s per GPU against TPOT):")
    print("\n".join(fronts))


if __name__ == "__main__":
    main()
