"""Per-rank loads of an embedding-sharding plan: HBM bytes of the lookups (forward, and backward
with the fused optimizer), memory, and the bytes every rank sends and receives on every network
tier in the two all-to-alls (ids in, pooled embeddings out). The step time is a function of these
loads alone (planner.recsys.cost), and the loads of a plan are the sum of the loads of its
entries: a solver prices each (table, sharding, ranks) choice once with `entry_loads` and adds.

Notation: W ranks, L per host (the innermost tier's domain), H = W/L hosts, global batch B,
local batch b = B/W. Per table: R rows, D dims, P ids per sample, s storage bytes, o output
bytes (pooled vectors and their gradients on the wire), u distinct rows per id, id bytes
i = 8 (int64, TorchRec costs ids as int64) + 4 if weighted, and 4 B of length per sample.
A row read moves whole 32-byte DRAM sectors: row(d) = ceil(d*s/32)*32 bytes.

Lookups (FBGEMM table-batched embedding; HBM-bound, priced as bytes):
    forward, per shard serving n samples' ids (n P ids) of width d:
        n P (row(d) + i) + 4 n + n d o           (rows, ids, lengths, pooled output written)
    backward with the fused optimizer (sort ids, gather output gradients, update touched rows):
        n d o + 2 n P i + n P d o + u n P (2 row(d) + 2 state(d))
    where state(d) is the optimizer's fp32 state per row (rowwise Adagrad 4 B; Adam 8d B).
    table_wise / column_wise shards serve all B samples; a row_wise shard the B P / W ids that
    fall in its rows but writes partial sums for all B samples; a table_row_wise shard B P / L
    ids, B partial sums; a data_parallel replica its own b samples, and its backward writes a
    dense gradient of the whole table and runs the optimizer over it (3 s + 2 state bytes per
    element read or written).
    Sequence (unpooled) tables write one vector per id: n P d o instead of n d o.

All-to-alls (every byte counted at the rank that sends it and the rank that receives it, on the
innermost tier whose domain holds both):
    output   table_wise / column_wise: the owner sends each rank b d o; backward the reverse.
             row_wise: every rank sends every other rank its partial sums of that rank's samples,
             b d o (a reduce-scatter). table_row_wise on host h: a reduce-scatter inside h (each
             rank sends each host-mate the partial sums of H b samples), then rank (h, j) sends
             rank (h', j) of every other host b d o.
    ids      every rank sends each shard owner its b P i id bytes and 4 b of lengths (row-wise
             shards get 1/W of the ids each, table-row-wise 1/L); data_parallel tables move no ids.
Data-parallel tables all-reduce a dense gradient of R D s bytes (`dp_table_grad_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from planner.recsys.model import DTYPE_BYTES, EmbeddingTable
from planner.recsys.plan import ShardingPlan, TableSharding
from planner.recsys.problem import RecsysProblem
from planner.recsys.task import OPTIMIZER_STATE_BYTES

SECTOR_BYTES = 32
"""DRAM access granularity of NVIDIA GPUs (32-byte sectors of a 128-byte L2 line): a row read
moves whole sectors (CUDA C++ Best Practices Guide, 'Coalesced Access to Global Memory')."""

ID_BYTES = 8
"""Ids travel and are read as int64 (TorchRec's planner costs them so: BIGINT_DTYPE = 8)."""

LENGTH_BYTES = 4
"""One int32 length (bag size) per sample and feature in a KeyedJaggedTensor."""


@dataclass
class RankLoads:
    """What every rank does in one step (arrays over ranks; tiers innermost first).

    All-to-all bytes are kept in two linear parts: `*_payload[o]`, bytes a shard owner o
    exchanges with every other rank (table-wise and column-wise shards; `Topology.owner_traffic`
    turns them into per-tier bytes), and `*_send` / `*_recv`, the other sharding types' bytes
    per rank and tier. `traffic()` adds them up.
    """

    lookup_fwd_bytes: np.ndarray
    lookup_bwd_bytes: np.ndarray
    memory_bytes: np.ndarray
    out_send: np.ndarray
    """[rank, tier] bytes of pooled embeddings sent in the forward output all-to-all (besides owners')."""
    out_recv: np.ndarray
    ids_send: np.ndarray
    ids_recv: np.ndarray
    out_payload: np.ndarray
    """[rank] bytes each owner sends every other rank in the forward output all-to-all."""
    ids_payload: np.ndarray
    """[rank] id and length bytes every other rank sends each owner."""
    dp_table_grad_bytes: float = 0.0
    """Dense gradient bytes of the data-parallel tables, all-reduced over every rank."""
    shards: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Shards held per rank (for reports)."""

    ARRAYS = ("lookup_fwd_bytes", "lookup_bwd_bytes", "memory_bytes", "out_send", "out_recv", "ids_send",
              "ids_recv", "out_payload", "ids_payload", "shards")

    @classmethod
    def zeros(cls, world: int, num_tiers: int) -> RankLoads:
        z = np.zeros(world)
        t = np.zeros((world, num_tiers))
        return cls(z.copy(), z.copy(), z.copy(), t.copy(), t.copy(), t.copy(), t.copy(), z.copy(), z.copy(), 0.0,
                   z.copy())

    def __iadd__(self, other: RankLoads) -> RankLoads:
        for name in self.ARRAYS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dp_table_grad_bytes += other.dp_table_grad_bytes
        return self

    def traffic(self, topo: Topology) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(out_send, out_recv, ids_send, ids_recv), [rank, tier], owners' bytes included."""
        owner_sent, everyone_received = topo.owner_traffic(self.out_payload)
        owner_received, everyone_sent = topo.owner_traffic(self.ids_payload)
        return (self.out_send + owner_sent, self.out_recv + everyone_received,
                self.ids_send + everyone_sent, self.ids_recv + owner_received)


class Topology:
    """Ranks and the nested domains of the cluster's tiers."""

    def __init__(self, problem: RecsysProblem):
        cluster = problem.cluster
        self.world = cluster.num_devices
        self.num_tiers = len(cluster.tiers)
        self.sizes = [min(cluster.tier_size(t), self.world) for t in range(self.num_tiers)]
        self.sizes[-1] = self.world
        self.per_host = problem.ranks_per_host
        self.hosts = problem.num_hosts
        self.ranks = np.arange(self.world)
        self._model = problem.model

    @cached_property
    def tables(self) -> dict[str, EmbeddingTable]:
        """The model's table groups by name (a plan entry names its group)."""
        return {table.name: table for table in self._model.tables}

    def ring(self, tier: int) -> int:
        """Ranks a rank reaches first through `tier` (in its tier domain, not in the inner one)."""
        inner = self.sizes[tier - 1] if tier > 0 else 1
        return self.sizes[tier] - inner

    def tier_between(self, a, b):
        """Innermost tier whose domain holds ranks a and b (arrays broadcast); -1 where a == b."""
        a, b = np.asarray(a), np.asarray(b)
        result = np.full(np.broadcast(a, b).shape, -1)
        for t in range(self.num_tiers - 1, -1, -1):
            result = np.where(a // self.sizes[t] == b // self.sizes[t], t, result)
        return np.where(a == b, -1, result)

    def owner_traffic(self, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One owner per shard talks to every rank: payload[o] bytes go from each owner o to every
        other rank. Returns (sent by the owners, received by everyone), [rank, tier]; the same
        arrays read the other way round when every rank sends each owner payload[o] bytes
        (received by the owners, sent by everyone). Linear in `payload`."""
        sent = np.stack([payload * self.ring(t) for t in range(self.num_tiers)], axis=1)
        received = np.zeros_like(sent)
        inner = payload.copy()  # dom_{-1}(r) = {r}: a rank receives nothing from itself
        for t in range(self.num_tiers):
            size = self.sizes[t]
            domain = np.repeat(payload.reshape(-1, size).sum(axis=1), size)
            received[:, t] = domain - inner
            inner = domain
        return sent, received


def row_bytes(dim, dtype_bytes):
    """Bytes a read of one row moves (whole 32-byte sectors)."""
    return np.ceil(np.asarray(dim) * dtype_bytes / SECTOR_BYTES) * SECTOR_BYTES


class TableCosts:
    """Per-table constants of one problem (a group's tables are identical)."""

    def __init__(self, problem: RecsysProblem, table: EmbeddingTable):
        model, task = problem.model, problem.task
        self.table = table
        self.s = DTYPE_BYTES[model.table_dtype(table)]
        self.o = DTYPE_BYTES[model.output_dtype] if model.output_dtype else self.s
        self.i = ID_BYTES + (4 if table.weighted else 0)
        self.state_row, self.state_elem = OPTIMIZER_STATE_BYTES[task.embedding_optimizer]
        self.B = float(task.global_batch_size)
        self.b = float(problem.local_batch_size)

    def out_width(self, d):
        """Elements written per sample for a shard of width d (pooled: d; sequence: P d)."""
        return d if self.table.pooled else self.table.pooling_factor * d

    def lookup_fwd(self, samples, ids, d, partial_samples=None):
        """Forward HBM bytes of a shard that looks up `ids` ids and writes outputs for
        `partial_samples` samples (default: `samples`)."""
        out_samples = samples if partial_samples is None else partial_samples
        out = out_samples * d * self.o if self.table.pooled else ids * d * self.o
        return ids * (row_bytes(d, self.s) + self.i) + LENGTH_BYTES * samples + out

    def lookup_bwd(self, samples, ids, d, partial_samples=None):
        out_samples = samples if partial_samples is None else partial_samples
        grad_out = out_samples * d * self.o if self.table.pooled else ids * d * self.o
        state = self.state_row + self.state_elem * d
        touched = self.table.unique_fraction * ids
        return grad_out + 2 * ids * self.i + ids * d * self.o + touched * (2 * row_bytes(d, self.s) + 2 * state)

    def shard_memory(self, rows, d):
        """Weights and optimizer state of a shard of `rows` x `d`."""
        return rows * (d * self.s + self.state_row + d * self.state_elem)


def entry_loads(problem: RecsysProblem, entry: TableSharding, topo: Topology | None = None) -> RankLoads:
    """The loads of one plan entry (`entry.count` identical tables)."""
    topo = topo or Topology(problem)
    table = topo.tables[entry.table]
    c = TableCosts(problem, table)
    n = float(entry.count)
    W, L, H = topo.world, topo.per_host, topo.hosts
    P, D, R = table.pooling_factor, table.dim, table.num_rows
    B, b = c.B, c.b
    buffers = problem.task.framework.input_buffers
    loads = RankLoads.zeros(W, topo.num_tiers)
    kind = entry.sharding

    if kind in ("table_wise", "column_wise"):
        owners = np.asarray(entry.ranks)
        d = D / len(owners)
        fwd = c.lookup_fwd(B, B * P, d)
        bwd = c.lookup_bwd(B, B * P, d)
        io = buffers * B * (P * c.i + LENGTH_BYTES) + 2 * B * c.out_width(d) * c.o
        mem = c.shard_memory(R, d) + io
        for name, value in (("lookup_fwd_bytes", fwd), ("lookup_bwd_bytes", bwd), ("memory_bytes", mem),
                            ("shards", 1.0)):
            np.add.at(getattr(loads, name), owners, n * value)
        np.add.at(loads.out_payload, owners, n * b * c.out_width(d) * c.o)
        np.add.at(loads.ids_payload, owners, n * b * (P * c.i + LENGTH_BYTES))
        return loads

    if kind == "row_wise":
        rows = np.ceil(R / W)
        fwd = c.lookup_fwd(B, B * P / W, D, partial_samples=B)
        bwd = c.lookup_bwd(B, B * P / W, D, partial_samples=B)
        io = buffers * B * (P * c.i / W + LENGTH_BYTES) + 2 * B * c.out_width(D) / (1 if table.pooled else W) * c.o
        loads.lookup_fwd_bytes += n * fwd
        loads.lookup_bwd_bytes += n * bwd
        loads.memory_bytes += n * (c.shard_memory(rows, D) + io)
        loads.shards += n
        pair_out = b * c.out_width(D) * c.o / (1 if table.pooled else W)
        pair_ids = b * (P * c.i / W + LENGTH_BYTES)
        for t in range(topo.num_tiers):
            ring = topo.ring(t)
            loads.out_send[:, t] = loads.out_recv[:, t] = n * pair_out * ring
            loads.ids_send[:, t] = loads.ids_recv[:, t] = n * pair_ids * ring
        return loads

    if kind == "table_row_wise":
        host = entry.host
        members = np.arange(host * L, (host + 1) * L)
        rows = np.ceil(R / L)
        fwd = c.lookup_fwd(B, B * P / L, D, partial_samples=B)
        bwd = c.lookup_bwd(B, B * P / L, D, partial_samples=B)
        io = buffers * B * (P * c.i / L + LENGTH_BYTES) + 2 * B * c.out_width(D) / (1 if table.pooled else L) * c.o
        loads.lookup_fwd_bytes[members] += n * fwd
        loads.lookup_bwd_bytes[members] += n * bwd
        loads.memory_bytes[members] += n * (c.shard_memory(rows, D) + io)
        loads.shards[members] += n
        width = c.out_width(D) / (1 if table.pooled else L)
        # Reduce-scatter inside the host: H b samples' partial sums to each host-mate.
        loads.out_send[members, 0] += n * (L - 1) * H * b * width * c.o
        loads.out_recv[members, 0] += n * (L - 1) * H * b * width * c.o
        # Then rank (host, j) sends rank (h', j) of every other host b samples' sums.
        sources = host * L + topo.ranks % L
        tiers = topo.tier_between(sources, topo.ranks)
        outside = topo.ranks // L != host
        for t in range(topo.num_tiers):
            hit = outside & (tiers == t)
            np.add.at(loads.out_send[:, t], sources[hit], n * b * width * c.o)
            loads.out_recv[hit, t] += n * b * width * c.o
        # Ids: every rank sends each of the host's L ranks its bucket (1/L of its ids) and lengths.
        pair_ids = n * b * (P * c.i / L + LENGTH_BYTES)
        for member in members:
            tiers = topo.tier_between(topo.ranks, member)
            for t in range(topo.num_tiers):
                hit = tiers == t
                loads.ids_send[hit, t] += pair_ids
                loads.ids_recv[member, t] += pair_ids * hit.sum()
        return loads

    # data_parallel: a replica per rank, its own samples; a dense gradient of the whole table.
    fwd = c.lookup_fwd(b, b * P, D)
    grad_scatter = b * D * c.o + b * P * (c.i + D * c.s)
    optimizer = R * D * (3 * c.s + 2 * c.state_elem) + R * 2 * c.state_row
    io = buffers * b * (P * c.i + LENGTH_BYTES) + 2 * b * c.out_width(D) * c.o
    loads.lookup_fwd_bytes += n * fwd
    loads.lookup_bwd_bytes += n * (grad_scatter + R * D * c.s + optimizer)
    loads.memory_bytes += n * (c.shard_memory(R, D) + R * D * c.s + io)
    loads.shards += n
    loads.dp_table_grad_bytes += n * R * D * c.s
    return loads


def plan_loads(problem: RecsysProblem, plan: ShardingPlan) -> RankLoads:
    """The loads of a whole plan: the sum over its entries."""
    topo = Topology(problem)
    total = RankLoads.zeros(topo.world, topo.num_tiers)
    for entry in plan.tables:
        total += entry_loads(problem, entry, topo)
    return total
