"""`planner validate`: predict every usable row of a measured-runs file and compare.

Each row names its hardware and gives numbers (peak TFLOP/s, memory, GPUs per node, NIC Gb/s
per GPU; some null). A row is resolved to the closest device preset (by name, else by peak
and memory), then the row's own numbers override the preset's; every fallback is recorded as
an assumption of that prediction. Missing plan details are filled with stated defaults, also
recorded. Rows that cannot be priced (no batch size, no device preset) are skipped with a reason.
MoE rows take their architecture from the preset of the same name and the settings their
rows lack (ETP, dispatcher, all-to-all overlap, pipeline layout) from the recipes that produced
them (planner/fidelity/moe_rows.py, recipes.yaml). DLRM rows (`model.family: dlrm`) are priced
by the recommendation-model cost (planner/recsys) with the sharding they publish or a greedy one
(planner/fidelity/dlrm_rows.py); their metric is samples per second. Inference rows
(`workload: inference`) are priced by the serving cost (planner/serving) with the engine
behaviour their framework documents (planner/fidelity/serving_rows.py); their metric is output
tokens/s per GPU or the time to first token, and their errors are summarised apart from the
training rows' (throughput and TTFT separately).

The compared metric is the first the row measured of: step time, tokens/s per GPU, TFLOP/s
per GPU (converted to a step time with the row's own FLOP convention: hardware FLOPs count the
recompute pass, model FLOPs do not), MFU; for DLRM rows, samples per second. Errors are
(predicted - measured) / measured on that metric; memory is compared where measured. A row
measured under a regression its framework's maintainers documented (planner/fidelity/
regressions.yaml) is predicted and printed but counted apart from the MAPE figures.
"""

from __future__ import annotations

import math
import re
from functools import cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.core import files, schema
from planner.llm.cost import flops
from planner.llm.cost.step import evaluate
from planner.core.errors import InputError, PlannerError
from planner.fidelity.dlrm_rows import predict_dlrm_row
from planner.fidelity.measured import check_run, is_dlrm_row, is_inference_row
from planner.fidelity.moe_rows import apply_recipe, resolve_moe_model
from planner.fidelity.regressions import regressions
from planner.fidelity.summary import (  # noqa: F401  (the summaries, re-exported: planner.fidelity.summary)
    INFERENCE_METRICS,
    PREDICTED_MEMORY,
    inference_summary,
    mape,
    render_validation,
    validation_json,
)
from planner.core.hardware import Cluster, Device
from planner.llm.model import DenseTransformer
from planner.llm.plan import Plan
from planner.llm.problem import Problem, build, load_cluster, load_device
from planner.llm.frameworks import DEFAULT_PROFILE
from planner.llm.task import TrainingTask
from planner.core.files import shown

DEFAULT_RUNS = Path(__file__).resolve().parent.parent / "data" / "measured_runs.yaml"

DEVICE_PRESETS = {
    "a100-sxm4-80gb": "dgx-a100-80gb",
    "a100-sxm4-40gb": "dgx-a100-40gb",
    "h100-sxm5-80gb": "dgx-h100",
    "h200-sxm-141gb": "dgx-h200",
    "gb200": "gb200-nvl72",
    "b200-sxm-180gb": "dgx-b200",
}


def power_capped_peak_scale(limit_w: float, low: tuple[float, float], high: tuple[float, float]) -> float:
    """The tensor-core peak of a GPU run at `limit_w` watts as a fraction of `high`'s peak: the
    straight line between two datasheet (power limit W, dense peak FLOP/s) points of the same
    die. NVIDIA rates each SKU's peak at the clock its power limit sustains (132-SM GH100: 1.83
    GHz at 700 W, 1.55 GHz at 400 W); the clock a die holds rises slower than linearly with
    power (dynamic power ~ f V^2, V rising with f), so the chord is a lower bound on it."""
    (w0, p0), (w1, p1) = low, high
    if not w0 < limit_w <= w1:
        raise ValueError(f"power limit {limit_w} W outside the datasheet points {w0}-{w1} W")
    return (p0 + (p1 - p0) * (limit_w - w0) / (w1 - w0)) / p1


H100_NVL_400W = (400.0, 1671e12 / 2)
"""NVIDIA H100 product page, specification table, H100 NVL: BFLOAT16 Tensor Core 1,671 TFLOPS with
sparsity (835.5 dense), max TDP 350-400 W (configurable); same 132-SM GH100 die as the SXM."""
H100_SXM_700W = (700.0, 1979e12 / 2)
"""The same table, H100 SXM: BFLOAT16 1,979 TFLOPS with sparsity (989.5 dense), up to 700 W."""

GPU_FACTS = {
    # torchtitan's H100 benchmarks (benchmarks/llama3_h100_202412_torchtitan.md, "Hardware"): "Each
    # H100 GPU is equipped with 96GB HBM2e with 2.4 TB/sec peak memory bandwidth" (the preset's
    # H100 SXM5 has 3.35 TB/s HBM3) and "We used the default 500W power limit"; footnote 2: "the
    # actual peak TFLOPs number is between SXM and NVL". The tensor-core peaks (every dtype, so
    # GEMMs and attention) scale to the 500 W point of the NVL-SXM datasheet chord: 886.8 of
    # 989.5 TFLOP/s bf16 (0.896). HBM bandwidth is the row's stated figure (the memory clock is
    # not what a power cap lowers first). Cross-check: the same-die A100 PCIe (300 W) sustains
    # 0.933 of the A100 SXM's (400 W) best-shape matmul rate (S_MLENG MAMF 252.9 vs 271.2 TFLOP/s,
    # ../shared/data/efficiency.md a1) at 75% of its power; 500 W is 71% of 700 W.
    "h100-sxm-96gb": {"hbm_bandwidth_bytes_per_s": 2.4e12,
                      "peak_flops_scale": power_capped_peak_scale(500.0, H100_NVL_400W, H100_SXM_700W)},
}
"""Hardware facts of a row's GPU that no preset has, from the row's source, by GPU name
(`peak_flops_scale` multiplies every tensor-core peak: a power limit below the preset's)."""


@dataclass(frozen=True)
class FrameworkReading:
    """What a row's free-text `plan.framework` means for pricing.

    profile: the framework profile (planner/llm/frameworks.py); options: its options the text names;
    era: "old" = Megatron-LM 2021-22 and DeepSpeed behaviour (unfused s x s attention, dropout, no
    DP overlap), "new" = flash attention and DP overlap; low_precision_grads: DeepSpeed's
    BF16_Optimizer .grad tensors; tp_overlap: TP communication overlap on in the framework's
    published configs (NeMo performance configs); torchtitan: the framework's own batch and
    pipeline defaults apply (pipeline micro-batches = PP degree, 2 stages per rank interleaved).
    """

    profile: str
    options: tuple[tuple[str, bool | str], ...] = ()
    era: str = "new"
    low_precision_grads: bool = False
    tp_overlap: bool = False
    torchtitan: bool = False


_MEGATRON_2021 = FrameworkReading("megatron-lm@2021", era="old")
_MCORE = FrameworkReading("megatron-core@0.16")
# Transformer Engine's DotProductAttention picks FusedAttention (cuDNN) over FlashAttention on
# Hopper whenever both can run ("Select FusedAttention on sm90 and FlashAttention on others for
# performance", transformer_engine/pytorch/attention.py v1.4-v1.8; "Disabling FlashAttention to
# give FusedAttention preference on Hopper+", attention/dot_product_attention/utils.py v2.6-v2.13),
# and gpt-oss's learnable softmax (attention sinks) rules FlashAttention out (utils.py v2.9 l.694):
# the Megatron-Core r0.8.0 runs and the Megatron-Bridge containers (TE 2.6-2.13), which set no
# NVTE_FUSED_ATTN, ran cuDNN: priced at its measured rate (attention_backend=fused).
_MCORE_CUDNN = FrameworkReading("megatron-core@0.16", (("attention_backend", "fused"),))
_BRIDGE = FrameworkReading("megatron-core@0.16", (("attention_backend", "fused"),), tp_overlap=True)
# NeMo-Framework-Launcher 24.03.01-24.07 (launcher_scripts/conf/config.yaml env_vars) set
# `NVTE_FUSED_ATTN: 0 # Disable cudnn FA until we've tested it more` (commit 562dcb4, 2024-02-13;
# removed in 04b8d09, 2024-08-29, first in 24.09): Transformer Engine then runs the flash-attn 2
# package, also under context parallelism (its ring's per-step kernels).
_NEMO_FA2 = FrameworkReading("megatron-core@0.16", (("attention_backend", "flash"),), tp_overlap=True)
_DEEPSPEED = FrameworkReading("megatron-deepspeed@2022", era="old", low_precision_grads=True)
_TITAN = FrameworkReading("torchtitan@2024-12", torchtitan=True)
_TITAN_COMPILE = FrameworkReading("torchtitan@2024-12", (("compile", True),), torchtitan=True)
_TITAN_ASYNC_TP = FrameworkReading("torchtitan@2024-12", (("async_tp", True), ("compile", True)), torchtitan=True)

FRAMEWORKS: dict[str, FrameworkReading] = {
    "megatron-lm (2021)": _MEGATRON_2021,
    "megatron-lm (jan 2021)": _MEGATRON_2021,
    "megatron-lm (2022)": FrameworkReading("megatron-lm@2022", era="old"),
    # Megatron-Core 0.6-0.16 (NeMo 24.03-26.04, Megatron-Bridge) share Transformer Engine's fused
    # kernels: the megatron-core@0.16 facts. NeMo containers' performance configs turn TP
    # communication overlap on.
    "megatron-core r0.8.0": _MCORE_CUDNN,
    "megatron-bridge / megatron-core (nemo container 25.09)": _BRIDGE,
    "megatron-bridge / megatron-core (nemo container 25.11)": _BRIDGE,
    "megatron-bridge / megatron-core (nemo container 26.02)": _BRIDGE,  # between 25.11 and 26.04.01
    "megatron-bridge / megatron-core (nemo container 26.04.01)": _BRIDGE,
    "nemo 24.07 / megatron-core": _NEMO_FA2,
    "nemo 24.07": _NEMO_FA2,
    "nemo 24.03.01 / megatron-core": _NEMO_FA2,
    "megatron-deepspeed (bigscience fork)": _DEEPSPEED,
    "megatron-deepspeed (bigscience fork, feb 2022)": _DEEPSPEED,
    "torchtitan (fsdp2)": _TITAN,
    "torchtitan (fsdp2) + torch.compile": _TITAN_COMPILE,
    "torchtitan + torch.compile": _TITAN_COMPILE,
    "torchtitan + torch.compile + asynctp": _TITAN_ASYNC_TP,
}
"""Every `plan.framework` text of a training row (compared case-insensitively, whole string). A row
whose text is not here is skipped with the reason; a row that states none is priced with the
default profile and says so."""

PRECISIONS: dict[str, tuple[str, str | None]] = {
    "bf16": ("bf16", None),
    "bf16 (inferred)": ("bf16", None),
    "bf16 (inferred: mfu = tflops / 989)": ("bf16", None),
    "bf16 (deepspeed bf16 optimizer, zero-1 equivalent)": ("bf16", None),
    "fp16": ("fp16", None),
    "fp16 mixed precision": ("fp16", None),
    "fp8": ("fp8", None),
    "fp8 (transformer engine)": ("fp8", None),
    # Transformer Engine's current (per-tensor, just-in-time) scaling; priced with the same fused
    # cast as delayed scaling (the megatron-core profile's 3 B per element).
    "fp8 current scaling": ("fp8", None),
    "fp8 (table has no precision column; see notes)": ("fp8", None),
    # torchtitan 2024-12 Float8 linears: dynamic per-tensor scaling, its only recipe then
    # (torchtitan/float8.py: scaling_type_input/weight/grad_output default "dynamic").
    "bf16 + float8 linears": ("fp8", "tensorwise"),
}
"""Every `plan.precision` text (case-insensitive, whole string): (GEMM precision, float8 recipe the
text names or None)."""

RECOMPUTE: dict[str, str] = {
    "none": "none",
    "full": "full",
    "selective": "selective",
    "full (--checkpoint-activations)": "full",
    "full activation checkpointing": "full",
    "selective (attention core only) + sequence parallel": "selective",
    # torchtitan's "selective" (llama3_8b.toml: selective_ac_option 'op'): the profile's op policy.
    "selective activation checkpointing": "selective",
}
"""Every `plan.recompute` text (case-insensitive, whole string) -> the plan's recompute mode."""

SCHEDULES: dict[str, str] = {
    "1f1b": "1f1b",
    "1f1b (non-interleaved)": "1f1b",
    "1f1b (interleaving per-row not stated in table)": "1f1b",
    "1f1b (deepspeed pp)": "1f1b",
    "interleaved 1f1b": "interleaved",
}
"""Every `plan.pipeline_schedule` text (case-insensitive, whole string) -> the schedule; an
interleaved one takes its stages per rank from plan.vpp (or the framework's default)."""

OTHER: dict[str, dict[str, Any]] = {
    "table gives only model-parallel size (tp*pp); split shown is tp=min(mp,8), pp=mp/8": {},
    "--overlap-grad-reduce, --overlap-param-gather (distributed optimizer), --tp-comm-overlap; pp comm overlap "
    "default": {"tp_overlap": True},
    "moe: token distribution force-balanced, token-dropless": {},
    "sft, packed sequence length 4096": {},
    "local batch size 32 per dp rank; pp microbatch count not stated": {"local_batch_size": 32},
}
"""Every `plan.other` text (case-insensitive, whole string) -> the settings it carries."""


@dataclass
class RowResult:
    """One row's prediction (or the reason it was skipped)."""

    id: str
    metric: str | None = None
    predicted: float | None = None
    measured: float | None = None
    error_pct: float | None = None
    memory_predicted_gib: float | None = None
    memory_measured_gib: float | None = None
    memory_error_pct: float | None = None
    preset: str | None = None
    plan: str | None = None
    profile: str | None = None
    """The framework profile that priced the row, with its options (training LLM rows)."""
    family: str | None = None
    workload: str = "training"
    """training or inference (serving rows are summarised apart)."""
    assumptions: list[str] = field(default_factory=list)
    skipped: str | None = None
    breakdown: dict[str, float] | None = None
    """DLRM rows: the predicted step's parts in seconds (planner.recsys.cost.RecsysBreakdown)."""
    memory_kind: str | None = None
    """Which memory number the row measured (its `memory_kind`), where it measured one."""
    regression: str | None = None
    """The maintainers' report of a regression the row was measured under (regressions.yaml):
    predicted and printed, but counted apart from the MAPE lines."""

    @property
    def counted(self) -> bool:
        """Predicted and in the MAPE lines (not skipped, not under a documented regression)."""
        return self.skipped is None and self.regression is None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def load_runs(path: str | Path) -> list[Any]:
    """The rows of a measured-runs file (a YAML list); each row is checked by `validate_row`."""
    rows = files.read_yaml(path, int_keys=True)
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a list of runs at the top level, got "
                         f"{'nothing' if rows is None else type(rows).__name__}")
    if not rows:
        raise InputError(f"{path}: no runs (an empty list)")
    ids = [r.get("id") for r in rows if isinstance(r, dict) and isinstance(r.get("id"), str)]
    repeated = schema.repeated(ids)
    if repeated:
        raise InputError(f"{path}: id {shown(repeated[0])} is given to more than one run; ids must be unique")
    return rows


@cache
def shipped_rows() -> dict[str, dict]:
    """The shipped file's rows by id (recipes and documented regressions are keyed to them)."""
    return {r["id"]: r for r in load_runs(DEFAULT_RUNS) if isinstance(r, dict) and "id" in r}


def is_shipped_run(row: dict, sections: tuple[str, ...] = ("model", "hardware", "plan", "measured"),
                   checked: bool = False) -> bool:
    """Whether `row` is the shipped row of its id in these sections (not another run reusing it);
    `checked`: `row` is as `check_run` returns it, and is compared with the shipped row checked."""
    shipped = shipped_rows().get(row.get("id"))
    if shipped is not None and checked:
        shipped = check_run(shipped, 0)[1]
    return shipped is not None and all(row.get(k) == shipped.get(k) for k in sections)


@cache
def _device_presets() -> dict[str, Device]:
    return {name: load_device(name) for name in DEVICE_PRESETS}


@cache
def _cluster_preset(name: str) -> Cluster:
    """A cluster preset at its own size: the row's GPU count and NVLink domain are set after
    (a GB200 job need not fill whole NVL72 racks)."""
    return load_cluster(name)


def _resolve_device(hw: dict, notes: list[str]) -> tuple[Device, str]:
    gpu = str(hw.get("gpu") or "")
    presets = _device_presets()
    key = gpu.lower().replace(" ", "-")
    chosen = next((name for name in presets if name == key or presets[name].name.lower() == key.lower()), None)
    if chosen is None:
        peak = hw.get("peak_dense_tflops_per_gpu")
        mem = hw.get("gpu_memory_gb")

        def distance(name: str) -> float:
            d = presets[name]
            score = 0.0
            if peak:
                score += abs(math.log(d.peak("bf16") / (peak * 1e12)))
            if mem:
                score += abs(math.log(d.hbm_bytes / (mem * 1e9)))
            return score if (peak or mem) else 0.0

        chosen = min(presets, key=distance)
        missing = [k for k in ("peak TFLOP/s", "memory") if not (peak if k.startswith("peak") else mem)]
        notes.append(
            f"GPU {gpu!r} is not a preset: closest preset {chosen} by "
            f"{'peak and memory' if not missing else 'peak (memory not stated)'}"
        )
    device = presets[chosen]
    updates: dict[str, Any] = {}
    peak = hw.get("peak_dense_tflops_per_gpu")
    if peak and abs(peak * 1e12 - device.peak("bf16")) / device.peak("bf16") > 0.01:
        notes.append(f"bf16 peak {peak} TFLOP/s from the row instead of the preset")
        updates["peak_flops"] = device.peak_flops.model_copy(update={"bf16": peak * 1e12, "fp16": peak * 1e12})
    mem = hw.get("gpu_memory_gb")
    if mem and abs(mem * 1e9 - device.hbm_bytes) / device.hbm_bytes > 0.01:
        updates["hbm_bytes"] = mem * 1e9
    for key, value in GPU_FACTS.get(key, {}).items():
        if key == "peak_flops_scale":
            peaks = updates.get("peak_flops", device.peak_flops)
            updates["peak_flops"] = peaks.model_copy(update={
                dtype: peak * value for dtype, peak in peaks.model_dump().items() if peak is not None})
            notes.append(f"tensor-core peaks x {value:.3f} for {gpu}: its power limit below the "
                         "preset's (the row's source; validate.GPU_FACTS)")
            continue
        updates[key] = value
        notes.append(f"{key} {value:.3g} for {gpu} (the row's source; validate.GPU_FACTS)")
    return device.model_copy(update=updates), chosen


def resolve_cluster(hw: dict, notes: list[str]) -> tuple[Cluster, str]:
    """A cluster from the row's hardware block; fallbacks recorded in `notes`."""
    device, preset = _resolve_device(hw, notes)
    cluster_preset = DEVICE_PRESETS[preset]
    base = _cluster_preset(cluster_preset)
    tiers = list(base.tiers)
    per_node = hw.get("gpus_per_node")
    rack = _nvlink_rack(hw)
    if per_node and rack and rack > per_node and tiers[0].size and tiers[0].size >= rack \
            and (hw["num_gpus"] <= rack or hw["num_gpus"] % rack == 0):
        tiers[0] = tiers[0].model_copy(update={"size": rack})
        notes.append(f"NVLink domain: the NVL{rack} rack, not the row's {per_node}-GPU node (a compute tray)")
    elif per_node and rack and rack > per_node and tiers[0].size and tiers[0].size >= rack:
        # A job that does not fill whole racks: each rack holds an equal whole number of the row's
        # nodes (the largest such share that fits in a rack and divides the job), as a scheduler
        # placing equal blocks of trays would; not stated by the row.
        per_rack = max(k * int(per_node) for k in range(1, rack // int(per_node) + 1)
                       if hw["num_gpus"] % (k * int(per_node)) == 0)
        tiers[0] = tiers[0].model_copy(update={"size": per_rack})
        notes.append(f"NVLink domain: {per_rack} GPUs ({hw['num_gpus']} GPUs do not fill whole NVL{rack} racks; "
                     f"equal blocks of {per_node}-GPU nodes per rack assumed)")
    elif per_node:
        tiers[0] = tiers[0].model_copy(update={"size": int(per_node)})
    else:
        notes.append(f"GPUs per node not stated: {tiers[0].size} from preset {cluster_preset}")
    nic = hw.get("inter_node_gbps_per_gpu")
    if nic and len(tiers) > 1:
        tiers[1] = tiers[1].model_copy(update={"bandwidth_bytes_per_s": nic * 1e9 / 8})
    elif len(tiers) > 1:
        notes.append(f"NIC rate not stated: {tiers[1].bandwidth_bytes_per_s * 8 / 1e9:.0f} Gb/s per GPU from preset")
    cluster = build(
        Cluster,
        {"name": f"{hw.get('cluster') or cluster_preset}", "device": device, "num_devices": hw["num_gpus"], "tiers": tiers},
        "measured row",
    )
    return cluster, preset


def _nvlink_rack(hw: dict) -> int | None:
    """The NVLink domain a row names as a rack ('GB200 NVL72'), else None."""
    text = " ".join(str(hw.get(k) or "") for k in ("cluster", "gpu", "intra_node_link"))
    match = re.search(r"\bNVL(\d{1,6})\b", text, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def _lookup(table: dict, plan: dict, field: str, what: str) -> Any:
    """The table entry of a row's free-text field (None when the row states nothing); PlannerError
    naming the field and the text when the table has no entry for it."""
    text = plan.get(field)
    if text is None:
        return None
    key = " ".join(str(text).split()).casefold()
    if key not in table:
        raise PlannerError(f"plan.{field}: {shown(text, 100)} is not in validate's {what} table "
                           f"(planner/fidelity/validate.py {what.upper()}): add what it means there")
    return table[key]


def read_framework(plan: dict, notes: list[str]) -> FrameworkReading:
    """The row's framework text mapped through FRAMEWORKS (the default profile, noted, when unstated)."""
    reading = _lookup(FRAMEWORKS, plan, "framework", "frameworks")
    if reading is None:
        notes.append(f"framework not stated: {DEFAULT_PROFILE} assumed")
        return _MCORE
    return reading


def resolve_model(m: dict, era: str, notes: list[str]) -> DenseTransformer:
    activation = str(m.get("ffn_activation") or "").lower()
    gated = "glu" in activation
    gpt_style = activation.startswith("gelu")
    heads, kv = m["num_heads"], m.get("num_kv_heads") or m["num_heads"]
    if kv > heads or heads % kv:
        notes.append(f"num_kv_heads {kv} inconsistent with num_heads {heads}: MHA assumed")
        kv = heads
    vocab = m.get("vocab_size")
    if vocab is None:
        vocab = 51200
        notes.append("vocab not stated: GPT-2 BPE padded to 51200 assumed")
    hidden = m["hidden_size"]
    head_dim = m.get("head_dim")
    if head_dim and head_dim * heads == hidden:
        head_dim = None
    bloom = "bloom" in str(m.get("name", "")).lower()
    data = {
        "name": m.get("name") or "row model",
        "num_layers": m["num_layers"],
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": kv,
        "head_dim": head_dim,
        "ffn_hidden_size": m["ffn_hidden_size"],
        "gated_mlp": gated,
        "vocab_size": vocab,
        "tied_embeddings": gpt_style,
        "max_seq_len": m["seq_len"],
        "linear_bias": gpt_style,
        "dropout": era == "old",
        "position_embedding": ("none" if bloom else "learned") if gpt_style else "rope",
    }
    return build(DenseTransformer, data, "measured row", prefix="model.")


def _recompute(plan: dict, era: str, notes: list[str]) -> str:
    mode = _lookup(RECOMPUTE, plan, "recompute", "recompute")
    if mode is None:
        notes.append("recompute not stated: none assumed" + (" (flash attention)" if era == "new" else ""))
        return "none"
    return mode


def _recipe_recompute(p: dict, era: str, notes: list[str], modules: list[str] | None) -> str:
    """The row's recompute mode; a recipe's selective modules make it selective, and a row that
    states another mode conflicts with its recipe (refused)."""
    if not modules:
        return _recompute(p, era, notes)
    if p.get("recompute") is not None and _lookup(RECOMPUTE, p, "recompute", "recompute") != "selective":
        raise PlannerError(f"plan.recompute: {p['recompute']!r} conflicts with the recipe's selective recompute "
                           f"of {', '.join(modules)} (planner/fidelity/recipes.yaml)")
    return "selective"


def resolve_row(row: dict) -> tuple[Problem, Plan, list[str], str]:
    """(problem, plan, assumptions, preset) for one training row; raises PlannerError if unusable."""
    notes: list[str] = []
    m, hw, p = row["model"], row["hardware"], row["plan"]
    if row.get("workload") != "training":
        raise PlannerError(f"workload {row.get('workload')!r}: only training is priced so far")
    moe = bool(m.get("moe_num_experts"))
    if not moe and not m.get("ffn_hidden_size"):
        raise PlannerError("ffn_hidden_size not stated")
    reading = read_framework(p, notes)
    era = reading.era
    model = resolve_moe_model(m, notes) if moe else resolve_model(m, era, notes)
    cluster, preset = resolve_cluster(hw, notes)
    seq = m["seq_len"]
    gbs = p.get("global_batch_size")
    if gbs is None and p.get("global_batch_tokens"):
        gbs = p["global_batch_tokens"] // seq
    if gbs is None:
        # A per-GPU rate without a pipeline does not depend on the batch beyond the per-step data-
        # parallel and optimizer time; with one micro-batch per step that time is counted in full
        # (the slowest the row can be). With a pipeline the bubble depends on it: skipped.
        me = row.get("measured") or {}
        per_gpu_rate = me.get("tflops_per_gpu") or me.get("tokens_per_s_per_gpu") or me.get("mfu_pct")
        if (p.get("pp") or 1) > 1 or not per_gpu_rate or me.get("step_time_s"):
            raise PlannerError("global batch size not stated")
        dp = p.get("dp") or hw["num_gpus"] // ((p.get("tp") or 1) * (p.get("cp") or 1))
        gbs = dp * (p.get("micro_batch_size") or 1)
        notes.append(f"global batch size not stated: one micro-batch per data-parallel rank ({gbs} sequences), "
                     "the per-step DP and optimizer time counted in full (no pipeline: the per-GPU rate "
                     "depends on the batch only through them)")
    precision, recipe = _lookup(PRECISIONS, p, "precision", "precisions") or ("bf16", None)
    if p.get("precision") is None:
        notes.append("precision not stated: bf16 assumed")
    other = _lookup(OTHER, p, "other", "other") or {}
    framework: dict[str, Any] = {
        "attention": "unfused" if era == "old" else "flash",
        "overlap_grad_reduce": era == "new",
        "overlap_param_gather": era == "new",
        "overlap_p2p_comm": era == "new",
        "low_precision_grads": reading.low_precision_grads,
    }
    options = dict(reading.options)
    if reading.profile != DEFAULT_PROFILE or options:
        framework["profile"] = reading.profile
    if reading.torchtitan:
        options["float8"] = recipe or "none"
        notes.append(f"framework {p.get('framework')!r}, precision {p.get('precision')!r}: profile {reading.profile} "
                     f"with {', '.join(f'{k}={v}' for k, v in sorted(options.items()))}")
    elif recipe is not None:
        raise PlannerError(f"plan.precision: {p.get('precision')!r} names a float8 recipe, which only the "
                           f"torchtitan profile has (the row's framework is {p.get('framework')!r})")
    if options:
        framework["options"] = options
    experts: dict[str, Any] = {}
    if moe:
        experts = {"ep": p.get("ep") or 1, "etp": 1}
        recipe_id = row["id"]
        if not is_shipped_run(row, ("model", "hardware"), checked=True):
            recipe_id = None  # recipes are the shipped runs' settings: another run reusing an id gets none
            notes.append(f"id {row['id']}: not the shipped run of that id (its model or hardware differ), so no "
                         "recipe settings are taken from planner/fidelity/recipes.yaml")
        model = apply_recipe(recipe_id, experts, framework, model, notes)
    notes.append(
        "framework era: "
        + ("2021-22 (unfused attention, dropout, no DP overlap)" if era == "old" else "2023+ (flash attention, DP overlap)")
    )
    vpp = experts.pop("virtual_stages", None) or p.get("vpp")
    schedule = _lookup(SCHEDULES, p, "pipeline_schedule", "schedules")
    if vpp is None and schedule == "interleaved" and (p.get("pp") or 1) > 1:
        if not reading.torchtitan:
            raise PlannerError("plan.pipeline_schedule is interleaved but plan.vpp (stages per rank) is not stated")
        vpp = 2  # torchtitan pipelining_utils.generate_split_points: 2 stages per rank for multi-stage schedules
        notes.append("interleaved schedule without stages per rank: torchtitan's default split, 2 per rank")
    vpp = vpp or 1
    mbs = experts.pop("micro_batch_size", None) or p.get("micro_batch_size")
    if mbs is None and "local_batch_size" in other and reading.torchtitan and (p.get("pp") or 1) > 1:
        # torchtitan pipeline_llama.py: microbatches = pipeline_parallel_microbatches or the PP degree
        mbs = other["local_batch_size"] // p["pp"]
        notes.append(f"micro-batch: local batch {other['local_batch_size']} over torchtitan's default "
                     f"{p['pp']} pipeline micro-batches (the PP degree) = {mbs}")
    stage_layers = experts.pop("stage_layers", None)
    recompute_modules = experts.pop("recompute_modules", None)  # the recipe's selective modules
    row_modules = p.get("recompute_modules")
    if row_modules is not None:
        if recompute_modules is not None and sorted(recompute_modules) != sorted(row_modules):
            raise PlannerError(f"plan.recompute_modules {row_modules} conflicts with the recipe's "
                               f"{recompute_modules} (planner/fidelity/recipes.yaml)")
        recompute_modules = list(row_modules)
    task = build(TrainingTask, {"global_batch_size": gbs, "seq_len": seq, "precision": precision,
                                "framework": framework, "memory_headroom": 0.0}, "measured row", "plan.")
    tp, pp, cp = p.get("tp") or 1, p.get("pp") or 1, p.get("cp") or 1
    dp = p.get("dp") or hw["num_gpus"] // (tp * pp * cp)
    if mbs is None:
        mbs = 1
        notes.append("micro-batch size not stated: 1 assumed")
    sp = p.get("sp")
    if sp is None:
        sp = era == "new" and tp > 1
        notes.append(f"sequence parallelism not stated: {sp} assumed")
    zero = p.get("zero_stage")
    if zero is None:
        zero = 1 if era == "new" else 0
        notes.append(f"ZeRO stage not stated: {zero} assumed (distributed optimizer in Megatron-Core)")
    async_tp = dict(reading.options).get("async_tp", False)
    tp_overlap = tp > 1 and era == "new" and (other.get("tp_overlap", False) or reading.tp_overlap or async_tp)
    recipe_tp_overlap = experts.pop("tp_comm_overlap", None)
    if recipe_tp_overlap is not None:  # the recipe's own setting (recipes.yaml) outranks the framework's habit
        tp_overlap = tp > 1 and recipe_tp_overlap
    elif tp_overlap and reading.tp_overlap and not other.get("tp_overlap"):
        notes.append("TP communication overlap assumed on (NeMo performance configs)")
    layers = model.num_layers
    if pp > layers:
        raise PlannerError(f"plan.pp ({pp}) is larger than model.num_layers ({layers})")
    if stage_layers is None and layers % (pp * vpp):
        base, extra = divmod(layers, pp)
        stage_layers = [base + (1 if i < extra else 0) for i in range(pp)]
        stage_layers = sorted(stage_layers)[::-1]
        stage_layers = stage_layers[1:] + stage_layers[:1] if extra else stage_layers
        notes.append(f"{layers} layers do not split evenly over {pp}x{vpp}: stages {min(stage_layers)}-{max(stage_layers)} layers")
    plan = build(
        Plan,
        {
            "tp": tp,
            "sp": bool(sp),
            "tp_comm_overlap": tp_overlap,
            "cp": cp,
            "pp": pp,
            "schedule": "interleaved" if vpp > 1 else "1f1b",
            "virtual_stages": vpp,
            "stage_layers": stage_layers,
            "dp": dp,
            "zero_stage": zero,
            "micro_batch_size": mbs,
            "recompute": _recipe_recompute(p, era, notes, recompute_modules),
            "recompute_modules": recompute_modules,
            **experts,
        },
        "measured row",
        prefix="plan.",
    )
    return Problem(model=model, cluster=cluster, task=task, source=row["id"]), plan, notes, preset


def _measured_step_time(row: dict, problem: Problem, plan: Plan) -> tuple[str, float, callable]:
    """(metric name, measured value, function step_time -> predicted value)."""
    me = row["measured"]
    task, model = problem.task, problem.model
    gpus = problem.cluster.num_devices
    tokens = task.tokens_per_step
    if me.get("step_time_s"):
        return "step_time_s", me["step_time_s"], lambda step: step
    if me.get("tokens_per_s_per_gpu"):
        return "tokens_per_s_per_gpu", me["tokens_per_s_per_gpu"], lambda step: tokens / step / gpus
    if me.get("tflops_per_gpu"):
        kind = str(me.get("tflops_kind") or "model").lower()
        if kind.startswith("hardware"):
            per_token = flops.hardware_flops_per_token(model, task.seq_len, plan.recompute, plan.selective_modules)
        else:
            per_token = flops.model_flops_per_token(model, task.seq_len)
        return "tflops_per_gpu", me["tflops_per_gpu"], lambda step: per_token * tokens / step / gpus / 1e12
    if me.get("mfu_pct"):
        per_token = flops.model_flops_per_token(model, task.seq_len)
        peak = problem.cluster.device.peak("bf16")
        return "mfu_pct", me["mfu_pct"], lambda step: 100 * per_token * tokens / step / gpus / peak
    raise PlannerError("no step time, throughput, TFLOP/s or MFU measured")


def validate_row(row: Any, index: int = 0) -> RowResult:
    """One row predicted, or skipped with the reason (a field it lacks or has wrong, a workload
    not priced yet, a plan the model rejects)."""
    label, checked, problem_text = check_run(row, index)
    result = RowResult(id=label)
    if checked is None:
        result.skipped = f"bad row: {problem_text}"
        return result
    row = checked
    if is_dlrm_row(row):
        return _validate_dlrm_row(row, result)
    if is_inference_row(row):
        return _validate_serving_row(row, result)
    try:
        problem, plan, notes, preset = resolve_row(row)
        metric, measured, convert = _measured_step_time(row, problem, plan)
        breakdown = evaluate(problem, plan)
    except PlannerError as exc:
        result.skipped = " ".join(str(exc).split())
        return result
    result.metric = metric
    result.measured = float(measured)
    result.predicted = float(convert(breakdown.step_time_s))
    result.error_pct = 100.0 * (result.predicted - result.measured) / result.measured
    result.preset = preset
    result.plan = plan.summary()
    result.profile = problem.task.framework.profile_label
    result.family = problem.model.family
    result.assumptions = notes
    mem = row["measured"].get("memory_gib_per_gpu")
    if mem:
        result.memory_measured_gib = float(mem)
        result.memory_predicted_gib = breakdown.peak_memory_bytes / 2**30
        result.memory_error_pct = 100.0 * (result.memory_predicted_gib - mem) / mem
        result.memory_kind = str(row["measured"].get("memory_kind") or "not stated")
    return result


def _validate_dlrm_row(row: dict, result: RowResult) -> RowResult:
    """A DLRM row: samples per second (from the step time where only that is measured)."""
    try:
        problem, plan, notes, preset, breakdown = predict_dlrm_row(row)
    except PlannerError as exc:
        result.skipped = " ".join(str(exc).split())
        return result
    me = row["measured"]
    measured = me.get("samples_per_s")
    if measured is None:
        measured = problem.task.global_batch_size / me["step_time_s"]
        notes.append("samples/s from the measured step time and the global batch")
    result.metric = "samples_per_s"
    result.measured = float(measured)
    result.predicted = float(breakdown.samples_per_s)
    result.error_pct = 100.0 * (result.predicted - result.measured) / result.measured
    result.preset = preset
    result.plan = plan.summary()
    result.family = problem.model.family
    result.assumptions = notes
    result.breakdown = {part: float(getattr(breakdown, part)) for part in breakdown.PARTS}
    result.breakdown.update(step_time_s=float(breakdown.step_time_s), out_a2a_s=float(breakdown.out_a2a_s),
                            ids_a2a_s=float(breakdown.ids_a2a_s), sync_s=float(breakdown.sync_s))
    return result


def _validate_serving_row(row: dict, result: RowResult) -> RowResult:
    """An inference row: output tokens/s per GPU, or the time to first token (ms)."""
    from planner.fidelity.serving_rows import predict_serving_row

    result.workload = "inference"
    try:
        problem, plan, notes, preset, estimate, metric, predicted, measured = predict_serving_row(row)
    except PlannerError as exc:
        result.skipped = " ".join(str(exc).split())
        return result
    result.metric = metric
    result.predicted = float(predicted)
    result.measured = float(measured)
    result.error_pct = 100.0 * (result.predicted - result.measured) / result.measured
    result.preset = preset
    result.plan = f"{plan.summary()}, batch {estimate.batch_per_replica}"
    result.family = problem.model.family
    result.assumptions = notes
    result.breakdown = {"ttft_s": estimate.ttft_s, "tpot_s": estimate.tpot_s,
                        **{f"decode_{k}_s": v for k, v in estimate.decode_parts.items()}}
    return result


def validate(path: str | Path = DEFAULT_RUNS) -> list[RowResult]:
    rows = load_runs(path)
    results = [validate_row(row, index) for index, row in enumerate(rows)]
    documented = regressions()
    for row, r in zip(rows, results, strict=True):
        if r.skipped is None and r.id in documented:
            if isinstance(row, dict) and is_shipped_run(row):
                r.regression = documented[r.id].source
            else:
                r.assumptions.append(f"id {r.id} has a documented regression in planner/fidelity/regressions.yaml, "
                                     "but this row is not the shipped measurement of that id: counted")
    return results
