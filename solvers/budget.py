"""The deadline and Ctrl-C, shared by every phase of a solve.

A solve runs under one `Budget`: an absolute deadline in `time.perf_counter()` seconds and an
interrupted flag. Every phase (enumeration, heuristics, bounds, CP-SAT rounds, the exhaustive
loop) polls `expired()` between units of work and stops early, keeping what it found so far,
so a solver returns its best plan with the bound proven so far instead of running on.

Ctrl-C: `catch_sigint` turns SIGINT into `Budget.interrupt()` for the duration of a solve
(main thread only; the previous handler is restored after). `interrupt()` also stops a running
CP-SAT search (`run_cpsat` solves in a worker thread so that the main thread keeps handling
signals). A KeyboardInterrupt raised anyway (another handler, or a test that raises it from a
phase) is caught by the solver and treated the same way: solvers never let it escape.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

NOTE_INTERRUPTED = "interrupted before any plan was found"


@dataclass
class _Shared:
    interrupted: bool = False
    callbacks: list[Callable[[], None]] = field(default_factory=list)


class Budget:
    """A deadline (perf_counter seconds) and a Ctrl-C flag; sub-budgets share the flag."""

    def __init__(self, deadline: float, shared: _Shared | None = None):
        self.deadline = deadline
        self._shared = shared or _Shared()

    @classmethod
    def for_options(cls, options, start: float) -> Budget:
        """options.deadline if set, else `start` + options.time_limit_s."""
        deadline = options.deadline if options.deadline is not None else start + options.time_limit_s
        return cls(deadline)

    @property
    def interrupted(self) -> bool:
        return self._shared.interrupted

    def interrupt(self) -> None:
        """Ctrl-C: every budget sharing this flag expires; running searches are stopped."""
        self._shared.interrupted = True
        for callback in list(self._shared.callbacks):
            callback()

    def expired(self) -> bool:
        return self._shared.interrupted or time.perf_counter() >= self.deadline

    def remaining(self) -> float:
        """Seconds left (0 when expired or interrupted)."""
        if self._shared.interrupted:
            return 0.0
        return max(0.0, self.deadline - time.perf_counter())

    def until(self, deadline: float) -> Budget:
        """A sub-budget ending at `deadline` or earlier; Ctrl-C stops both."""
        return Budget(min(deadline, self.deadline), self._shared)

    def share(self, fraction: float) -> Budget:
        """A sub-budget with `fraction` of the time left."""
        return self.until(time.perf_counter() + fraction * self.remaining())

    @contextmanager
    def on_interrupt(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call `callback` if Ctrl-C arrives while inside the block."""
        self._shared.callbacks.append(callback)
        try:
            yield
        finally:
            self._shared.callbacks.remove(callback)

    def out_of_time_note(self, time_limit_s: float) -> str:
        """The note of a solver that stopped with no plan."""
        if self.interrupted:
            return NOTE_INTERRUPTED
        return f"no plan found within {time_limit_s:g} s"


@contextmanager
def catch_sigint(budget: Budget) -> Iterator[None]:
    """While inside, Ctrl-C interrupts `budget` instead of raising KeyboardInterrupt.

    Only the main thread can install signal handlers; elsewhere this does nothing (a Ctrl-C
    then reaches the main thread, not the solver). An ignored SIGINT (e.g. a background job of
    a non-interactive shell) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield
        return
    try:
        signal.signal(signal.SIGINT, lambda *_: budget.interrupt())
    except ValueError:  # e.g. an embedded interpreter that forbids it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def run_cpsat(solver: cp_model.CpSolver, model: cp_model.CpModel, budget: Budget) -> int:
    """solver.solve(model) that stops at the budget's deadline or on Ctrl-C.

    The search runs in a worker thread (CP-SAT releases the GIL) while the main thread waits
    and keeps running Python signal handlers; CP-SAT's own SIGINT handler is turned off so
    that Ctrl-C reaches `catch_sigint`. Returns the CP-SAT status.
    """
    remaining = budget.remaining()
    if remaining <= 0:
        return cp_model.UNKNOWN
    solver.parameters.max_time_in_seconds = max(0.01, remaining)
    solver.parameters.catch_sigint_signal = False
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["status"] = solver.solve(model)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    stopped = False
    with budget.on_interrupt(solver.stop_search):
        thread = threading.Thread(target=work, name="cpsat", daemon=True)
        thread.start()
        while thread.is_alive():
            try:
                thread.join(0.02)
                if not stopped and time.perf_counter() >= budget.deadline + 0.05:
                    solver.stop_search()  # presolve can overrun max_time_in_seconds
                    stopped = True
            except KeyboardInterrupt:
                budget.interrupt()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["status"]
