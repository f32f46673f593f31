"""Fused attention on one GPU: kernel time by sequence length and head dim, and context parallelism.

Kernel rates. A fused-attention kernel's throughput grows with the key length it loops over
(each query tile pays a prologue and epilogue) and with the head dim (longer inner products per
softmax), and differs by kernel: on an H100 SXM5 at 16k tokens, head dim 128, the causal
forward runs at 335 (FlashAttention-2), 539 (cuDNN 9.1) and 616 (FlashAttention-3) TFLOP/s
(Shah et al. 2024, FlashAttention-3, Fig. 5-6; the table is `attention_by_seqlen` in
planner/data/efficiency.yaml). On Hopper devices the time of a call is its executed FLOPs over
the table's rate for the framework profile's kernel (`attention_kernel`: cudnn, fa2, fa3),
interpolated linearly in log2(key length) between 512 and 16k (clamped outside: the rates are
flat from 8k on) and linearly in head dim between 64 and 128 (clamped). The backward figure is
measured without a causal mask; a causal backward is priced at the non-causal backward rate times
the forward's causal / non-causal ratio at the same length (the masked tiles cost the same share
forward and backward). Other devices, and the `device` kernel, keep the device preset's flat
`attention_fraction` of the bf16 peak (no per-length measurement in the data).

Sliding windows. A windowed layer's query sees the last `W` keys (itself included): a tiled kernel
visits, for each block of queries, the key blocks that meet the band, about W + KEY_BLOCK keys per
query, partly masked at both edges. It is priced as a non-causal call over that key span, at the
table's rate for that key length (clamped at 512 below, where the table starts: the rate of a
shorter span is overstated), never dearer than the layer's causal call. A model alternating
windowed and full layers (`full_attention_every`) is priced per layer as their average (a stage
of an odd number of layers holds one more of one kind than the average says). The window is not
applied to the p2p ring (Transformer Engine v2.9 refuses a window there, context_parallel.py
l.3803-3809, and so does the plan check); its a2a and all-gather attention take it, one call per
GPU over the same FLOPs as without CP. Nor is it applied to unfused attention (the era's kernels
compute and mask the whole s x s scores), nor to model FLOPs (MFU keeps the full-attention
convention).

Context parallelism (cp > 1). Megatron-Core's default `--cp-comm-type p2p`
(megatron/training/arguments.py) runs Transformer Engine's ring attention
(transformer_engine/pytorch/attention.py AttnFuncWithCP, v1.4-v2.x): each rank holds chunks j
and 2cp-1-j of the 2cp sequence chunks (causal load balancing), and attention runs in cp steps.
Step 0 is causal attention of the local L = s/cp queries on the local keys; each later step is a
non-causal call on half a block (all local queries x the first received chunk, or the second
local chunk x all received keys): L x L/2 either way, so every rank executes the same causal
total in cp calls. While step i computes, the K and V of step i+1 arrive from the previous rank
(one send of the local K and V, 2 B per element); backward, each step sends K,V and the partial
dK,dV (the first step K,V only, the last dK,dV only). A step's transfer is hidden when the step's
compute is longer, but for the SMs its kernels hold (planner.core.kernels.COMM_SM_FRACTION of
it); the rest is exposed. The ring's transfers run at the outermost network tier the
cp group spans (one slow hop sets every step's pace). `allgather` (Megatron-Core's
`--cp-comm-type allgather`, Llama 3's CP) gathers the sequence's K and V before one attention
call and reduce-scatters dK, dV after it, not overlapped. `a2a` (`--cp-comm-type a2a`, TE's
AttnFuncWithCPAndQKVOA2A, DeepSpeed-Ulysses) all-to-alls Q, K, V before one attention call over
the whole sequence with heads / cp per GPU, and the output after it (backward: O and dO, then
dQ, dK, dV), not overlapped (priced in planner.llm.cost.layer; the heads must divide by t x cp,
which the plan check does not enforce).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from planner.core import files
from planner.core.kernels import FLASH_BACKWARD_FACTOR, contended_exposed_s

EFFICIENCY_FILE = Path(__file__).resolve().parents[2] / "data" / "efficiency.yaml"

HOPPER_NAMES = ("H100", "H200", "H800", "H20")
"""Device names of the Hopper generation, whose kernels the H100 table describes."""

KEY_BLOCK = 128
"""Keys per block of a fused-attention kernel's inner loop: FlashAttention-2 runs head dim 64 with
128 x 128 query x key blocks (csrc/flash_attn/src/flash_fwd_launch_template.h run_mha_fwd_hdim64,
Flash_fwd_kernel_traits<64, 128, 128, 4, ...>); FlashAttention-3 uses 128-key blocks for head dim
64, and for causal or local attention at head dim 96-128, on Hopper (hopper/
flash_fwd_launch_template.h, run_mha_fwd_hdim64: kBlockN 128). cuDNN's blocks are not published;
the same is assumed."""

TABLE_KERNELS = ("cudnn", "fa2", "fa3")
"""Kernels with a measured rate table (the profile's `attention_kernel`; `device` has none)."""


@cache
def _table() -> dict:
    """The H100 table: {kernel: {direction: (head dims, log2 lengths, fractions[head, length])}}."""
    data = files.read_yaml(EFFICIENCY_FILE, int_keys=True)
    entry = next(e for e in data["attention_by_seqlen"] if e["gpu"] == "H100-SXM5-80GB")
    peak = float(entry["peak_tflops"])
    log_lengths = np.log2(np.asarray(entry["seqlens"], dtype=float))
    out: dict = {}
    for kernel, directions in entry["kernels"].items():
        out[kernel] = {}
        for direction, by_dim in directions.items():
            dims = sorted(int(d) for d in by_dim)
            values = np.asarray([by_dim[d] for d in dims], dtype=float) / peak
            out[kernel][direction] = (np.asarray(dims, dtype=float), log_lengths, values)
    return out


def _lookup(kernel: str, direction: str, key_length, head_dim: float):
    dims, log_lengths, values = _table()[kernel][direction]
    x = np.log2(np.maximum(np.asarray(key_length, dtype=float), 1.0))
    per_dim = [np.interp(x, log_lengths, row) for row in values]
    d = float(np.clip(head_dim, dims[0], dims[-1]))
    i = int(np.searchsorted(dims, d, side="right") - 1)
    if i >= len(dims) - 1:
        return per_dim[-1]
    w = (d - dims[i]) / (dims[i + 1] - dims[i])
    return (1.0 - w) * per_dim[i] + w * per_dim[i + 1]


def uses_table(kernel: str, device) -> bool:
    """Whether the kernel's rate comes from the measured table on this device."""
    return kernel in TABLE_KERNELS and any(tag in device.name.upper() for tag in HOPPER_NAMES)


def fractions(kernel: str, device, key_length, head_dim: float, causal: bool):
    """(forward, backward) achieved fraction of the bf16 peak of one fused-attention call."""
    if not uses_table(kernel, device):
        f = device.efficiency.attention_fraction
        return f, f
    forward = _lookup(kernel, "forward", key_length, head_dim)
    backward = _lookup(kernel, "backward", key_length, head_dim)
    if causal:
        forward_causal = _lookup(kernel, "forward_causal", key_length, head_dim)
        return forward_causal, backward * forward_causal / forward
    return forward, backward


def call_time_s(forward_flops, kernel: str, device, key_length, head_dim: float, causal: bool):
    """(forward, backward) seconds of fused-attention calls executing `forward_flops` (backward
    executes FLASH_BACKWARD_FACTOR times as many)."""
    fwd, bwd = fractions(kernel, device, key_length, head_dim, causal)
    peak = device.peak("bf16")
    flops = np.asarray(forward_flops, dtype=float)
    return flops / (peak * fwd), FLASH_BACKWARD_FACTOR * flops / (peak * bwd)


def _causal_flops(tokens, seq_len: int, width_per_gpu):
    """Forward FLOPs of the causal half of `tokens` queries over a `seq_len`-key sequence."""
    return 2.0 * np.asarray(tokens, dtype=float) * (seq_len / 2.0) * width_per_gpu


def flash_time_s(kernel: str, device, seq_len: int, cp, tokens, width_per_gpu, head_dim: float,
                 comm_type: str = "p2p"):
    """(forward, backward, forward of one ring step, backward of one ring step) seconds of a
    micro-batch's causal fused attention on one GPU.

    Args:
        seq_len: the sequence length s.
        cp: context-parallel degree (array); the GPU holds L = s/cp positions of each sequence.
        tokens: b * s / cp query positions on the GPU.
        width_per_gpu: (query/key head dim + value head dim) x local heads: QK^T and AV together.
        head_dim: the query/key head dim (the table's head dim).
        comm_type: "p2p" (ring, cp calls), "allgather" (one call on the gathered K, V) or "a2a"
            (one call over the whole sequence with heads / cp: the same FLOPs per GPU).
    """
    cp = np.asarray(cp, dtype=float)
    local = seq_len / cp
    total = _causal_flops(tokens, seq_len, width_per_gpu)
    # cp = 1, or all-gathered K and V: one causal call over the whole key length.
    one_f, one_b = call_time_s(total, kernel, device, seq_len, head_dim, causal=True)
    # Ring: step 0 causal on the local L x L; cp - 1 half blocks L x L/2, non-causal; a rank runs
    # about as many with L/2 keys as with L keys (which depends on its position in the ring).
    step = total / cp
    f0, b0 = call_time_s(step, kernel, device, local, head_dim, causal=True)
    fa, ba = call_time_s(step, kernel, device, local / 2.0, head_dim, causal=False)
    fb, bb = call_time_s(step, kernel, device, local, head_dim, causal=False)
    half_f, half_b = (fa + fb) / 2.0, (ba + bb) / 2.0
    ring_f = f0 + (cp - 1.0) * half_f
    ring_b = b0 + (cp - 1.0) * half_b
    ring = (cp > 1) & (comm_type == "p2p")
    return (np.where(ring, ring_f, one_f), np.where(ring, ring_b, one_b),
            np.where(ring, half_f, one_f), np.where(ring, half_b, one_b))


def windowed_time_s(kernel: str, device, seq_len: int, window: int, tokens, width_per_gpu, head_dim: float):
    """(forward, backward) seconds of a micro-batch's sliding-window attention on one GPU (no CP
    ring): `tokens` queries, each over a span of min(window + KEY_BLOCK, seq_len) keys at the
    non-causal rate for that span; never more than the causal call over the whole sequence."""
    span = float(min(window + KEY_BLOCK, seq_len))
    flops = 2.0 * np.asarray(tokens, dtype=float) * span * width_per_gpu
    band_f, band_b = call_time_s(flops, kernel, device, span, head_dim, causal=False)
    full_f, full_b = call_time_s(_causal_flops(tokens, seq_len, width_per_gpu), kernel, device, seq_len,
                                 head_dim, causal=True)
    return np.minimum(band_f, full_f), np.minimum(band_b, full_b)


def ring_hop_time_by_tier(num_bytes, cp_members: list, cluster) -> list:
    """Seconds of one ring step's send per tier: the whole send at the outermost tier the cp
    group spans (a group with more members in tier i than inside one domain of tier i-1 has hops
    that cross tier i), zero at the others."""
    num_bytes = np.asarray(num_bytes, dtype=float)
    parts = [np.zeros_like(num_bytes) for _ in cluster.tiers]
    chosen = np.zeros(np.shape(num_bytes), dtype=bool)
    for index in range(len(cluster.tiers) - 1, -1, -1):
        tier = cluster.tiers[index]
        if index:
            crosses = np.asarray(cp_members[index], dtype=float) > np.asarray(cp_members[index - 1], dtype=float)
        else:
            crosses = np.ones(np.shape(num_bytes), dtype=bool)
        use = crosses & ~chosen
        t = tier.latency_s + num_bytes / (tier.bandwidth_bytes_per_s * tier.efficiency)
        parts[index] = np.where(use, t, 0.0)
        chosen = chosen | use
    return parts


def ring_exposed_s(cp, hop_fwd_s, hop_bwd_kv_s, hop_bwd_both_s, step_fwd_s, step_bwd_s):
    """(forward, backward) exposed seconds of the ring's sends.

    Forward: cp - 1 sends of K,V, each under one step's compute. Backward: cp iterations; the
    first sends K,V, the last dK,dV, the others both (Transformer Engine waits for each
    iteration's sends before the next). A send beside a step also holds SMs the step lacks
    (kernels.contended_exposed_s: at least COMM_SM_FRACTION of it is exposed)."""
    cp = np.asarray(cp, dtype=float)
    fwd = (cp - 1.0) * contended_exposed_s(hop_fwd_s, step_fwd_s)
    middle = np.maximum(cp - 2.0, 0.0) * contended_exposed_s(hop_bwd_both_s, step_bwd_s)
    ends = 2.0 * contended_exposed_s(hop_bwd_kv_s, step_bwd_s)
    bwd = np.where(cp > 1, middle + ends, 0.0)
    return np.where(cp > 1, fwd, 0.0), bwd
