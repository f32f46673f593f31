"""The time limit bounds the whole solve and Ctrl-C returns the best plan so far.

Every solver polls one deadline (SolveOptions.deadline, else its start + time_limit_s) in every
phase -- enumeration, heuristics, bounds, CP-SAT rounds, the exhaustive loop -- and turns Ctrl-C
into a result: the best plan found so far with its bound (status FEASIBLE, or HEURISTIC for a
rule of thumb), or UNKNOWN with "interrupted before any plan was found"; never a
KeyboardInterrupt. Ctrl-C is simulated by raising KeyboardInterrupt from a phase (the path taken
when the solver cannot install its SIGINT handler) and by a real SIGINT from a timer thread.
Wall-time limits are generous: they check that a phase stops, not how fast it runs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

import pytest

import solvers.cpsat as cpsat_module
import solvers.exhaustive as exhaustive_module
import solvers.heuristics as heuristics_module
from planner.llm.cost.step import evaluate
from planner.llm.problem import load_model, load_problem
from planner.llm.space import SpaceOptions
from solvers import SOLVERS, SolveOptions, run_solvers

from .conftest import PROBLEMS, make_problem

L405 = PROBLEMS / "tasks" / "llama3-405b-16384xh100.yaml"
L70 = PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml"
SLACK_S = 1.5  # on top of the limit: the last unit of work, result assembly, a loaded CI machine
INTERRUPTED = "interrupted before any plan was found"


@pytest.fixture(scope="module")
def big():
    return load_problem(L405)


@pytest.fixture(scope="module")
def huge():
    """Llama-3 405B on 65,536 GPUs: without the table bounds its CP-SAT rounds take seconds."""
    base = load_problem(L405)
    cluster = base.cluster.model_copy(update={"num_devices": 65536})
    return type(base)(model=base.model, cluster=cluster, task=base.task, source="405b-65536")


@pytest.fixture(scope="module")
def medium():
    return load_problem(L70)


def assert_valid_bound(result):
    assert result.plan is not None and result.objective_s is not None
    assert result.best_bound_s is not None and 0.0 <= result.best_bound_s <= result.objective_s * (1 + 1e-12)
    assert result.gap is not None and 0.0 <= result.gap <= 1.0


@pytest.fixture
def sigint_raises():
    """Python's default Ctrl-C handler, whatever the test runner inherited (a background job of
    a non-interactive shell starts with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def sigint_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


# -- the deadline ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOLVERS))
def test_a_deadline_already_past_returns_at_once_with_no_plan(name, big):
    start = time.perf_counter()
    result = SOLVERS[name].solve(big, SolveOptions(deadline=start - 1.0))
    assert time.perf_counter() - start < SLACK_S
    assert result.plan is None
    assert result.status == "UNKNOWN"
    assert not result.interrupted
    assert any(note.startswith("no plan found within") or "too large" in note for note in result.notes)


def test_one_second_on_405b_16k_returns_in_time_with_a_bound_and_gap(big):
    start = time.perf_counter()
    result = SOLVERS["cpsat"].solve(big, SolveOptions(time_limit_s=1.0))
    assert time.perf_counter() - start < 1.0 + SLACK_S
    assert result.status in ("FEASIBLE", "OPTIMAL")
    assert_valid_bound(result)
    assert evaluate(big, result.plan).fits


def test_the_deadline_overrides_the_time_limit(big):
    start = time.perf_counter()
    # 2 s: long enough for a plan on a loaded 2-core machine, far below the 600 s limit it overrides
    result = SOLVERS["cpsat"].solve(big, SolveOptions(time_limit_s=600, deadline=start + 2.0))
    assert time.perf_counter() - start < 2.0 + SLACK_S
    assert result.plan is not None


def test_a_batch_of_1e8_sequences_solves_in_bounded_time():
    # Divisors of the batch come from its factorization (2^8 5^8), not trial division to 1e8.
    problem = make_problem(num_devices=64, model=load_model("llama3-8b"), global_batch_size=10**8,
                           seq_len=8192)
    start = time.perf_counter()
    result = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=2.0))
    assert time.perf_counter() - start < 2.0 + SLACK_S
    assert result.status in ("FEASIBLE", "OPTIMAL")
    assert_valid_bound(result)
    for name in ("megatron-rules", "fsdp-only", "greedy", "exhaustive"):
        start = time.perf_counter()
        SOLVERS[name].solve(problem, SolveOptions(time_limit_s=2.0))
        assert time.perf_counter() - start < 2.0 + SLACK_S, name


def test_a_wide_batch_range_with_huge_micro_batches_stops_at_the_deadline():
    # A free batch of 1..100,000 sequences with micro-batches up to 2**20 lists ~12,500 sizes x
    # their batches per (PP, v): the enumeration polls the deadline per interleaving depth too.
    from planner.llm.task import BatchRange

    base = make_problem(num_devices=8, model=load_model("llama3-8b"), seq_len=8192)
    task = base.task.model_copy(update={"global_batch_size": BatchRange(min=1, max=100_000)})
    problem = type(base)(model=base.model, cluster=base.cluster, task=task)
    start = time.perf_counter()
    result = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=2.0,
                                                          space=SpaceOptions(max_micro_batch_size=2**20)))
    assert time.perf_counter() - start < 2.0 + SLACK_S
    assert result.plan is not None and problem.task.admits_batch(result.plan.global_batch_size)


@pytest.mark.parametrize("polls", [0, 1, 2, 3, 5, 8])
def test_bounds_cut_short_stay_below_the_full_bounds(medium, polls):
    """Stopped after `polls` polls (between chunks, or inside the memory part), every bound is
    still a valid lower bound: at most the full one, 0 where not reached."""
    from planner.llm.bounds import time_lower_bound, time_lower_bound_within
    from planner.llm.space import enumerate_candidates

    candidates = enumerate_candidates(medium, options=SpaceOptions())
    upper = 10.0
    full = time_lower_bound(medium, candidates, upper)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > polls

    cut, done = time_lower_bound_within(medium, candidates, upper, stop=stop, chunk=4096)
    assert done <= len(candidates)
    assert (cut[done:] == 0).all()
    assert (cut <= full).all()


@pytest.mark.parametrize("stop_after", [0.05, 0.3])
def test_the_exhaustive_oracle_stops_at_the_deadline(stop_after):
    problem = load_problem(PROBLEMS / "catalogue" / "pipeline-needed.yaml")
    space = SpaceOptions(max_virtual_stages=2, max_micro_batch_size=4)
    options = SolveOptions(time_limit_s=stop_after, space=space, max_evaluations=10**8)
    start = time.perf_counter()
    result = SOLVERS["exhaustive"].solve(problem, options)
    assert time.perf_counter() - start < stop_after + SLACK_S
    if result.status == "FEASIBLE":
        assert result.best_bound_s == 0.0 and result.notes
    else:
        assert result.status in ("OPTIMAL", "UNKNOWN")


# -- Ctrl-C, phase by phase (a KeyboardInterrupt raised inside the phase) ------------------------


def _raise(*_args, **_kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_during_the_heuristics_returns_unknown_with_the_note(monkeypatch, medium):
    monkeypatch.setattr(cpsat_module, "best_heuristic", _raise)
    result = SOLVERS["cpsat"].solve(medium, SolveOptions())
    assert result.status == "UNKNOWN" and result.plan is None
    assert result.interrupted
    assert result.notes == [INTERRUPTED]


@pytest.mark.parametrize("phase", ["enumerate_within", "screened_lower_bound_within", "price"])
def test_ctrl_c_before_the_bounds_returns_the_heuristic_plan_with_bound_zero(monkeypatch, medium, phase):
    monkeypatch.setattr(cpsat_module, phase, _raise)
    result = SOLVERS["cpsat"].solve(medium, SolveOptions())
    assert result.status == "FEASIBLE" and result.interrupted
    assert_valid_bound(result)
    if phase != "price":  # no configuration bounded yet: only the trivial bound is known
        assert result.best_bound_s == 0.0 and result.gap == 1.0
    assert result.objective_s == pytest.approx(evaluate(medium, result.plan).step_time_s, rel=1e-9)
    assert any("interrupted" in note for note in result.notes)


def test_ctrl_c_while_building_a_round_keeps_the_pending_bounds(monkeypatch, medium):
    monkeypatch.setattr(cpsat_module, "build_model", _raise)
    # Without the table bounds a round is needed (with them the warm start can prove it alone).
    monkeypatch.setattr(cpsat_module, "TABLE_BOUNDS_FOR_DENSE", False)
    result = SOLVERS["cpsat"].solve(medium, SolveOptions())
    assert result.status == "FEASIBLE" and result.interrupted
    assert_valid_bound(result)
    assert result.best_bound_s > 0  # the bounds of the configurations of the unfinished round


def test_sigint_during_a_cpsat_round_stops_the_search(monkeypatch, huge, sigint_raises):
    real = cpsat_module.run_cpsat
    timers = []

    def interrupted_round(solver, model, budget):
        if not timers:
            timers.append(sigint_after(0.2))
        return real(solver, model, budget)

    monkeypatch.setattr(cpsat_module, "run_cpsat", interrupted_round)
    # Without the table bounds the search takes rounds of hundreds of stages, seconds each
    # (with them the whole search can end within the 0.2 s).
    monkeypatch.setattr(cpsat_module, "TABLE_BOUNDS_FOR_DENSE", False)
    start = time.perf_counter()
    result = SOLVERS["cpsat"].solve(huge, SolveOptions(time_limit_s=60))
    assert time.perf_counter() - start < 30
    assert timers, "no CP-SAT round started"
    assert result.interrupted and result.status == "FEASIBLE"
    assert_valid_bound(result)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


@pytest.mark.parametrize("after_s", [0.0, 0.1, 0.25, 0.5, 0.8])
def test_sigint_at_any_moment_never_escapes(monkeypatch, big, after_s, sigint_raises):
    real = cpsat_module.catch_sigint
    timers = []

    @contextmanager
    def catch_then_fire(budget):
        with real(budget):  # the signal is sent once the solver's handler is in place
            timers.append(sigint_after(after_s))
            yield

    monkeypatch.setattr(cpsat_module, "catch_sigint", catch_then_fire)
    start = time.perf_counter()
    try:
        result = SOLVERS["cpsat"].solve(big, SolveOptions(time_limit_s=60))
    finally:
        for timer in timers:
            timer.join()
    assert time.perf_counter() - start < 30
    assert result.interrupted
    if result.plan is None:
        assert result.status == "UNKNOWN" and result.notes == [INTERRUPTED]
    else:
        assert_valid_bound(result)


def test_an_ignored_sigint_stays_ignored(medium):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        timer = sigint_after(0.05)
        result = SOLVERS["cpsat"].solve(medium, SolveOptions())
        timer.join()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not result.interrupted and result.status == "OPTIMAL"


def test_ctrl_c_in_greedy_returns_its_best_plan_so_far(monkeypatch, medium):
    monkeypatch.setattr(heuristics_module, "_price_all", _raise)
    result = SOLVERS["greedy"].solve(medium, SolveOptions())
    assert result.status == "HEURISTIC" and result.interrupted
    assert result.plan is not None and result.breakdown.fits
    assert result.notes == ["interrupted: best plan so far"]


def test_ctrl_c_in_a_rule_with_no_plan_yet_is_unknown(monkeypatch, medium):
    monkeypatch.setattr(heuristics_module, "price", _raise)
    result = SOLVERS["megatron-rules"].solve(medium, SolveOptions())
    assert result.status == "UNKNOWN" and result.interrupted and result.notes == [INTERRUPTED]


def test_ctrl_c_in_the_exhaustive_loop_returns_the_best_so_far(monkeypatch):
    problem = load_problem(PROBLEMS / "catalogue" / "pipeline-needed.yaml")
    real, calls = exhaustive_module.assemble, []

    def price_then_interrupt(*args):  # the oracle prices configurations in bulk calls
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(exhaustive_module, "assemble", price_then_interrupt)
    options = SolveOptions(space=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=4))
    result = SOLVERS["exhaustive"].solve(problem, options)
    assert result.interrupted
    if result.plan is None:
        assert result.status == "UNKNOWN" and result.notes == [INTERRUPTED]
    else:
        assert result.status == "FEASIBLE" and result.best_bound_s == 0.0
        assert evaluate(problem, result.plan).fits


# -- several solvers, one deadline -------------------------------------------------------------

NAMES = ["cpsat", "megatron-rules", "fsdp-only", "greedy", "exhaustive"]


def test_run_solvers_shares_one_deadline(big):
    start = time.perf_counter()
    rows = run_solvers(big, NAMES, SolveOptions(time_limit_s=2.0))
    assert time.perf_counter() - start < 2.0 + SLACK_S
    assert [name for name, _ in rows] == NAMES
    results = dict(rows)
    assert results["cpsat"].plan is not None
    assert_valid_bound(results["cpsat"])
    assert results["greedy"].plan is not None
    assert results["cpsat"].objective_s <= results["greedy"].objective_s * (1 + 1e-9)


def test_run_solvers_runs_each_heuristic_once(monkeypatch, medium):
    calls = []
    real = heuristics_module.megatron_rules

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    # SOLVERS["megatron-rules"] holds the real rule; greedy and CP-SAT would call the counted one.
    monkeypatch.setattr(heuristics_module, "megatron_rules", counted)
    rows = dict(run_solvers(medium, ["megatron-rules", "fsdp-only", "greedy", "cpsat"], SolveOptions()))
    assert calls == []
    assert rows["cpsat"].status == "OPTIMAL"
    assert rows["cpsat"].stats["heuristic"] is not None


def test_run_solvers_stops_the_rest_on_ctrl_c(monkeypatch, medium):
    monkeypatch.setattr(heuristics_module, "_price_all", _raise)  # Ctrl-C inside greedy
    rows = dict(run_solvers(medium, ["megatron-rules", "greedy", "fsdp-only", "cpsat"], SolveOptions()))
    assert rows["megatron-rules"].status == "HEURISTIC" and not rows["megatron-rules"].interrupted
    assert rows["greedy"].interrupted and rows["greedy"].plan is not None
    for name in ("fsdp-only", "cpsat"):
        assert rows[name].status == "UNKNOWN" and rows[name].notes == ["not run: interrupted"], name


def test_run_solvers_past_the_deadline_runs_nothing(medium):
    rows = run_solvers(medium, NAMES, SolveOptions(deadline=time.perf_counter() - 1))
    for name, result in rows:
        assert result.status == "UNKNOWN" and result.notes == ["not run: time limit"], name


def test_run_solvers_rejects_unknown_names(medium):
    with pytest.raises(ValueError, match="unknown solver 'magic'"):
        run_solvers(medium, ["magic"], SolveOptions())


# -- reproducibility ---------------------------------------------------------------------------


def test_the_same_input_gives_the_same_plan(medium):
    options = SolveOptions(workers=2, seed=0)
    first = SOLVERS["cpsat"].solve(medium, options)
    second = SOLVERS["cpsat"].solve(medium, options)
    assert first.status == second.status == "OPTIMAL"
    assert first.plan.model_dump(exclude={"provenance"}) == second.plan.model_dump(exclude={"provenance"})
    assert first.objective_s == second.objective_s
