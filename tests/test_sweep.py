"""`planner sweep`: scenarios, results equal to `planner solve`, cost and energy, the Pareto front.

Small sweeps only: the base task is the conformance catalogue's pipeline-needed problem (8 small
GPUs, solved in about 0.1 s), so every test runs in a few seconds on 2 cores.
"""

from __future__ import annotations

import io
import itertools
import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.core.inputs import load_device
from planner.llm.problem import load_problem
from planner.sweep.pareto import dominates, pareto_flags
from planner.sweep.pricing import COSTS_FILE, load_costs, step_economics
from planner.sweep.spec import load_sweep

from .conftest import PROBLEMS

BASE = PROBLEMS / "catalogue" / "pipeline-needed.yaml"
SMALL = f"""description: small test sweep
task: {BASE}
provider: hyperstack
axes:
  num_devices: [8, 16]
  hbm_scale: [1, 2]
  ib_bandwidth_scale: [1, 2]
"""


def write(tmp_path, text: str, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(path, JSON document, standard error) of SMALL, run once for the tests that only read it."""
    import contextlib

    path = write(tmp_path_factory.mktemp("small"), SMALL)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["sweep", path, "--json"]) == 0
    return path, json.loads(out.getvalue()), err.getvalue()


def sweep_json(capsys, *argv: str) -> dict:
    code = main(["sweep", *argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


# -- the grid ----------------------------------------------------------------------------------


def test_the_shipped_sweep_is_llama3_70b_on_h100_h200_b200_with_and_without_2x_infiniband():
    sweep = load_sweep("llama3-70b-h100-h200-b200")
    assert len(sweep.scenarios) == 3 * 5 * 2
    assert all(s.invalid is None for s in sweep.scenarios)
    devices = {s.problem.cluster.device.name for s in sweep.scenarios}
    assert devices == {"H100-SXM5-80GB", "H200-SXM-141GB", "B200-SXM-180GB"}
    assert {s.problem.cluster.num_devices for s in sweep.scenarios} == {64, 128, 256, 512, 1024}
    assert {s.axes["ib_bandwidth_scale"] for s in sweep.scenarios} == {1, 2}
    assert all(s.problem.model.name.startswith("Llama-3 70B") or "70B" in s.problem.model.name
               for s in sweep.scenarios)


@pytest.mark.parametrize("path", sorted((PROBLEMS / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_loads_with_every_scenario_a_valid_task(path):
    sweep = load_sweep(path.stem)
    assert sweep.scenarios and all(s.invalid is None for s in sweep.scenarios)
    assert sweep.spec.description


def test_the_what_if_sweep_grows_the_nvlink_domain_doubles_nvlink_and_gives_h200_memory():
    sweep = load_sweep("llama3-70b-h100-what-if")
    assert len(sweep.scenarios) == 8
    last = sweep.scenarios[-1].problem.cluster
    assert last.tiers[0].size == 72 and last.devices_per_node == 64
    assert last.tiers[0].bandwidth_bytes_per_s == pytest.approx(900e9)
    assert last.device.hbm_bytes == pytest.approx(141e9) and last.device.name == "H100-SXM5-80GB"


def test_the_grid_is_the_cartesian_product_in_a_fixed_order(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    combos = [(s.axes["num_devices"], s.axes["hbm_scale"], s.axes["ib_bandwidth_scale"]) for s in sweep.scenarios]
    assert combos == list(itertools.product([8, 16], [1, 2], [1, 2]))
    assert len({s.name for s in sweep.scenarios}) == 8
    assert sweep.scenarios[0].name == "8gpu hbm1x ib1x"


def test_each_axis_changes_what_it_names_and_nothing_else(tmp_path):
    path = write(tmp_path, f"""task: {BASE}
provider: hyperstack
axes:
  device: [h200-sxm-141gb]
  nvlink_domain_size: [16]
  nvlink_bandwidth_scale: [2]
  ib_bandwidth_scale: [3]
  hbm_scale: [0.5]
  global_batch_size: [32]
""")
    base = load_problem(BASE)
    (s,) = load_sweep(path).scenarios
    c, b = s.problem.cluster, base.cluster
    h200 = load_device("h200-sxm-141gb")
    assert c.device.name == h200.name and c.device.hbm_bytes == pytest.approx(h200.hbm_bytes * 0.5)
    assert c.tiers[0].size == 16
    assert c.tiers[0].bandwidth_bytes_per_s == pytest.approx(2 * b.tiers[0].bandwidth_bytes_per_s)
    assert c.tiers[1].bandwidth_bytes_per_s == pytest.approx(3 * b.tiers[1].bandwidth_bytes_per_s)
    assert c.tiers[0].latency_s == b.tiers[0].latency_s and c.tiers[1].efficiency == b.tiers[1].efficiency
    assert s.problem.task.global_batch_size == 32 and s.problem.task.seq_len == base.task.seq_len
    assert s.problem.model == base.model and c.num_devices == base.cluster.num_devices


def test_an_impossible_combination_is_a_row_with_its_reason(tmp_path, capsys):
    path = write(tmp_path, f"""task: {BASE}
provider: hyperstack
axes:
  num_devices: [16]
  nvlink_domain_size: [8, 12]
""")
    doc = sweep_json(capsys, path, "--jobs", "1")
    ok, bad = doc["scenarios"]
    assert ok["status"] == "OPTIMAL" and bad["status"] == "INVALID"
    assert "num_devices" in bad["reason"] and "use a multiple of 12" in bad["reason"]
    assert bad["step_time_s"] is None and bad["pareto"] is False


# -- results are the solver's ------------------------------------------------------------------


def test_each_scenario_equals_planner_solve_of_its_task_file(tmp_path, capsys):
    path = write(tmp_path, SMALL)
    doc = sweep_json(capsys, path, "--jobs", "2")
    sweep = load_sweep(path)
    for scenario, row in list(zip(sweep.scenarios, doc["scenarios"]))[::3]:
        task = tmp_path / f"task{scenario.index}.yaml"
        task.write_text(yaml.safe_dump(scenario.document))
        assert load_problem(task).hash == row["problem_hash"]
        assert main(["solve", str(task), "--json", "--workers", "1"]) == 0
        solved = json.loads(capsys.readouterr().out)
        assert row["status"] == solved["status"] == "OPTIMAL"
        assert row["step_time_s"] == pytest.approx(solved["objective_s"], rel=1e-12)
        assert row["tokens_per_s"] == pytest.approx(solved["estimate"]["tokens_per_s"], rel=1e-12)


def test_output_order_and_results_do_not_depend_on_the_pool(small, capsys):
    serial = sweep_json(capsys, small[0], "--jobs", "1")["scenarios"]
    pooled = sweep_json(capsys, small[0], "--jobs", "3")["scenarios"]
    keep = ("name", "status", "step_time_s", "plan", "usd_per_mtok", "kwh_per_mtok", "pareto")
    assert [{k: r[k] for k in keep} for r in serial] == [{k: r[k] for k in keep} for r in pooled]


def test_price_lists_only_change_the_cost_and_are_solved_once(tmp_path, capsys):
    path = write(tmp_path, f"""task: {BASE}
axes:
  provider: [hyperstack, aws, lambda]
""")
    rows = sweep_json(capsys, path)["scenarios"]
    assert len({r["problem_hash"] for r in rows}) == 1
    assert len({r["step_time_s"] for r in rows}) == 1 and len({r["kwh_per_mtok"] for r in rows}) == 1
    prices = {r["provider"]: r["usd_per_gpu_hour"] for r in rows}
    assert prices == {"hyperstack": 3.20, "aws": 6.88, "lambda": 3.99}
    by = {r["provider"]: r["usd_per_mtok"] for r in rows}
    assert by["aws"] / by["hyperstack"] == pytest.approx(6.88 / 3.20)
    assert [r["pareto"] for r in rows] == [True, False, False]


def test_a_device_a_price_list_does_not_price_has_no_cost_and_is_off_the_front(tmp_path, capsys):
    path = write(tmp_path, f"""task: {BASE}
provider: lambda
axes:
  device: [h100-sxm5-80gb, h200-sxm-141gb]
""")
    code = main(["sweep", path])
    out = capsys.readouterr().out
    assert code == 0
    assert "note: price list lambda has no price for H200-SXM-141GB: no cost" in out
    rows = sweep_json(capsys, path)["scenarios"]
    assert rows[1]["usd_per_mtok"] is None and rows[1]["kwh_per_mtok"] is not None
    assert rows[1]["pareto"] is False and rows[0]["pareto"] is True


def test_no_plan_anywhere_exits_3_and_prints_the_reason(tmp_path, capsys):
    path = write(tmp_path, f"""task: {PROBLEMS / "catalogue" / "too-big.yaml"}
provider: hyperstack
axes:
  ib_bandwidth_scale: [1, 2]
""")
    assert main(["sweep", path, "--json"]) == 3
    rows = json.loads(capsys.readouterr().out)["scenarios"]
    assert all(r["status"] == "INFEASIBLE" and "memory" in r["reason"] for r in rows)


# -- cost and energy ---------------------------------------------------------------------------


def test_cost_and_energy_by_hand():
    """64 GPUs at $2.00 per GPU-hour and 700 W for a 10 s step of 1,048,576 tokens:
    $ = 64 x 2 x 10 / 3600 = 0.35556 per step -> 0.33908 per 1M tokens;
    J = 64 x 700 x 10 = 448,000 per step = 0.124444 kWh -> 0.118680 kWh per 1M tokens."""
    e = step_economics(64, 10.0, 1_048_576, 700.0, 2.0)
    assert e.usd_per_step == pytest.approx(0.355556, rel=1e-5)
    assert e.usd_per_mtok == pytest.approx(0.339081, rel=1e-5)
    assert e.joules_per_step == pytest.approx(448_000)
    assert e.kwh_per_mtok == pytest.approx(0.118680, rel=1e-5)
    assert step_economics(64, 10.0, 1_048_576, 700.0, None).usd_per_mtok is None


def test_rows_cost_what_the_formula_says(small):
    rows = small[1]["scenarios"]
    for r in rows:
        gpu_hours = r["num_devices"] * r["step_time_s"] / 3600
        assert r["usd_per_step"] == pytest.approx(gpu_hours * r["usd_per_gpu_hour"])
        assert r["usd_per_mtok"] == pytest.approx(r["usd_per_step"] / (r["tokens_per_step"] / 1e6))
        assert r["kwh_per_step"] == pytest.approx(gpu_hours * r["board_power_w"] / 1000)
        assert r["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / r["step_time_s"], rel=1e-4)


def test_the_price_list_names_its_sources_and_the_datasheet_powers():
    costs = load_costs()
    assert {d.device: d.board_power_w for d in costs.devices}.items() >= {
        "A100-SXM4-80GB": 400, "H100-SXM5-80GB": 700, "H200-SXM-141GB": 700, "B200-SXM-180GB": 1000}.items()
    for p in costs.providers:
        assert "https://" in p.source or "github.com" in p.source, p.provider
        assert p.kind in ("on-demand", "reserved")
    shipped = {load_device(p.stem).name for p in (PROBLEMS / "devices").glob("*.yaml")}
    assert shipped <= {d.device for d in costs.devices}, "every shipped device has a board power"
    assert COSTS_FILE.name == "device_costs.yaml"


# -- the Pareto front --------------------------------------------------------------------------


def brute_force_front(points):
    return [p is not None and not any(q is not None and dominates(q, p) for q in points) for p in points]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.tuples(*[st.integers(0, 6)] * 3)), max_size=40))
def test_the_front_equals_brute_force(points):
    assert pareto_flags(points) == brute_force_front(points)


def test_the_sweeps_front_is_the_non_dominated_rows(small):
    doc = small[1]
    assert doc["objectives"] == ["step_time_s", "usd_per_mtok", "kwh_per_mtok"]
    points = [tuple(r[k] for k in doc["objectives"]) for r in doc["scenarios"]]
    assert [r["pareto"] for r in doc["scenarios"]] == brute_force_front(points)
    assert doc["num_pareto"] == sum(r["pareto"] for r in doc["scenarios"]) >= 1


# -- output ------------------------------------------------------------------------------------


def test_the_json_document_has_the_documented_shape(small):
    doc = small[1]
    assert doc["kind"] == "sweep" and doc["sweep_file"].endswith("sweep.yaml")
    assert doc["axes"] == ["num_devices", "hbm_scale", "ib_bandwidth_scale"]
    row = doc["scenarios"][0]
    for key, kind in {"name": str, "axes": dict, "status": str, "step_time_s": float, "tokens_per_s": float,
                      "usd_per_mtok": float, "kwh_per_mtok": float, "gap": float, "plan": str, "pareto": bool}.items():
        assert isinstance(row[key], kind), key
    assert row["axes"] == {"num_devices": 8, "hbm_scale": 1, "ib_bandwidth_scale": 1}
    assert doc["price_lists"][0]["provider"] == "hyperstack" and doc["price_lists"][0]["read_on"]


def test_the_table_marks_the_front_and_output_writes_the_json(tmp_path, capsys):
    out_file = tmp_path / "sweep.json"
    assert main(["sweep", write(tmp_path, SMALL), "-o", str(out_file)]) == 0
    captured = capsys.readouterr()
    assert "8 scenarios (8 distinct problems to solve, 0 invalid)" in captured.err
    assert "sweep:" not in captured.err, "no progress line when standard error is not a terminal"
    lines = captured.out.splitlines()
    assert lines[4].split()[:4] == ["num_devices", "hbm_scale", "ib_bandwidth_scale", "status"]
    assert any(line.rstrip().endswith("*") for line in lines[6:14])
    assert "Pareto front (by step time):" in captured.out
    assert json.loads(out_file.read_text())["kind"] == "sweep"


def test_json_keeps_standard_error_quiet(small):
    assert small[2] == ""


def test_progress_on_a_terminal_counts_down_and_names_the_fastest():
    from planner.cli.sweep import _Progress
    from planner.sweep.run import Row
    from planner.sweep.spec import Scenario

    stream = io.StringIO()
    progress = _Progress(stream)
    progress(0, 3, None)
    progress(1, 3, Row(Scenario(0, "a", {}, "p"), "OPTIMAL", step_time_s=2.0))
    progress(2, 3, Row(Scenario(1, "b", {}, "p"), "OPTIMAL", step_time_s=1.0))
    progress.clear()
    text = stream.getvalue()
    assert "sweep: 0/3 scenarios done, 3 left" in text
    assert "2/3 scenarios done, 1 left, fastest so far b: 1.000 s" in text
    assert text.endswith("\r")


def test_the_shipped_sweep_runs_and_prints_its_front(tmp_path, capsys):
    """The shipped file at 64 GPUs only (6 of its 30 scenarios, a few seconds): every scenario gets
    a plan, the table and the front are printed. The whole file: README and benchmarks/README.md."""
    text = (PROBLEMS / "sweeps" / "llama3-70b-h100-h200-b200.yaml").read_text()
    assert "  num_devices: [64, 128, 256, 512, 1024]\n" in text
    path = write(tmp_path, text.replace("[64, 128, 256, 512, 1024]", "[64]").replace(
        "task: llama3-70b-64xh100", f"task: {PROBLEMS / 'tasks' / 'llama3-70b-64xh100.yaml'}"))
    assert main(["sweep", path, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "6 scenarios, 6 with a plan" in out and "Pareto front (by step time):" in out
    assert "dgx-b200 64gpu ib2x:" in out.split("Pareto front (by step time):")[1]


def test_ctrl_c_keeps_the_scenarios_done_and_marks_the_rest(tmp_path):
    from planner.cli.common import solve_options
    from planner.cli.sweep import add_parser
    from planner.sweep.run import run_sweep

    parser = __import__("argparse").ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["sweep", "x"])
    seen = []

    def progress(done, total, row):
        if row is not None:
            seen.append(row)
            raise KeyboardInterrupt

    rows, interrupted = run_sweep(load_sweep(write(tmp_path, SMALL)), solve_options(args), load_costs(), 1, progress)
    assert interrupted and len(seen) == 1
    assert rows[0].status == "OPTIMAL" and all(r.status == "NOT_RUN" for r in rows[1:])
    assert all(r.pareto is (r is rows[0]) for r in rows)


def test_shipped_sweeps_are_package_data():
    import fnmatch

    import tomllib

    from .conftest import ROOT

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = [p.relative_to(PROBLEMS).as_posix() for p in (PROBLEMS / "sweeps").glob("*.yaml")]
    assert shipped and all(any(fnmatch.fnmatch(s, g) for g in patterns["planner.presets"]) for s in shipped)
    assert "planner.sweep" in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_the_task_and_presets_may_be_paths_beside_the_sweep_file_or_a_mapping(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "task.yaml").write_text(BASE.read_text())
    (tmp_path / "sub" / "mine.yaml").write_text((PROBLEMS / "clusters" / "dgx-h200.yaml").read_text()
                                                .replace("name: DGX-H200", "name: mine"))
    by_path = load_sweep(write(tmp_path / "sub", "task: task.yaml\nprovider: aws\naxes:\n  cluster: [mine.yaml]\n"))
    (s,) = by_path.scenarios
    assert s.problem.cluster.name == "mine" and s.name == "mine" and s.axes == {"cluster": "mine.yaml"}
    inline = load_sweep(write(tmp_path, "task: {model: llama3-8b, cluster: dgx-h100, num_devices: 8, training: "
                                        "{global_batch_size: 16, seq_len: 1024}}\nprovider: aws\n"
                                        "axes:\n  global_batch_size: [32]\n"))
    assert inline.scenarios[0].problem.task.global_batch_size == 32
    assert inline.scenarios[0].problem.model.name == load_problem(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml").model.name
