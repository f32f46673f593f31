"""A lower bound on the embedding-sharding optimum from a small relaxation: ranks made
interchangeable.

The exact model (solvers/recsys/cpsat.py) holds a row per rank; summing a family of rows over the
ranks gives its averaged cut (W x the busiest rank's value >= the total over ranks), which every
plan satisfies. Keeping only the averaged cuts (and, per class in use, one table's
load on its busiest rank: Lf >= that rank's lookup time, and a class whose one table overflows a
rank is out), the options of a table that differ only by where
they sit (table-wise on each rank, column-wise on each block, table-row-wise on each host) have
equal totals and merge into one class, so the relaxation has one integer per (table group, class)
-- a few thousand for 856 tables instead of 109,440 -- and CP-SAT solves it quickly. Its optimum
is a valid lower bound of the exact model's (every plan maps to a relaxed solution of no greater
step time), reported when the exact model cannot be solved to optimality in time:
    W Lf >= sum n[g,c] lf_total[g,c]       (likewise Lb)
    W A  >= sum n[g,c] recv_total[g,c,t] + W lat[t] u[t], and the same with the bytes sent, per
            tier (likewise I for the ids)
    sum n[g,c] mem_total[g,c] + W sum_s z[s] dense_mem[s] <= W x usable memory
and the overlap and step rows of the exact model unchanged.
"""

from __future__ import annotations

import time

import numpy as np
from ortools.sat.python import cp_model

from planner.core import kernels
from solvers.recsys.model import Choices

NS = 1e12
QUICK_SHARE = 0.3
"""Of the relaxation's time, the most its first solve (without the single-table cuts) may take."""
BIG = 10**15


def _class(option) -> tuple:
    if option.sharding == "column_wise":
        return (option.sharding, len(option.ranks))
    return (option.sharding,)


def relaxed_bound_s(choices: Choices, time_limit_s: float, workers: int = 2, seed: int = 0) -> float | None:
    """The relaxation's best bound (seconds), or None if it found none in time."""
    return relax(choices, time_limit_s, workers, seed)[0]


def relax(choices: Choices, time_limit_s: float, workers: int = 2, seed: int = 0, deadline: float | None = None):
    """(best bound in seconds or None, the relaxed solution or None): the solution is, per group,
    {option index of a class's first member: tables in that class}, and the dense strategy index.
    (None, None) when `deadline` (perf_counter seconds) passes while the model is built."""
    problem, topo = choices.problem, choices.topo
    world, tiers = topo.world, problem.cluster.tiers
    device = problem.cluster.device
    inverse_bw = [NS / (tier.bandwidth_bytes_per_s * tier.efficiency) for tier in tiers]
    model = cp_model.CpModel()
    lf_terms, lb_terms, mem_terms, dp_terms = [], [], [], []
    traffic = {(k, d, t): [] for k in ("out", "ids") for d in ("send", "recv") for t in range(len(tiers))}
    uses = {(k, t): [] for k in ("out", "ids") for t in range(len(tiers))}
    class_vars = []
    singles = []  # (class in use, one table's busiest-rank lookup fwd, bwd, memory)
    for g in choices.groups:
        if deadline is not None and time.perf_counter() > deadline:
            return None, None
        classes: dict[tuple, int] = {}
        for index, option in enumerate(g.options):
            classes.setdefault(_class(option), index)
        n = [model.new_int_var(0, g.count, f"n_{g.name}_{c}") for c in classes]
        class_vars.append(list(zip(classes.values(), n, strict=True)))
        model.add(sum(n) == g.count)
        for var, index in zip(n, classes.values(), strict=True):
            loads = g.loads(index)
            lf = kernels.memory_bound_time_s(loads.lookup_fwd_bytes, device)
            lb = kernels.memory_bound_time_s(loads.lookup_bwd_bytes, device)
            # single-table cuts: a class in use puts at least one table's load on some rank
            used_class = model.new_bool_var(f"used_{g.name}_{index}")
            model.add(var <= g.count * used_class)
            singles.append((used_class, int(np.floor(float(np.max(lf)) * NS)), int(np.floor(float(np.max(lb)) * NS)),
                            int(np.floor(float(np.max(loads.memory_bytes))))))
            lf_terms.append((var, int(np.floor(float(np.sum(lf)) * NS))))
            lb_terms.append((var, int(np.floor(float(np.sum(lb)) * NS))))
            mem_terms.append((var, int(np.floor(float(np.sum(loads.memory_bytes))))))
            out_send, out_recv, ids_send, ids_recv = loads.traffic(topo)
            for t in range(len(tiers)):
                for key, array in ((("out", "send", t), out_send), (("out", "recv", t), out_recv),
                                   (("ids", "send", t), ids_send), (("ids", "recv", t), ids_recv)):
                    total = int(np.floor(float(array[:, t].sum()) * inverse_bw[t]))
                    if total:
                        traffic[key].append((var, total))
                if (out_send[:, t] + out_recv[:, t]).any():
                    uses[("out", t)].append(var)
                if (ids_send[:, t] + ids_recv[:, t]).any():
                    uses[("ids", t)].append(var)
            if loads.dp_table_grad_bytes:
                dp_terms.append((var, int(np.floor(loads.dp_table_grad_bytes * choices.dp_sync_s_per_byte * NS))))
    z = [model.new_bool_var(f"dense_{s}") for s in range(len(choices.dense))]
    model.add_exactly_one(z)
    new = model.new_int_var
    lf, lb, a, ids = new(0, BIG, "Lf"), new(0, BIG, "Lb"), new(0, BIG, "A"), new(0, BIG, "I")
    model.add(world * lf >= sum(c * v for v, c in lf_terms))
    model.add(world * lb >= sum(c * v for v, c in lb_terms))
    dense_floor = min(int(np.floor(d.memory_bytes)) for d in choices.dense)
    for used_class, _, _, one_mem in singles:
        if one_mem + dense_floor > choices.capacity_bytes:
            model.add(used_class == 0)
    capacity = int(np.floor(choices.capacity_bytes))
    model.add(sum(c * v for v, c in mem_terms)
              + world * sum(int(np.floor(d.memory_bytes)) * zs for d, zs in zip(choices.dense, z, strict=True))
              <= world * capacity)
    num_tables = problem.model.num_tables
    for kind, var_time in (("out", a), ("ids", ids)):
        for t, tier in enumerate(tiers):
            used = model.new_bool_var(f"uses_{kind}_{t}")
            if uses[(kind, t)]:
                model.add(sum(uses[(kind, t)]) <= num_tables * used)
            latency = int(np.floor(tier.latency_s * NS)) * used
            for direction in ("send", "recv"):
                model.add(world * var_time >= sum(c * v for v, c in traffic[(kind, direction, t)]) + world * latency)

    def ns(seconds):
        return int(np.floor(seconds * NS))

    ef, eb, s = new(0, BIG, "Ef"), new(0, BIG, "Eb"), new(0, BIG, "S")
    model.add(ef >= a - sum(ns(d.bottom_fwd_s) * zs for d, zs in zip(choices.dense, z, strict=True)))
    model.add(eb >= a - sum(ns(d.bottom_bwd_s) * zs for d, zs in zip(choices.dense, z, strict=True)))
    any_dp = model.new_bool_var("any_dp")
    if dp_terms:
        model.add(sum(v for v, _ in dp_terms) <= num_tables * any_dp)
    dp_sync = sum(c * v for v, c in dp_terms) + ns(choices.dp_sync_latency_s) * any_dp
    model.add(s >= sum(ns(d.sync_s - d.bottom_bwd_s) * zs for d, zs in zip(choices.dense, z, strict=True))
              + dp_sync - eb - lb)
    chain = lf + ef + eb + lb + s + sum(ns(d.fixed_s) * zs for d, zs in zip(choices.dense, z, strict=True))
    t_var = new(0, BIG, "T")
    if problem.task.framework.pipelined_input_dist:
        model.add(t_var >= chain)
        model.add(t_var >= ids)
    else:
        model.add(t_var >= chain + ids)
    model.minimize(t_var)
    started = time.perf_counter()
    left_s = time_limit_s if deadline is None else min(time_limit_s, deadline - started)
    if left_s <= 0:
        return None, None
    # Two solves. First a copy without the single-table cuts: a weaker relaxation (its optimum is
    # a valid bound too) that CP-SAT solves in a fraction of a second, where with the cuts it can
    # take seconds to a first solution (856 tables: optimal in 0.35 s, against about 4 s to a first
    # solution with the cuts). Then the model with the cuts, hinted with that solution.
    quick = model.clone()
    for used_class, one_lf, one_lb, _ in singles:
        model.add(lf >= one_lf * used_class)
        model.add(lb >= one_lb * used_class)
    best, bound = None, 0.0
    for stage, share in ((quick, QUICK_SHARE), (model, 1.0)):
        left = left_s - (time.perf_counter() - started)
        if left <= 0.01:
            break
        if best is not None:
            for row, chosen in zip(class_vars, best[0], strict=True):
                for index, var in row:
                    stage.add_hint(var, chosen.get(index, 0))
            for i, zs in enumerate(z):
                stage.add_hint(zs, int(i == best[1]))
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(left * share, 0.05)
        solver.parameters.num_workers = workers
        solver.parameters.random_seed = seed
        status = solver.solve(stage)
        if status == cp_model.INFEASIBLE:
            return None, None
        bound = max(bound, solver.best_objective_bound / NS)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            best = ([{index: int(solver.value(v)) for index, v in row if solver.value(v)} for row in class_vars],
                    next(i for i, zs in enumerate(z) if solver.value(zs)))
    return (bound if bound > 0 else None), best


def place(choices: Choices, solution, deadline: float | None = None) -> tuple[list[list[int]], int] | None:
    """A plan (counts per option, dense index) that takes the relaxed solution's sharding classes
    and places them largest first where they raise the busiest rank least (LPT list scheduling on
    each rank's lookup time plus twice its all-to-all send time -- the all-to-all is paid forward
    and backward -- within every rank's memory where it can). None if `deadline` passes first.

    A table- or column-wise option loads only its owners, alike wherever it sits, so a class is
    kept as (owner ranks per member, the values at the owners): placing it raises the busiest rank
    to max(busiest, max over its owners of load + value). A table-row-wise class whose options are
    priced when asked for (many hosts) is placed by its load on the host's own ranks alone."""
    problem, topo = choices.problem, choices.topo
    device = problem.cluster.device
    tiers = problem.cluster.tiers
    per_class, dense_index = solution
    world = topo.world
    rate = [tier.bandwidth_bytes_per_s * tier.efficiency for tier in tiers]

    def rank_cost(loads) -> np.ndarray:
        send = loads.traffic(topo)[0]
        a2a = np.max(np.stack([send[:, t] / rate[t] for t in range(len(tiers))]), axis=0)
        return kernels.memory_bound_time_s(loads.lookup_fwd_bytes + loads.lookup_bwd_bytes, device) + 2 * a2a

    load = np.zeros(world)
    memory = np.zeros(world)
    capacity = choices.capacity_bytes - choices.dense[dense_index].memory_bytes
    counts = [[0] * len(g.options) for g in choices.groups]
    items = []
    for gi, (g, chosen) in enumerate(zip(choices.groups, per_class, strict=True)):
        for first, n in chosen.items():
            option = g.options[first]
            loads = g.loads(first)
            cost = rank_cost(loads)
            if option.sharding in ("row_wise", "data_parallel"):
                counts[gi][first] += n
                load += n * cost
                memory += n * loads.memory_bytes
                continue
            members = [i for i, o in enumerate(g.options) if _class(o) == _class(option)]
            if option.sharding == "table_row_wise" and g.priced[first] is not None:
                costs = np.stack([rank_cost(g.loads(i)) for i in members])
                mems = np.stack([g.loads(i).memory_bytes for i in members])
                item = ("full", costs, mems)
            else:
                if option.sharding == "table_row_wise":
                    owners_of = [np.arange(g.options[i].host * topo.per_host, (g.options[i].host + 1) * topo.per_host)
                                 for i in members]
                else:
                    owners_of = [np.asarray(g.options[i].ranks) for i in members]
                owners = owners_of[0]
                item = ("owners", np.stack(owners_of), cost[owners], loads.memory_bytes[owners])
            peak = float(item[1].max()) if item[0] == "full" else float(item[2].max())
            items += [(peak, gi, members, item) for _ in range(n)]
    items.sort(key=lambda entry: -entry[0])
    for step, (_, gi, members, item) in enumerate(items):
        if deadline is not None and step % 256 == 0 and time.perf_counter() > deadline:
            return None
        if item[0] == "full":
            _, costs, mems = item
            after = (load + costs).max(axis=1)
            fits = ((memory + mems) <= capacity).all(axis=1)
        else:
            _, owners, values, mems = item
            after = np.maximum(load.max(), (load[owners] + values).max(axis=1))
            fits = ((memory[owners] + mems) <= capacity).all(axis=1)
        best = int(np.lexsort((after, ~fits))[0])
        counts[gi][members[best]] += 1
        if item[0] == "full":
            load += costs[best]
            memory += mems[best]
        else:
            load[owners[best]] += values
            memory[owners[best]] += mems
    return counts, dense_index
