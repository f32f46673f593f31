"""`planner report`: the HTML report of a training task or a sweep result, as a specification.

The pipeline timeline behind the Gantt chart is checked by hand and against the cost model's
pipeline time; the report's charts are read back from the page's figure JSON and compared with
the cost model's numbers; a real headless Chromium (Debian's package, installed by .ci/run) loads
the page and must draw every chart without a console message (skipped, saying so, when Chromium
is absent, unless PLANNER_REQUIRE_CHROMIUM=1 as .ci/run sets it when its install succeeded).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from planner.cli import main
from planner.report.html.page import Section, render_page
from planner.report.html.schedule import op_order, simulate, timeline
from planner.report.html.training import MAX_GANTT_OPS, drawn_ops, gantt_figure

FIXTURES = Path(__file__).parent / "report_fixtures"
SWEEP = FIXTURES / "sweep-small.json"
GIB = 2.0**30


def formula(forward, backward, m, v):
    """planner.llm.cost.pipeline's T = m max t + (sum t - max t) / v, written out for the tests."""
    t = [f + b for f, b in zip(forward, backward)]
    return m * max(t) + (sum(t) - max(t)) / v


def figures(html: str) -> dict[str, dict]:
    """The page's figures by chart name (the data-chart attribute of each chart's div)."""
    block = re.search(r'<script type="application/json" id="figures">(.*?)</script>', html, re.DOTALL).group(1)
    names = dict(re.findall(r'<div class="chart" id="(chart-\d+)" data-chart="([^"]*)">', html))
    return {names[f["id"]]: f["figure"] for f in json.loads(block)}


# ---------------------------------------------------------------- the pipeline timeline


def test_two_stage_1f1b_by_hand():
    """p = 2, m = 2, F = 1 s, B = 2 s on both stages. Stage 0: F0 [0,1], F1 [1,2], idle until
    stage 1 returns B0 at 1+1+2 = 4, B0 [4,6], B1 [7,9] (stage 1 runs F1 [4,5]... no: stage 1 runs
    F0 [1,2], B0 [2,4], F1 [4,5], B1 [5,7]); stage 0's B1 starts at 7 and ends at 9 =
    (m + p - 1)(F + B) = 3 * 3."""
    ops = simulate([1.0, 1.0], [2.0, 2.0], [0.0, 0.0], 2, 1)
    got = {(o.stage, o.kind, o.micro_batch): (o.start_s, o.end_s) for o in ops}
    assert got == {
        (0, "forward", 0): (0, 1), (0, "forward", 1): (1, 2), (0, "backward", 0): (4, 6), (0, "backward", 1): (7, 9),
        (1, "forward", 0): (1, 2), (1, "backward", 0): (2, 4), (1, "forward", 1): (4, 5), (1, "backward", 1): (5, 7),
    }


@pytest.mark.parametrize("p,v,m", [(1, 1, 3), (2, 1, 1), (4, 1, 8), (8, 1, 3), (4, 2, 8), (4, 4, 4), (3, 3, 9),
                                   (8, 4, 48)])
def test_equal_stages_end_at_the_priced_pipeline_time(p, v, m):
    forward, backward = [0.3] * p, [0.7] * p
    ops = simulate(forward, backward, [0.1] * p, m, v)
    assert max(o.end_s for o in ops) == pytest.approx(formula(forward, backward, m, v), rel=1e-12)


@pytest.mark.parametrize("m", [1, 4, 8, 33])
def test_slowest_last_stage_ends_at_the_priced_pipeline_time(m):
    """1F1B, uneven stages, the last the slowest (the head and the loss sit there): still exact.
    The first micro-batch's forwards reach the last stage after sum F_i (i < p-1); it then never
    waits (the others send faster than it consumes) and runs m (F + B); the last backward returns
    through sum B_i (i < p-1): T = m t_last + sum_(i < p-1) t_i."""
    forward, backward = [1.2, 1.0, 0.7, 1.3], [2.1, 2.0, 2.3, 2.6]
    ops = simulate(forward, backward, [0.0] * 4, m, 1)
    assert max(o.end_s for o in ops) == pytest.approx(formula(forward, backward, m, 1), rel=1e-12)


def test_interleaved_uneven_stages_may_end_after_the_formula():
    """With chunks and uneven stages a chunk can wait on a slower neighbour: the timeline ends
    after T although the slowest stage is the last (the report prints both numbers)."""
    forward, backward = [0.9, 1.0, 0.9, 1.1], [2.0, 2.3, 2.0, 2.2]
    ops = simulate(forward, backward, [0.0] * 4, 8, 2)
    assert max(o.end_s for o in ops) == pytest.approx(31.15) and formula(forward, backward, 8, 2) == pytest.approx(30.95)


@pytest.mark.parametrize("p,v,m", [(4, 1, 8), (4, 2, 8), (3, 3, 6)])
def test_every_operation_once_in_order_without_overlap(p, v, m):
    forward = [1.0 + 0.1 * i for i in range(p)]
    backward = [2.0 - 0.05 * i for i in range(p)]
    recompute = [0.5] * p
    ops = simulate(forward, backward, recompute, m, v)
    for i in range(p):
        mine = sorted((o for o in ops if o.stage == i), key=lambda o: o.start_s)
        for a, b in itertools.pairwise(mine):
            assert b.start_s >= a.end_s - 1e-12  # one operation at a time per rank
        for kind, per in (("forward", 1), ("backward", 1), ("recompute", 1)):
            units = {(o.micro_batch, o.chunk) for o in mine if o.kind == kind}
            assert len([o for o in mine if o.kind == kind]) == m * v * per and len(units) == m * v
        for o in mine:  # a chunk's share of the stage time
            expected = {"forward": forward[i], "recompute": recompute[i], "backward": backward[i] - recompute[i]}
            assert o.end_s - o.start_s == pytest.approx(expected[o.kind] / v)
    end = {(o.kind, o.micro_batch, o.chunk * p + o.stage): o for o in ops}
    for (kind, mb, g), o in end.items():  # the data dependencies
        if kind == "forward" and g:
            assert o.start_s >= end[("forward", mb, g - 1)].end_s - 1e-12
        if kind == "recompute":
            after = end[("forward", mb, g)] if g == p * v - 1 else end[("backward", mb, g + 1)]
            assert o.start_s >= after.end_s - 1e-12


def test_megatron_warm_up_counts():
    """1F1B: rank i runs p - i - 1 forwards before its first backward (after one more forward);
    interleaved: (p - i - 1) * 2 + (v - 1) * p chunk forwards."""
    def warm(order):
        first_b = next(k for k, (kind, _, _) in enumerate(order) if kind == "B")
        return first_b - 1
    assert [warm(op_order(4, 1, 8, i)) for i in range(4)] == [3, 2, 1, 0]
    assert [warm(op_order(4, 2, 8, i)) for i in range(4)] == [10, 8, 6, 4]


def test_slowest_first_stage_differs_from_the_formula_and_says_so():
    """With the first stage the slowest, a 1F1B step with these times ends before the priced
    T = m max t + (sum t - max t): the formula charges the whole fill and drain of the other
    stages. The report draws the timeline and prints both (see plan_sections)."""
    forward, backward = [1.5, 1.0, 1.0, 1.0], [3.0, 2.0, 2.0, 2.0]
    ops = simulate(forward, backward, [0.0] * 4, 8, 1)
    assert max(o.end_s for o in ops) == pytest.approx(40.5)
    assert formula(forward, backward, 8, 1) == pytest.approx(45.0)


def test_cap_keeps_the_first_and_last_micro_batches():
    ops = simulate([1.0] * 8, [2.0] * 8, [0.0] * 8, 64, 1)

    class TL:
        pass
    tl = TL()
    tl.ops, tl.num_micro_batches = ops, 64
    drawn, spans, note = drawn_ops(tl, cap=300)
    assert len(drawn) <= 300 and spans and "left out" in note
    kept = sorted({o.micro_batch for o in drawn})
    assert kept[0] == 0 and kept[-1] == 63 and kept == [*range(len(kept) // 2), *range(64 - len(kept) // 2, 64)]
    assert drawn_ops(tl, cap=len(ops)) == (ops, [], "")


# ---------------------------------------------------------------- a training report


@pytest.fixture(scope="module")
def training_report(tmp_path_factory):
    """GPT-3 175B on 1024 A100: the greedy plan (8 stages x 4 chunks, 48 micro-batches) and the
    published Megatron plan (16 stages, 192 micro-batches: 9,216 operations, over the cap)."""
    out = tmp_path_factory.mktemp("report") / "gpt3.html"
    code = main(["report", "gpt3-175b-1024xa100", "--solvers", "greedy,fsdp-only", "--plan", "gpt3-175b-megatron",
                 "-o", str(out)])
    assert code == 0
    return out.read_text()


@pytest.fixture(scope="module")
def priced():
    from planner.cli.common import load_task
    from planner.llm.cost.step import evaluate
    from planner.llm.problem import load_plan

    problem = load_task("gpt3-175b-1024xa100")
    plan = load_plan("gpt3-175b-megatron")
    return problem, plan, evaluate(problem, plan)


def test_one_self_contained_file(training_report):
    html = training_report
    assert html.count("* plotly.js v") == 1  # the library inlined once
    assert not re.search(r"<script[^>]+src=", html) and "<link" not in html  # nothing fetched
    assert len(html) < 7 * 2**20
    assert list(figures(html)) == ["breakdown", "gantt:greedy", "memory:greedy",
                                   "gantt:plan gpt3-175b-megatron", "memory:plan gpt3-175b-megatron"]
    assert "INFEASIBLE" in html and "fsdp-only: no plan of this rule fits in memory" in html


def test_breakdown_bars_sum_to_each_step(training_report, priced):
    fig = figures(training_report)["breakdown"]
    labels = fig["data"][0]["x"]
    assert labels == ["greedy", "fsdp-only", "plan gpt3-175b-megatron"]
    totals = [sum(trace["y"][k] or 0.0 for trace in fig["data"]) for k in range(len(labels))]
    assert totals[2] == pytest.approx(priced[2].step_time_s, rel=1e-6)
    assert totals[1] == 0 and fig["layout"]["annotations"][0]["text"] == "INFEASIBLE"
    assert {t["name"] for t in fig["data"]} <= {p.removesuffix("_s") for p in priced[2].PARTS}


def test_gantt_ends_at_the_priced_pipeline_time(training_report, priced):
    """The published plan's slowest stage is its last: the drawn schedule's last operation ends
    at the pipeline time the cost model priced (the step less what follows the pipeline)."""
    b = priced[2]
    fig = figures(training_report)["gantt:plan gpt3-175b-megatron"]
    ops = [t for t in fig["data"] if t["name"] in ("forward", "recompute", "backward")]
    end = max(base + x for t in ops for base, x in zip(t["base"], t["x"]))
    pipeline_s = b.step_time_s - b.dp_exposed_s - b.embedding_sync_s - b.optimizer_s
    assert end == pytest.approx(pipeline_s, rel=1e-6)
    assert fig["layout"]["shapes"][0]["x0"] == pytest.approx(pipeline_s, rel=1e-12)
    assert sum(len(t["x"]) for t in ops) <= MAX_GANTT_OPS
    assert "9,216 operations; drawn: micro-batches 0-" in training_report
    bubbles = next(t for t in fig["data"] if t["name"] == "bubble (idle)")
    assert min(bubbles["x"]) > 0
    assert fig["layout"]["yaxis"]["categoryarray"] == [f"stage {i}" for i in range(16)]


def test_timeline_of_a_priced_plan_matches_the_cost_model(priced):
    from planner.report.html.training import stage_recompute_s

    problem, plan, b = priced
    tl = timeline(b, stage_recompute_s(problem, plan, b.num_micro_batches), plan.virtual_stages)
    assert tl.exact and tl.makespan_s == pytest.approx(b.step_time_s - b.dp_exposed_s - b.embedding_sync_s
                                                       - b.optimizer_s, rel=1e-9)
    recompute = [o for o in tl.ops if o.kind == "recompute"]
    assert len(recompute) == 16 * 192  # full recompute: every backward starts by re-running the forward
    fig, note = gantt_figure(tl, b.step_time_s, cap=len(tl.ops))
    assert note == "" and sum(len(t["x"]) for t in fig["data"] if t["name"] != "bubble (idle)") == len(tl.ops)


def test_memory_bars_are_the_stage_memory(training_report, priced):
    b = priced[2]
    fig = figures(training_report)["memory:plan gpt3-175b-megatron"]
    bars = [t for t in fig["data"] if t["type"] == "bar"]
    for k, stage in enumerate(b.stages):
        assert sum(t["y"][k] for t in bars) == pytest.approx(stage.memory_bytes / GIB, rel=1e-6)
    lines = {t["name"].split(" ")[0]: t["y"][0] for t in fig["data"] if t["type"] == "scatter"}
    assert lines["usable"] == pytest.approx(b.stages[0].capacity_bytes / GIB, rel=1e-6)
    assert lines["HBM"] == pytest.approx(74.51, abs=0.01)


def test_no_fitting_plan_draws_the_fastest_and_says_so(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", "gpt3-175b-1024xa100", "--solvers", "fsdp-only", "--plan", str(tmp_path / "p.yaml"),
                 "-o", str(out)]) == 2  # the plan file is missing: refused before any work
    (tmp_path / "p.yaml").write_text("tp: 8\npp: 2\ndp: 64\nmicro_batch_size: 1\nrecompute: none\n")
    assert main(["report", "gpt3-175b-1024xa100", "--solvers", "fsdp-only", "--plan", str(tmp_path / "p.yaml"),
                 "-o", str(out)]) == 0
    html = out.read_text()
    assert "No plan fits" in html and "does not fit" in html
    assert list(figures(html)) == ["breakdown", f"gantt:plan {tmp_path / 'p.yaml'}",
                                   f"memory:plan {tmp_path / 'p.yaml'}"]


def test_a_schedule_too_large_to_simulate_is_a_note(tmp_path, monkeypatch):
    """Beyond MAX_SIMULATED_OPS (2 x stages x micro-batches x chunks) the Gantt chart is replaced
    by a note saying how many operations it would have; the memory chart stays."""
    from planner.report.html import training

    monkeypatch.setattr(training, "MAX_SIMULATED_OPS", 1000)
    out = tmp_path / "r.html"
    assert main(["report", "gpt3-175b-1024xa100", "--solvers", "greedy", "-o", str(out)]) == 0
    html = out.read_text()
    assert list(figures(html)) == ["breakdown", "memory:greedy"]
    assert "8 stages x 48 micro-batches x 4 chunks are 3,072 operations, more than the 1,000" in html


# ---------------------------------------------------------------- a sweep report


def test_sweep_report_draws_the_front(tmp_path, capsys):
    out = tmp_path / "sweep.html"
    assert main(["report", str(SWEEP), "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["charts"] == ["pareto"]
    html = out.read_text()
    fig = figures(html)["pareto"]
    doc = json.loads(SWEEP.read_text())
    front = {s["name"] for s in doc["scenarios"] if s["pareto"]}
    drawn = {name: trace["name"] for trace in fig["data"] for name in trace["text"]}
    assert {n for n, group in drawn.items() if group == "Pareto front"} == front
    assert "b200-256" not in drawn  # no plan: listed, not drawn
    assert html.count("<tr>") == 1 + len(front) + 1 + len(doc["scenarios"])
    assert "6 on the Pareto front" in html


def test_real_sweep_output_is_read():
    """The output of `planner sweep llama3-70b-h100-h200-b200 --time-limit 3 -o FILE` (30 scenarios,
    5 on the front; recorded) and a document made of planner.sweep's own rows (so that a field the
    sweep renames or retypes fails here) both parse, every field this report draws intact."""
    from planner.report.html.sweep import parse_sweep
    from planner.sweep.run import OBJECTIVES, Row
    from planner.sweep.spec import Scenario

    recorded = json.loads((FIXTURES / "sweep-llama3-70b-h100-h200-b200.json").read_text())
    result = parse_sweep(recorded, "recorded")
    assert len(result.scenarios) == 30 and sum(s.pareto for s in result.scenarios) == 5
    rows = [Row(Scenario(0, "a", {"num_devices": 64}, "list"), "OPTIMAL", step_time_s=2.0, gap=0.0,
                tokens_per_s=5e5, usd_per_mtok=0.5, kwh_per_mtok=0.1, plan="TP8 CP1 PP1 DP8(ZeRO-1) mbs1 rc:none",
                pareto=True),
            Row(Scenario(1, "b", {"num_devices": 128}, "list", invalid="bad"), "INVALID", reason="bad")]
    made = parse_sweep({"kind": "sweep", "objectives": list(OBJECTIVES), "scenarios": [r.as_json() for r in rows]},
                       "made")
    first = made.scenarios[0]
    assert (first.name, first.step_time_s, first.usd_per_mtok, first.kwh_per_mtok, first.pareto) == \
        ("a", 2.0, 0.5, 0.1, True)
    assert made.scenarios[1].step_time_s is None and made.objectives == list(OBJECTIVES)


def test_sweep_tables_escape_names(tmp_path):
    doc = json.loads(SWEEP.read_text())
    doc["scenarios"][0]["name"] = "</script><script>alert(1)</script>"
    (tmp_path / "s.json").write_text(json.dumps(doc))
    assert main(["report", str(tmp_path / "s.json"), "-o", str(tmp_path / "s.html")]) == 0
    html = (tmp_path / "s.html").read_text()
    assert "<script>alert(1)" not in html and "&lt;/script&gt;&lt;script&gt;alert(1)" in html
    names = [n for trace in figures(html)["pareto"]["data"] for n in trace["text"]]
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in names  # Plotly shows the entities as text


# ---------------------------------------------------------------- a DLRM task


def test_dlrm_report_draws_the_methods_and_every_rank(tmp_path):
    """MLPerf DLRM-DCNv2 on 8 H100: the breakdown bars sum to each method's step; the chosen
    plan's per-rank lookup bytes and embedding memory are the cost model's RankLoads."""
    from planner.cli.common import load_task
    from planner.recsys.loads import plan_loads
    from solvers import SolveOptions
    from solvers.recsys import solve_recsys

    out = tmp_path / "dlrm.html"
    assert main(["report", "mlperf-dlrm-dcnv2-8xh100", "--solvers", "greedy,row-wise", "-o", str(out)]) == 0
    figs = figures(out.read_text())
    assert list(figs) == ["breakdown", "lookups:row-wise", "memory:row-wise"]  # row-wise is the faster here
    problem = load_task("mlperf-dlrm-dcnv2-8xh100")
    results = solve_recsys(problem, ["greedy", "row-wise"], SolveOptions(time_limit_s=10))
    bars = figs["breakdown"]["data"]
    for k, r in enumerate(results):
        assert sum(t["y"][k] for t in bars) == pytest.approx(r.breakdown.step_time_s * 1e3, rel=1e-6)
    loads = plan_loads(problem, results[1].plan)
    fwd, bwd = figs["lookups:row-wise"]["data"]
    assert fwd["y"] == pytest.approx(list(loads.lookup_fwd_bytes / GIB), rel=1e-6)
    assert bwd["y"] == pytest.approx(list(loads.lookup_bwd_bytes / GIB), rel=1e-6)
    shards, rest, usable = figs["memory:row-wise"]["data"]
    assert max(a + b for a, b in zip(shards["y"], rest["y"])) == pytest.approx(
        results[1].breakdown.peak_memory_bytes / GIB, rel=1e-6)
    assert usable["y"][0] == pytest.approx(results[1].breakdown.memory_capacity_bytes / GIB, rel=1e-6)


# ---------------------------------------------------------------- an inference task


def test_serving_report_draws_the_front_and_the_chosen_deployment(tmp_path):
    """Llama-3 70B on 8 H100 at TPOT <= 50 ms: the front of `planner solve --pareto`, the chosen
    deployment (the search's optimum) on it, and the TPOT target as a line."""
    from planner.cli.common import load_task
    from solvers.serving import solve_serving

    out = tmp_path / "serving.html"
    assert main(["report", "llama3-70b-8xh100-serving", "-o", str(out)]) == 0
    fig = figures(out.read_text())["serving-pareto"]
    front, chosen = fig["data"]
    result = solve_serving(load_task("llama3-70b-8xh100-serving"), None, pareto=True)
    assert front["x"] == pytest.approx([p.estimate.tpot_s * 1e3 for p in result.pareto])
    assert chosen["y"] == pytest.approx([result.objective_tokens_per_s_per_gpu])
    assert chosen["y"][0] in front["y"] and chosen["x"][0] <= 50.0
    assert fig["layout"]["shapes"][0]["x0"] == pytest.approx(50.0)


# ---------------------------------------------------------------- in a real browser

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("PLANNER_REQUIRE_CHROMIUM") == "1":
        pytest.fail("PLANNER_REQUIRE_CHROMIUM=1 but no chromium on PATH")
    pytest.skip("chromium not installed (.ci/run installs Debian's package: apt-get install chromium)")


def load_in_browser(page: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """The DOM after load and the console messages of one page in headless Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), *BROWSER_FLAGS, f"--user-data-dir={profile}", "--dump-dom"]
        if screenshot is not None:
            command += [f"--screenshot={screenshot}", "--window-size=1280,2000"]
        done = subprocess.run([*command, page.as_uri()], check=False, capture_output=True, text=True, timeout=60)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def problems_of(dom: str, console: list[str]) -> list[str]:
    """Why a loaded report is broken: console messages, script errors, charts not drawn."""
    found = [f"console: {line}" for line in console]
    errors = re.search(r'<body[^>]*data-errors="([^"]*)"', dom)
    if errors:
        found.append(f"script error: {errors.group(1)}")
    starts = [(m.group(1), m.start()) for m in re.finditer(r'<div[^>]* id="(chart-\d+)"', dom)]
    charts = [chart_id for chart_id, _ in starts]
    if not charts:
        found.append("no chart on the page")
    for k, (chart_id, start) in enumerate(starts):
        end = starts[k + 1][1] if k + 1 < len(starts) else len(dom)
        if 'class="main-svg"' not in dom[start:end]:
            found.append(f"{chart_id} not drawn")
    rendered = re.search(r'<body[^>]*data-charts-rendered="(\d+)"', dom)
    if not rendered or int(rendered.group(1)) != len(charts):
        found.append(f"{rendered.group(1) if rendered else 'no'} of {len(charts)} charts reported drawn")
    return found


def test_report_renders_in_chromium(tmp_path):
    """Every chart of a training report is drawn (its SVG is in the DOM after load), nothing is
    written to the console, and a screenshot comes out."""
    page = tmp_path / "report.html"
    assert main(["report", "llama3-70b-64xh100", "--solvers", "greedy,megatron-rules", "-o", str(page)]) == 0
    shot = tmp_path / "report.png"
    dom, console = load_in_browser(page, shot)
    assert problems_of(dom, console) == []
    assert len(re.findall(r'<div[^>]* id="chart-\d+"', dom)) == 3
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_a_broken_page_fails_the_check(tmp_path):
    """The check above is not vacuous: a page with a chart whose figure is missing and a script
    that throws is reported as broken (a stand-in for plotly.js keeps this page small)."""
    stub = ("window.Plotly = {newPlot: function (id) { document.getElementById(id).innerHTML = "
            "'<svg class=\"main-svg\"></svg>'; return Promise.resolve(); }};")
    sections = [Section("a", figure={"data": [], "layout": {}}, chart_name="a"),
                Section("b", figure={"data": [], "layout": {}}, chart_name="b")]
    html = render_page("broken", [], sections, js=stub)
    broken = tmp_path / "broken.html"
    html = html.replace('{"id":"chart-1"', '{"id":"chart-9"').replace("</body>", "<script>noSuchFunction();</script></body>")
    broken.write_text(html)
    found = problems_of(*load_in_browser(broken))
    assert any("chart-1 not drawn" in p for p in found)
    assert any("noSuchFunction" in p for p in found)
