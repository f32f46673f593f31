"""Improving an embedding-sharding plan by local moves, every candidate priced at once: move one
table- or column-wise table to the ranks (or block) where the step is shortest, sharding types
kept (`rebalance`); exchange two table-wise tables between ranks (`swap`); move one table on a
busiest rank to the option of any sharding type that shortens the step most (`retype`).

A table- or column-wise option loads only its owner ranks (solvers.recsys.model: the same values
wherever it sits), so moving one table changes the busiest rank's lookup times, the largest bytes
any rank sends or receives per tier in the two all-to-alls, and memory at known ranks. For every
candidate place of a table, the search computes those peaks exactly (the owners' sends; the bytes
every rank receives from an owner through the topology's owner map, as in
planner.recsys.loads.Topology.owner_traffic) and hands them to the cost model's own
`step_from_phases` and `a2a_time_from_peaks_s`: the step of every candidate, with nothing
re-derived. A move is taken when it shortens the step, or leaves it equal and lowers the sum over
ranks of the squared busy time (lookups plus twice the output sends: the all-to-all runs forward
and backward) -- which spreads load off ranks that tie for the maximum, so the next move can
shorten the step. Both keys only decrease, so the search ends; it also stops at the deadline.
"""

from __future__ import annotations

import time

import numpy as np

from planner.core import kernels
from planner.recsys.cost import a2a_time_from_peaks_s, dense_cost, step_from_phases
from planner.recsys.loads import RankLoads
from planner.recsys.plan import ShardingPlan, TableSharding
from solvers.recsys.model import Choices

MAX_CANDIDATE_ELEMENTS = 2**24
"""The owner map (ranks x ranks x tiers) and a class's candidates x ranks x tiers arrays must stay
below this many numbers (128 MiB): the search runs up to about 2,900 ranks on two tiers."""


class _State:
    """A plan's per-rank lookup times, memory and all-to-all bytes, kept up to date under moves."""

    def __init__(self, choices: Choices, counts: list[list[int]], dense_index: int):
        problem, topo = choices.problem, choices.topo
        self.choices, self.topo = choices, topo
        total = RankLoads.zeros(topo.world, topo.num_tiers)
        for g, row in zip(choices.groups, counts, strict=True):
            for index, n in enumerate(row):
                if n:
                    single = g.loads(index)
                    for name in RankLoads.ARRAYS:
                        setattr(total, name, getattr(total, name) + n * getattr(single, name))
                    total.dp_table_grad_bytes += n * single.dp_table_grad_bytes
        device = problem.cluster.device
        self.lf = kernels.memory_bound_time_s(total.lookup_fwd_bytes, device)
        self.lb = kernels.memory_bound_time_s(total.lookup_bwd_bytes, device)
        self.memory = total.memory_bytes.copy()
        self.out_send, self.out_recv, self.ids_send, self.ids_recv = (a.copy() for a in total.traffic(topo))
        self.stub = ShardingPlan(dense=choices.dense[dense_index].dense,
                                 tables=[TableSharding(table=choices.groups[0].name, count=choices.groups[0].count,
                                                       sharding="data_parallel")])
        self.dp_bytes = total.dp_table_grad_bytes
        self.dense = dense_cost(problem, self.stub, self.dp_bytes)
        self._cache: dict = {}
        self.capacity = choices.capacity_bytes - choices.dense[dense_index].memory_bytes
        self.rings = np.array([topo.ring(t) for t in range(topo.num_tiers)], dtype=float)
        unit = np.eye(topo.world)
        self.received = np.stack([topo.owner_traffic(unit[o])[1] for o in range(topo.world)])  # [o, r, t]
        rate = np.array([tier.bandwidth_bytes_per_s * tier.efficiency for tier in problem.cluster.tiers])
        self.inverse_rate = 1.0 / rate

    def busy(self, lf, lb, out_send):
        """Per-rank busy time (the spreading key): lookups and twice the slowest tier's output sends."""
        return lf + lb + 2 * (out_send * self.inverse_rate).max(axis=-1)

    def apply(self, owners: np.ndarray, values: dict, sign: float) -> None:
        self.lf[owners] += sign * values["lf"]
        self.lb[owners] += sign * values["lb"]
        self.memory[owners] += sign * values["memory_bytes"]
        out_pay, ids_pay = values["out_payload"], values["ids_payload"]
        self.out_send[owners] += sign * out_pay[:, None] * self.rings
        self.ids_recv[owners] += sign * ids_pay[:, None] * self.rings
        spread = self.received[owners]  # [k, r, t]
        self.out_recv += sign * np.tensordot(out_pay, spread, axes=1)
        self.ids_send += sign * np.tensordot(ids_pay, spread, axes=1)

    def exchanges(self, a: int, b: np.ndarray, d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(step, spreading key change, fits) of exchanging a table-wise table on rank a with one on
        each rank b[c]: rank a's owner values change by d[key][c], rank b[c]'s by -d[key][c]."""
        problem = self.choices.problem
        peaks = {}
        for key, at_owner in (("lf", self.lf), ("lb", self.lb)):
            rest = _max_excluding(at_owner, a, b)
            peaks[key] = np.maximum(rest, np.maximum(at_owner[a] + d[key], at_owner[b] - d[key]))
        rings = self.rings
        sends = {}
        for name, at_owner, pay in (("out", self.out_send, "out_payload"), ("ids", self.ids_recv, "ids_payload")):
            rest = _max_excluding(at_owner, a, b)  # [c, t]
            at_a = at_owner[a][None] + d[pay][:, None] * rings
            at_b = at_owner[b] - d[pay][:, None] * rings
            sends[name] = np.maximum(rest, np.maximum(at_a, at_b))
        shift = self.received[b] - self.received[a][None]  # [c, r, t]: per unit moved from a to b
        out_recv = (self.out_recv[None] - d["out_payload"][:, None, None] * shift).max(axis=1)
        ids_send = (self.ids_send[None] - d["ids_payload"][:, None, None] * shift).max(axis=1)
        out_peak = np.maximum(sends["out"], out_recv)
        ids_peak = np.maximum(sends["ids"], ids_send)
        steps = step_from_phases(problem, self.dense, peaks["lf"], peaks["lb"],
                                 a2a_time_from_peaks_s(problem, out_peak),
                                 a2a_time_from_peaks_s(problem, ids_peak))["step_time_s"]
        fits = ((self.memory[a] + d["memory_bytes"] <= self.capacity)
                & (self.memory[b] - d["memory_bytes"] <= self.capacity))
        before = self.busy(self.lf[a], self.lb[a], self.out_send[a]) ** 2 + self.busy(
            self.lf[b], self.lb[b], self.out_send[b]) ** 2
        after = self.busy(self.lf[a] + d["lf"], self.lb[a] + d["lb"],
                     self.out_send[a][None] + d["out_payload"][:, None] * rings) ** 2 + self.busy(
            self.lf[b] - d["lf"], self.lb[b] - d["lb"], self.out_send[b] - d["out_payload"][:, None] * rings) ** 2
        spreading = after - before
        return np.asarray(steps), spreading, fits

    def _full(self, gi: int, index: int):
        """One table's full loads under option `index` of group gi, as the state keeps them
        (lookup seconds, memory, the four traffic arrays, dense gradient bytes); cached."""
        key = (gi, index)
        if key not in self._cache:
            loads = self.choices.groups[gi].loads(index)
            device = self.choices.problem.cluster.device
            self._cache[key] = (kernels.memory_bound_time_s(loads.lookup_fwd_bytes, device),
                                kernels.memory_bound_time_s(loads.lookup_bwd_bytes, device),
                                loads.memory_bytes, loads.traffic(self.topo), loads.dp_table_grad_bytes)
        return self._cache[key]

    def apply_full(self, gi: int, index: int, sign: float) -> None:
        """Adds (+1) or removes (-1) one table of group gi on option `index`, an option that loads
        many ranks (row-wise, table-row-wise, data-parallel)."""
        lf, lb, memory, traffic, dp_bytes = self._full(gi, index)
        self.lf += sign * lf
        self.lb += sign * lb
        self.memory += sign * memory
        for mine, theirs in zip((self.out_send, self.out_recv, self.ids_send, self.ids_recv), traffic, strict=True):
            mine += sign * theirs
        if dp_bytes:
            self.dp_bytes += sign * dp_bytes
            self.dense = dense_cost(self.choices.problem, self.stub, self.dp_bytes)

    def candidate_full(self, gi: int, index: int) -> tuple[float, bool]:
        """(step, fits) of adding one table of group gi on option `index` (as apply_full)."""
        problem = self.choices.problem
        add_lf, add_lb, memory, traffic, dp_bytes = self._full(gi, index)
        lf, lb = self.lf + add_lf, self.lb + add_lb
        out_send, out_recv, ids_send, ids_recv = (mine + theirs for mine, theirs in zip(
            (self.out_send, self.out_recv, self.ids_send, self.ids_recv), traffic, strict=True))
        dense = self.dense if not dp_bytes else dense_cost(problem, self.stub, self.dp_bytes + dp_bytes)
        step = step_from_phases(problem, dense, lf.max(), lb.max(),
                                a2a_time_from_peaks_s(problem, np.maximum(out_send, out_recv).max(axis=0)),
                                a2a_time_from_peaks_s(problem, np.maximum(ids_send, ids_recv).max(axis=0)))
        return float(step["step_time_s"]), bool((self.memory + memory <= self.capacity).all())

    def step(self) -> float:
        problem = self.choices.problem
        out_peak = np.maximum(self.out_send, self.out_recv).max(axis=0)
        ids_peak = np.maximum(self.ids_send, self.ids_recv).max(axis=0)
        return float(step_from_phases(problem, self.dense, self.lf.max(), self.lb.max(),
                                      a2a_time_from_peaks_s(problem, out_peak),
                                      a2a_time_from_peaks_s(problem, ids_peak))["step_time_s"])

    def candidates(self, owners: np.ndarray, values: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(step, spreading key change, fits) of adding one table with `values` at each row of
        `owners` ([candidates, k] ranks) to the current state."""
        problem = self.choices.problem
        lf = np.maximum(self.lf.max(), (self.lf[owners] + values["lf"]).max(axis=1))
        lb = np.maximum(self.lb.max(), (self.lb[owners] + values["lb"]).max(axis=1))
        spread = self.received[owners].sum(axis=1)  # [c, r, t]: bytes per unit payload at every owner
        out_pay, ids_pay = values["out_payload"][0], values["ids_payload"][0]  # equal at every owner
        out_send_at = self.out_send[owners] + out_pay * self.rings  # [c, k, t]
        out_peak = np.maximum(np.maximum(self.out_send.max(axis=0), out_send_at.max(axis=1)),
                              (self.out_recv + out_pay * spread).max(axis=1))
        ids_recv_at = self.ids_recv[owners] + ids_pay * self.rings
        ids_peak = np.maximum(np.maximum(self.ids_recv.max(axis=0), ids_recv_at.max(axis=1)),
                              (self.ids_send + ids_pay * spread).max(axis=1))
        phases = step_from_phases(problem, self.dense, lf, lb, a2a_time_from_peaks_s(problem, out_peak),
                                  a2a_time_from_peaks_s(problem, ids_peak))
        before = self.busy(self.lf[owners], self.lb[owners], self.out_send[owners])
        after = self.busy(self.lf[owners] + values["lf"], self.lb[owners] + values["lb"], out_send_at)
        spreading = (after**2 - before**2).sum(axis=1)
        fits = (self.memory[owners] + values["memory_bytes"] <= self.capacity).all(axis=1)
        return np.asarray(phases["step_time_s"]) * np.ones(len(owners)), spreading, fits


def _owner_classes(choices: Choices, gi: int) -> list[tuple[list[int], np.ndarray, dict]]:
    """Group gi's classes of table- or column-wise options: (option indices, owner ranks
    [members, k], the owner values in seconds and bytes), while their arrays stay small."""
    device = choices.problem.cluster.device
    g = choices.groups[gi]
    classes: dict[tuple, list[int]] = {}
    for index, (option, item) in enumerate(zip(g.options, g.priced, strict=True)):
        if isinstance(item, tuple):
            classes.setdefault((option.sharding, len(option.ranks)), []).append(index)
    out = []
    for members in classes.values():
        values = g.priced[members[0]][1]
        owned = {"lf": kernels.memory_bound_time_s(values["lookup_fwd_bytes"], device),
                 "lb": kernels.memory_bound_time_s(values["lookup_bwd_bytes"], device),
                 "memory_bytes": values["memory_bytes"], "out_payload": values["out_payload"],
                 "ids_payload": values["ids_payload"]}
        owners = np.stack([g.priced[i][0] for i in members])
        if owners.size * choices.topo.world * choices.topo.num_tiers <= MAX_CANDIDATE_ELEMENTS:
            out.append((members, owners, owned))
    return out


def rebalance(choices: Choices, counts: list[list[int]], dense_index: int, deadline: float) -> list[list[int]]:
    """The plan `counts` (per group and option) with single table- and column-wise tables moved to
    other ranks as the module doc says (sharding types unchanged)."""
    counts = [list(row) for row in counts]
    topo = choices.topo
    if topo.world * topo.world * topo.num_tiers > MAX_CANDIDATE_ELEMENTS:  # the owner map alone is too large
        return counts
    state = _State(choices, counts, dense_index)
    classes = [(gi, *item) for gi in range(len(choices.groups)) for item in _owner_classes(choices, gi)]
    current = state.step()
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for gi, members, owners, values in classes:
            for position, index in enumerate(members):
                while counts[gi][index]:
                    if time.perf_counter() >= deadline:
                        return counts
                    state.apply(owners[position], values, -1)
                    steps, spreading, fits = state.candidates(owners, values)
                    best = int(np.lexsort((spreading - spreading[position], np.round(steps / current, 12), ~fits))[0])
                    better = fits[best] and (steps[best] < current * (1 - 1e-12) or (
                        steps[best] <= current * (1 + 1e-12) and spreading[best] < spreading[position] - 1e-18))
                    if best == position or not better:
                        state.apply(owners[position], values, +1)
                        break
                    state.apply(owners[best], values, +1)
                    counts[gi][index] -= 1
                    counts[gi][members[best]] += 1
                    current = min(current, float(steps[best]))
                    improved = True
    return counts


def _max_excluding(x: np.ndarray, a: int, b: np.ndarray) -> np.ndarray:
    """The largest x over ranks other than a and b[c], per c: x is [ranks] or [ranks, tiers]; the
    result [c] or [c, tiers] (0 where no rank is left; loads are never negative)."""
    order = np.argsort(-x, axis=0)[:3]
    largest = np.take_along_axis(x, order, axis=0)
    others = b[:, None] if x.ndim == 2 else b
    out = np.zeros((len(b), *x.shape[1:]))
    for i in reversed(range(order.shape[0])):
        out = np.where((order[i] != a) & (order[i] != others), largest[i], out)
    return out


def swap(choices: Choices, counts: list[list[int]], dense_index: int, deadline: float) -> list[list[int]]:
    """The plan with pairs of table-wise tables of different groups exchanged between two ranks
    while that shortens the step (or leaves it equal and lowers the spreading key): a move of one
    table cannot balance two loads at once (lookups, and the output bytes its owner sends), an
    exchange can. Every exchange of a table on a busiest rank with every other table-wise table is
    priced at once, exactly: lookups, sends and memory change at the two ranks, the bytes every
    rank receives through the owner map."""
    counts = [list(row) for row in counts]
    topo = choices.topo
    if topo.world * topo.world * topo.num_tiers > MAX_CANDIDATE_ELEMENTS:
        return counts
    state = _State(choices, counts, dense_index)
    table_wise = {}  # group -> (option index per rank, owner values)
    for gi in range(len(choices.groups)):
        for members, owners, values in _owner_classes(choices, gi):
            if owners.shape[1] == 1:
                by_rank = np.full(topo.world, -1)
                by_rank[owners[:, 0]] = members
                table_wise[gi] = (by_rank, {k: float(np.asarray(v)[0]) for k, v in values.items()})
    groups = np.array(sorted(table_wise), dtype=int)
    if not len(groups):
        return counts
    # tables of each table-wise group on each rank (kept up to date under exchanges)
    on_rank = np.array([[counts[gi][i] if i >= 0 else 0 for i in table_wise[gi][0]] for gi in groups])
    per_group = {k: np.array([table_wise[gi][1][k] for gi in groups])
                 for k in ("lf", "lb", "memory_bytes", "out_payload", "ids_payload")}
    current = state.step()
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        row, rank = np.nonzero(on_rank)
        if len(row) < 2:
            return counts
        group = groups[row]
        value = {k: v[row] for k, v in per_group.items()}
        out_rate = state.out_send * state.inverse_rate
        hot = {int(np.argmax(state.lf)), int(np.argmax(state.lb)), *np.argmax(out_rate, axis=0).tolist(),
               int(np.argmax(state.busy(state.lf, state.lb, state.out_send)))}
        for i in np.nonzero(np.isin(rank, list(hot)))[0]:
            if time.perf_counter() >= deadline:
                return counts
            a = int(rank[i])
            j = np.nonzero((rank != a) & (group != group[i]))[0]
            if not len(j):
                continue
            b = rank[j]
            d = {k: value[k][j] - value[k][i] for k in value}  # what rank a gains (rank b loses)
            steps, spreading, fits = state.exchanges(a, b, d)
            best = int(np.lexsort((spreading, np.round(steps / current, 12), ~fits))[0])
            if not fits[best] or not (steps[best] < current * (1 - 1e-12) or (
                    steps[best] <= current * (1 + 1e-12) and spreading[best] < -1e-18)):
                continue
            jb, rb = int(j[best]), int(b[best])
            gi, gj = int(group[i]), int(group[jb])
            for g_, row_, r_from, r_to in ((gi, row[i], a, rb), (gj, row[jb], rb, a)):
                by_rank, owned = table_wise[g_]
                values = {k: np.array([v]) for k, v in owned.items()}
                state.apply(np.array([r_from]), values, -1)
                state.apply(np.array([r_to]), values, +1)
                counts[g_][by_rank[r_from]] -= 1
                counts[g_][by_rank[r_to]] += 1
                on_rank[row_, r_from] -= 1
                on_rank[row_, r_to] += 1
            current = min(current, float(steps[best]))
            improved = True
            break  # the hot ranks changed
    return counts


KICK_SHARE = 20
"""A kick moves one in this many of the placed table-wise tables (at least two) to random ranks."""


def kicked(choices: Choices, counts: list[list[int]], rng) -> list[list[int]]:
    """`counts` with a few table-wise tables moved to random ranks: the perturbation of an iterated
    local search, which the moves above then repair (solvers.recsys.cpsat)."""
    counts = [list(row) for row in counts]
    classes = [(gi, members) for gi in range(len(choices.groups))
               for members, owners, _ in _owner_classes(choices, gi) if owners.shape[1] == 1]
    placed = [(gi, index, members) for gi, members in classes for index in members if counts[gi][index]]
    if not placed:
        return counts
    for gi, index, members in rng.sample(placed, min(len(placed), max(2, len(placed) // KICK_SHARE))):
        counts[gi][index] -= 1
        counts[gi][rng.choice(members)] += 1
    return counts


def fits(choices: Choices, counts: list[list[int]], dense_index: int) -> bool:
    state = _State(choices, counts, dense_index)
    return bool((state.memory <= state.capacity).all())


def step_s(choices: Choices, counts: list[list[int]], dense_index: int) -> float:
    """The cost model's step time of `counts` (through the same phases as `evaluate`)."""
    return _State(choices, counts, dense_index).step()


def retype(choices: Choices, counts: list[list[int]], dense_index: int, deadline: float) -> list[list[int]]:
    """The plan with single tables moved to other sharding types (any option of their group) while
    that shortens the step: the tables on the busiest ranks first (largest load there first), each
    priced at every option at once through the state above, the best move taken; until no table
    on the busiest ranks has a shortening move."""
    counts = [list(row) for row in counts]
    topo = choices.topo
    if topo.world * topo.world * topo.num_tiers > MAX_CANDIDATE_ELEMENTS:
        return counts
    state = _State(choices, counts, dense_index)
    owner = {}  # (group, option) -> (class members, owner ranks, values, position)
    full = []  # per group: its options priced as full loads
    classes_of = []
    for gi, g in enumerate(choices.groups):
        classes = _owner_classes(choices, gi)
        classes_of.append(classes)
        for members, owners, values in classes:
            for position, index in enumerate(members):
                owner[(gi, index)] = (members, owners, values, position)
        full.append([i for i in range(len(g.options)) if (gi, i) not in owner])
    placed = {(gi, index) for gi, row in enumerate(counts) for index, n in enumerate(row) if n}
    current = state.step()
    while time.perf_counter() < deadline:
        busy = state.busy(state.lf, state.lb, state.out_send)
        hot = {int(np.argmax(state.lf)), int(np.argmax(state.lb)), int(np.argmax(busy)),
               *np.argmax(state.out_send * state.inverse_rate, axis=0).tolist()}
        tables = []
        for gi, index in sorted(placed):
            if (gi, index) in owner:
                _, owners, values, position = owner[(gi, index)]
                if any(int(r) in hot for r in owners[position]):
                    tables.append((float(values["lf"].max() + values["lb"].max()), gi, index))
            else:  # a full load touches the busiest ranks too
                lf, lb = state._full(gi, index)[:2]
                tables.append((float((lf + lb)[list(hot)].max()), gi, index))
        tables.sort(key=lambda item: -item[0])
        moved = False
        for _, gi, index in tables:
            if time.perf_counter() >= deadline:
                return counts
            here = owner.get((gi, index))
            if here is not None:
                state.apply(here[1][here[3]], here[2], -1)
            else:
                state.apply_full(gi, index, -1)
            best_step, best = current * (1 - 1e-12), None
            for members, owners, values in classes_of[gi]:
                steps, _, fits = state.candidates(owners, values)
                steps = np.where(fits, steps, np.inf)
                c = int(np.argmin(steps))
                if steps[c] < best_step and members[c] != index:
                    best_step, best = float(steps[c]), ("owner", members, owners, values, c)
            for other in full[gi]:
                if other == index:
                    continue
                step, fits = state.candidate_full(gi, other)
                if fits and step < best_step:
                    best_step, best = step, ("full", other)
            if best is None:  # put it back
                if here is not None:
                    state.apply(here[1][here[3]], here[2], +1)
                else:
                    state.apply_full(gi, index, +1)
                continue
            if best[0] == "owner":
                _, members, owners, values, c = best
                state.apply(owners[c], values, +1)
                target = members[c]
            else:
                target = best[1]
                state.apply_full(gi, target, +1)
            counts[gi][index] -= 1
            counts[gi][target] += 1
            if not counts[gi][index]:
                placed.discard((gi, index))
            placed.add((gi, target))
            current = best_step
            moved = True
            break
        if not moved:
            break
    return counts
