"""Parameter and FLOP counts against published figures, and a ring all-reduce by hand."""

import pytest

from planner.llm.cost import flops
from planner.core.collectives import collective_time_s, members_per_tier
from planner.llm.problem import load_cluster, load_model


@pytest.mark.parametrize(
    ("preset", "published", "tolerance"),
    [
        ("gpt3-175b", 175.0e9, 0.01),  # Brown et al. 2020, Table 2.1
        ("megatron-1t", 1008.0e9, 0.01),  # Narayanan et al. SC'21, Table 1
        ("llama3-70b", 70.6e9, 0.01),  # Llama 3 model card
        ("llama3-8b", 8.03e9, 0.01),
        ("llama3-405b", 405.0e9, 0.01),  # arXiv 2407.21783, Table 3
        ("llama2-7b", 6.74e9, 0.01),
        ("llama2-70b", 68.98e9, 0.01),
    ],
)
def test_parameter_counts_match_published(preset, published, tolerance):
    model = load_model(preset)
    assert flops.total_params(model) == pytest.approx(published, rel=tolerance)
    assert model.published_params == pytest.approx(published)


def test_gpt3_flops_match_narayanan_equation_3():
    """Narayanan et al. SC'21 eq. 3 (with recompute): 96 B s l h^2 (1 + s/(6h) + V/(16 l h))."""
    model = load_model("gpt3-175b")
    s, l, h, v = 2048, 96, 12288, 51200
    per_token = 96 * l * h**2 * (1 + s / (6 * h) + v / (16 * l * h))
    assert flops.hardware_flops_per_token(model, s, "full") == pytest.approx(per_token, rel=1e-9)
    # Without recompute the model FLOPs are 3/4 of the layer part plus the full head part.
    model_per_token = 72 * l * h**2 * (1 + s / (6 * h)) + 6 * h * v
    assert flops.model_flops_per_token(model, s) == pytest.approx(model_per_token, rel=1e-9)


def test_llama3_70b_gqa_projection_flops():
    """Q and O are h x h, K and V are h x (8 heads * 128); the gated MLP has 3 h x f matrices."""
    model = load_model("llama3-70b")
    h, kv, f = 8192, 1024, 28672
    assert flops.layer_matmul_flops_per_token(model) == 2 * (h * h + 2 * h * kv + h * h + 3 * h * f)


def test_ring_all_reduce_by_hand():
    """8 GPUs on NVLink: t = alpha + 2 (n-1)/n * S / (B * eff).

    1 GiB on DGX H100: 53 us + 1.75 * 2^30 / (450e9 * 0.82) = 53 us + 5.092 ms.
    """
    cluster = load_cluster("dgx-h100", num_devices=8)
    members = members_per_tier(cluster, [8], [1])
    size = 2**30
    expected = 53e-6 + 1.75 * size / (450e9 * 0.82)
    assert float(collective_time_s("all_reduce", size, members, cluster)) == pytest.approx(expected, rel=1e-9)


def test_all_reduce_across_nodes_is_hierarchical():
    """16 GPUs in 2 nodes, group of all 16: NVLink step on S, then NIC step on S/8 with 2 members."""
    cluster = load_cluster("dgx-h100", num_devices=16)
    members = members_per_tier(cluster, [16], [1])
    assert [float(m) for m in members] == [8, 16]
    size = 1e9
    nvlink = 53e-6 + 1.75 * size / (450e9 * 0.82)
    nic = 40e-6 + 1.0 * (size / 8) / (50e9 * 0.90)
    assert float(collective_time_s("all_reduce", size, members, cluster)) == pytest.approx(nvlink + nic)


def test_group_with_a_stride_of_a_node_uses_only_the_nics():
    """DP=4 outside TP=8: one member per node, all traffic on the NIC tier."""
    cluster = load_cluster("dgx-h100", num_devices=32)
    members = members_per_tier(cluster, [4], [8])
    assert [float(m) for m in members] == [1, 4]
    size = 1e9
    expected = 40e-6 + 1.5 * size / (50e9 * 0.90)
    assert float(collective_time_s("all_reduce", size, members, cluster)) == pytest.approx(expected)


def test_all_to_all_by_hand():
    """EP 64 over 8 DGX H100 nodes (8 GPUs each): a member sends S/64 to each member; 7/64 of S
    stays on NVLink, 56/64 crosses InfiniBand, both at once, so the slowest tier decides."""
    from planner.core.collectives import all_to_all_time_by_tier, all_to_all_time_s

    cluster = load_cluster("dgx-h100", num_devices=64)
    nvlink, ib = cluster.tiers
    s = 64e6
    members = members_per_tier(cluster, [64], [1])
    by_tier = all_to_all_time_by_tier(s, members, cluster)
    assert by_tier[0] == pytest.approx(nvlink.latency_s + s * 7 / 64 / (nvlink.bandwidth_bytes_per_s * nvlink.efficiency))
    assert by_tier[1] == pytest.approx(ib.latency_s + s * 56 / 64 / (ib.bandwidth_bytes_per_s * ib.efficiency))
    assert all_to_all_time_s(s, members, cluster) == pytest.approx(max(by_tier))
    # Inside one node it is the single-tier formula: S (n-1)/n over NVLink.
    inside = members_per_tier(cluster, [8], [1])
    assert all_to_all_time_s(s, inside, cluster) == pytest.approx(
        collective_time_s("all_gather", s, inside, cluster))
    # A group of one moves nothing; the hierarchical helper refuses all-to-all.
    assert all_to_all_time_s(s, members_per_tier(cluster, [1], [1]), cluster) == 0.0
    with pytest.raises(ValueError, match="all_to_all_time_by_tier"):
        collective_time_s("all_to_all", s, members, cluster)
