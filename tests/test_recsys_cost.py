"""The DLRM cost model: preset sizes, hand-derived lookup and all-to-all volumes per sharding type,
and properties (parts sum to the step, linearity in the plan's entries, bandwidth and sharding
monotonicity)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.core.hardware import Cluster, NetworkTier
from planner.core.inputs import load_device
from planner.recsys.cost import a2a_time_s, evaluate
from planner.recsys.loads import RankLoads, Topology, entry_loads, plan_loads
from planner.recsys.model import Dlrm
from planner.recsys.plan import ShardingPlan, TableSharding, check_plan
from planner.recsys.problem import RecsysProblem, load_dlrm
from planner.recsys.task import RecsysTraining


def cluster(num_devices: int = 8, per_host: int = 4, hbm: str | None = None, hbm_bw: float | None = None) -> Cluster:
    device = load_device("a100-sxm4-80gb")
    if hbm or hbm_bw:
        data = device.model_dump()
        if hbm:
            data["hbm_bytes"] = hbm
        if hbm_bw:
            data["hbm_bandwidth_bytes_per_s"] = hbm_bw
        device = type(device).model_validate(data)
    return Cluster(name="test", device=device, num_devices=num_devices, tiers=[
        NetworkTier(name="nvlink", size=per_host, bandwidth_bytes_per_s=300e9, latency_s=10e-6, efficiency=0.8),
        NetworkTier(name="ib", bandwidth_bytes_per_s=25e9, latency_s=20e-6, efficiency=0.9),
    ])


def model(**table) -> Dlrm:
    spec = dict(name="t", num_rows=1000, dim=16, pooling_factor=2)
    spec.update(table)
    return Dlrm(name="toy", num_dense_features=13, bottom_mlp=[64, 16], interaction={"type": "concat"},
                top_mlp=[64, 1], tables=[spec])


def problem(m: Dlrm | None = None, batch: int = 64, **cluster_args) -> RecsysProblem:
    return RecsysProblem(model=m or model(), cluster=cluster(**cluster_args),
                         task=RecsysTraining(global_batch_size=batch))


def loads_of(p: RecsysProblem, **entry) -> RankLoads:
    """One entry's loads with the owners' all-to-all bytes folded into the per-rank arrays."""
    lo = entry_loads(p, TableSharding(table="t", **entry))
    lo.out_send, lo.out_recv, lo.ids_send, lo.ids_recv = lo.traffic(Topology(p))
    lo.out_payload = lo.ids_payload = np.zeros_like(lo.out_payload)
    return lo


# ---- presets ----------------------------------------------------------------------------------

def test_madmax_dlrm_a_sizes_match_the_published_totals():
    """MAD-Max prints 638.08 MFLOP per sample; 4096 x 2.08 M x 94 = 800.85 B embedding parameters."""
    m = load_dlrm("madmax-dlrm-a")
    assert m.embedding_params == 4096 * 2_080_000 * 94
    assert m.dense_flops_per_sample() / 1e6 == pytest.approx(638.08, abs=0.01)


def test_mlperf_dcnv2_matches_the_reference_config():
    """recsys_models.yaml: 26.14 B parameters, 214 ids per sample, DCN 10.63 M and top MLP 5.25 M params."""
    m = load_dlrm("mlperf-dlrm-dcnv2")
    assert m.embedding_params == 26_135_627_264
    assert sum(t.pooling_factor for t in m.tables) == 214
    assert m.interaction_input_width == 27 * 128
    assert m.interaction_params == 3 * (2 * 3456 * 512 + 3456)
    top = m.mlp_shapes()[len(m.bottom_mlp):]
    assert sum(i * o + o for i, o in top) == 5_245_953


def test_criteo_kaggle_dot_width_is_367():
    m = load_dlrm("criteo-kaggle-dlrm")
    assert m.embedding_params == 540_201_232
    assert m.interaction_output_width == 367
    assert m.mlp_shapes()[len(m.bottom_mlp)] == (367, 512)


# ---- hand-derived volumes (W = 8 ranks, L = 4 per host, B = 64, b = 8; R = 1000, D = 16, P = 2,
# fp32 tables: s = o = 4, ids i = 8 B, a row read = 64 B; rowwise Adagrad: 4 B per row) --------

def test_table_wise_lookup_and_memory_bytes():
    p = problem()
    lo = loads_of(p, sharding="table_wise", ranks=[0])
    # B P (row + i) + 4 B + B D o = 128*72 + 256 + 4096
    assert lo.lookup_fwd_bytes[0] == 13568
    # B D o + 2 B P i + B P D o + B P (2 row + 2 state) = 4096 + 2048 + 8192 + 128*(128 + 8)
    assert lo.lookup_bwd_bytes[0] == 31744
    # R (D s + 4) + 2 B (P i + 4) + 2 B D o = 68000 + 2560 + 8192
    assert lo.memory_bytes[0] == 78752
    assert lo.lookup_fwd_bytes[1:].sum() == 0 and lo.memory_bytes[1:].sum() == 0


def test_table_wise_all_to_all_volumes_per_tier():
    """The owner sends b D o = 512 B to each of 3 host-mates (NVLink) and 4 remote ranks (IB)."""
    lo = loads_of(problem(), sharding="table_wise", ranks=[0])
    assert lo.out_send[0].tolist() == [1536, 2048]
    assert lo.out_recv[:, 0].tolist() == [0, 512, 512, 512, 0, 0, 0, 0]
    assert lo.out_recv[:, 1].tolist() == [0, 0, 0, 0, 512, 512, 512, 512]
    # ids: every rank sends the owner b (P i + 4) = 160 B
    assert lo.ids_recv[0].tolist() == [480, 640]
    assert lo.ids_send[1:, :].sum(axis=1).tolist() == [160] * 7


def test_row_wise_is_a_reduce_scatter_on_every_rank():
    lo = loads_of(problem(), sharding="row_wise")
    # (B P / W) (row + i) + 4 B + B D o: partial sums for the whole global batch
    assert lo.lookup_fwd_bytes.tolist() == [16 * 72 + 256 + 4096] * 8
    assert lo.out_send.tolist() == [[1536, 2048]] * 8 == lo.out_recv.tolist()
    # ids: b (P i / W + 4) = 48 B to each peer
    assert lo.ids_send.tolist() == [[144, 192]] * 8
    assert lo.memory_bytes[0] == math.ceil(1000 / 8) * 68 + 2 * 64 * (2 * 8 / 8 + 4) + 2 * 64 * 16 * 4


def test_column_wise_shards_split_the_width():
    lo = loads_of(problem(), sharding="column_wise", ranks=[0, 5])
    # d = 8: a row read is one 32-byte sector: 128*(32+8) + 256 + 64*8*4
    assert lo.lookup_fwd_bytes[[0, 5]].tolist() == [7424, 7424]
    assert lo.out_send[0].tolist() == [768, 1024] and lo.out_send[5].tolist() == [768, 1024]
    # rank 1 gets 256 B from rank 0 over NVLink and 256 B from rank 5 over IB
    assert lo.out_recv[1].tolist() == [256, 256]
    assert lo.ids_recv[0].sum() == lo.ids_recv[5].sum() == 7 * 160


def test_table_row_wise_reduces_inside_the_host_then_crosses_once():
    lo = loads_of(problem(), sharding="table_row_wise", host=1)
    assert lo.lookup_fwd_bytes.tolist() == [0] * 4 + [32 * 72 + 256 + 4096] * 4
    # reduce-scatter inside host 1: (L-1) H b D o = 3*2*8*64 each way
    assert lo.out_send[4:, 0].tolist() == [3072] * 4 == lo.out_recv[4:, 0].tolist()
    # rank (1, j) sends rank (0, j) b D o = 512 over IB
    assert lo.out_send[4:, 1].tolist() == [512] * 4
    assert lo.out_recv[:4, 1].tolist() == [512] * 4


def test_data_parallel_moves_no_ids_and_all_reduces_the_table_gradient():
    lo = loads_of(problem(), sharding="data_parallel")
    assert lo.ids_send.sum() == lo.ids_recv.sum() == lo.out_send.sum() == 0
    assert lo.dp_table_grad_bytes == 1000 * 16 * 4
    assert lo.lookup_fwd_bytes.tolist() == [8 * 2 * 72 + 32 + 8 * 16 * 4] * 8


def test_all_to_all_time_is_the_slowest_rank_and_tier():
    p = problem()
    lo = loads_of(p, sharding="table_wise", ranks=[0])
    time, rank = a2a_time_s(p, lo.out_send, lo.out_recv)
    assert rank == 0
    assert time == pytest.approx(20e-6 + 2048 / (25e9 * 0.9))


def test_a_sequence_table_sends_one_vector_per_id():
    lo = loads_of(problem(model(pooled=False)), sharding="table_wise", ranks=[0])
    assert lo.out_send[0].tolist() == [3 * 8 * 2 * 64, 4 * 8 * 2 * 64]


# ---- the step ---------------------------------------------------------------------------------

def shipped():
    from planner.cli.common import load_task
    from planner.recsys.plan_io import load_sharding_plan

    return load_task("madmax-dlrm-a-zionex128"), load_sharding_plan("madmax-dlrm-a-mp128")


def test_parts_sum_to_the_step_and_are_finite():
    p, plan = shipped()
    b = evaluate(p, plan)
    parts = [getattr(b, k) for k in b.PARTS]
    assert all(math.isfinite(x) and x >= 0 for x in parts)
    assert sum(parts) == pytest.approx(b.step_time_s, rel=1e-12)
    assert b.samples_per_s == pytest.approx(65536 / b.step_time_s)


def test_plan_loads_are_the_sum_of_entry_loads():
    p = problem(model(count=6))
    plan = ShardingPlan(tables=[
        TableSharding(table="t", count=2, sharding="table_wise", ranks=[3]),
        TableSharding(table="t", sharding="row_wise"),
        TableSharding(table="t", sharding="column_wise", ranks=[1, 6]),
        TableSharding(table="t", sharding="table_row_wise", host=0),
        TableSharding(table="t", sharding="data_parallel"),
    ])
    assert check_plan(plan, p) == []
    total = plan_loads(p, plan)
    topo = Topology(p)
    parts = [entry_loads(p, e, topo) for e in plan.tables]
    for name in RankLoads.ARRAYS:
        np.testing.assert_allclose(getattr(total, name), sum(getattr(x, name) for x in parts))
    # two tables on rank 3 cost twice one
    one = entry_loads(p, TableSharding(table="t", sharding="table_wise", ranks=[3]), topo)
    np.testing.assert_allclose(parts[0].lookup_fwd_bytes, 2 * one.lookup_fwd_bytes)


PLACEMENTS = [
    {"sharding": "table_wise", "ranks": [2]},
    {"sharding": "row_wise"},
    {"sharding": "column_wise", "ranks": [0, 7]},
    {"sharding": "table_row_wise", "host": 1},
    {"sharding": "data_parallel"},
]


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 10**7), dim=st.sampled_from([4, 8, 16, 64, 128]), pooling=st.floats(0.5, 50),
       placement=st.sampled_from(PLACEMENTS), factor=st.floats(1.01, 4))
def test_more_hbm_bandwidth_never_slows_a_step(rows, dim, pooling, placement, factor):
    m = model(num_rows=rows, dim=dim, pooling_factor=pooling)
    plan = ShardingPlan(tables=[TableSharding(table="t", **placement)])
    slow = evaluate(problem(m, hbm_bw=1.5e12), plan).step_time_s
    fast = evaluate(problem(m, hbm_bw=1.5e12 * factor), plan).step_time_s
    assert fast <= slow * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(8, 10**8), dim=st.sampled_from([16, 32, 64, 128]), pooling=st.floats(0.5, 100),
       weighted=st.booleans())
def test_sharding_a_table_over_more_ranks_never_raises_its_memory_per_rank(rows, dim, pooling, weighted):
    p = problem(model(num_rows=rows, dim=dim, pooling_factor=pooling, weighted=weighted))
    one = loads_of(p, sharding="table_wise", ranks=[0]).memory_bytes.max()
    for spread in ({"sharding": "column_wise", "ranks": [0, 1]}, {"sharding": "column_wise", "ranks": [0, 1, 2, 3]},
                   {"sharding": "table_row_wise", "host": 0}, {"sharding": "row_wise"}):
        assert loads_of(p, **spread).memory_bytes.max() <= one
    two = loads_of(p, sharding="column_wise", ranks=[0, 1]).memory_bytes.max()
    assert loads_of(p, sharding="column_wise", ranks=[0, 1, 2, 3]).memory_bytes.max() <= two


def test_a_plan_that_overflows_a_rank_does_not_fit():
    p = problem(model(num_rows=4 * 10**8, dim=64), hbm="80GB")  # 102 GB of fp32 weights on one rank
    b = evaluate(p, ShardingPlan(tables=[TableSharding(table="t", sharding="table_wise", ranks=[0])]))
    assert not b.fits and b.peak_memory_rank == 0
    assert evaluate(p, ShardingPlan(tables=[TableSharding(table="t", sharding="row_wise")])).fits


def test_fp32_dense_gemms_are_priced_at_the_fp32_peak_not_tf32():
    """A100 with its datasheet fp32 peak (19.5 TFLOP/s) beside TF32 (156): the MLP GEMMs of an fp32 task
    run at the fp32 rate. Forward GEMM FLOPs per rank, batch 4096: 2 x 4096 x (13x1024 + 1024x1024 + 1024x16
    + 32x1024 + 1024x1024 + 1024x1) = 17.70 GFLOP (concat: the top MLP takes 16 + 16 wide); the same calls
    and elementwise bytes at both precisions, so the forward times differ by exactly
    17.70e9 / 0.804 x (1/19.5e12 - 1/156e12) = 0.988 ms (fp32 3.3x the tf32 time)."""
    from planner.recsys.cost import dense_cost

    device = load_device("a100-sxm4-80gb")
    data = device.model_dump()
    data["peak_flops"]["fp32"] = 19.5e12
    device = type(device).model_validate(data)
    a100 = Cluster(name="a100", device=device, num_devices=8, tiers=cluster().tiers)
    m = Dlrm(name="mlp", num_dense_features=13, bottom_mlp=[1024, 1024, 16], interaction={"type": "concat"},
             top_mlp=[1024, 1024, 1], tables=[dict(name="t", num_rows=1000, dim=16, pooling_factor=2)])
    plan = ShardingPlan(tables=[TableSharding(table="t", sharding="row_wise")])
    times = {}
    for precision in ("tf32", "fp32"):
        p = RecsysProblem(model=m, cluster=a100, task=RecsysTraining(global_batch_size=8 * 4096,
                                                                     dense_precision=precision))
        d = dense_cost(p, plan)
        times[precision] = (d.bottom_fwd_s + d.top_fwd_s, d.bottom_bwd_s + d.top_bwd_s)
    flops = 2.0 * 4096 * (13 * 1024 + 1024 * 1024 + 1024 * 16 + 32 * 1024 + 1024 * 1024 + 1024 * 1)
    fraction = device.efficiency.gemm_fraction
    assert times["fp32"][0] > times["tf32"][0] and times["fp32"][1] > times["tf32"][1]
    assert times["fp32"][0] - times["tf32"][0] == pytest.approx(flops / fraction * (1 / 19.5e12 - 1 / 156e12),
                                                                rel=1e-9)
    assert times["fp32"][1] - times["tf32"][1] == pytest.approx(2 * (times["fp32"][0] - times["tf32"][0]), rel=1e-9)
