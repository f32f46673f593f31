"""DLRM rows of a measured-runs file (`model.family: dlrm`): the problem, the sharding plan and the
assumptions that price one published recommendation-model training run.

Model      the shipped preset the row names (`model.preset`), after checking that the row's tables,
           pooling factors, MLPs and interaction agree with it (row counts within +-1 and in any
           feature order: preprocessing variants pad small vocabularies by one); otherwise built
           from the row's own fields (tables c1..cN of `rows` x `embedding_dim`, sum pooling).
Cluster    as `validate.resolve_cluster` resolves every row (device presets, the row's numbers).
Task       the row's global batch, which must split evenly over the GPUs (every rank trains the
           same local batch); dense precision fp16/bf16 for mixed precision, TF32 for fp32/TF32
           rows; the row's embedding and dense optimizers; TorchRec's framework defaults.
Sharding   the published plan where the row states one the plan format expresses (one GPU: every
           table on it; per-GPU table lists whose tables sit on one GPU, on all GPUs or on all GPUs
           of one host; the DeepLearningExamples PyTorch device mapping); otherwise
           `planner.recsys.rules.greedy_plan`, with the reason recorded.
Every assumption is a line of the returned notes.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from typing import Any

from planner.core.errors import InputError, PlannerError
from planner.core.inputs import PROBLEMS_DIR, build, read_yaml
from planner.recsys.cost import RecsysBreakdown, evaluate
from planner.recsys.loads import plan_loads
from planner.recsys.model import Dlrm
from planner.recsys.plan import DenseParallel, ShardingPlan, TableSharding, check_plan
from planner.recsys.problem import RecsysProblem, load_dlrm
from planner.recsys.rules import greedy_plan
from planner.recsys.task import RecsysTraining

GREEDY = "TorchRec-style greedy plan assumed"

ROW_COUNT_SLACK = 1
"""Row counts may differ from the preset's by this much per table (vocabulary padding)."""


# -- model -----------------------------------------------------------------------------------

@cache
def dlrm_presets() -> tuple[str, ...]:
    """The shipped model presets of the DLRM family (problems/models/*.yaml with family: dlrm)."""
    names = []
    for path in sorted((PROBLEMS_DIR / "models").glob("*.yaml")):
        try:
            if read_yaml(path).get("family") == "dlrm":
                names.append(path.stem)
        except InputError:
            continue
    return tuple(names)


def _pooling(m: dict) -> list[float]:
    pooling = m["pooling"]
    return list(pooling) if isinstance(pooling, list) else [pooling] * m["num_tables"]


def _interaction(m: dict) -> dict[str, Any]:
    """The row's interaction as the Dlrm schema's mapping."""
    spec = m["interaction"]
    if isinstance(spec, dict):
        kind = str(spec["type"]).lower()
        if not kind.startswith("dcn"):
            raise PlannerError(f"model.interaction: type {spec['type']!r} is not priced (dcn, dot, concat)")
        return {"type": "dcn", "num_layers": spec["num_layers"], "low_rank_dim": spec["low_rank_dim"]}
    text = spec.strip().lower()
    for kind in ("dot", "concat"):
        if text.startswith(kind):
            return {"type": kind}
    raise PlannerError(f"model.interaction: {spec[:60]!r} is not understood (dot, concat, or a dcn mapping)")


def _embedding_dtype(m: dict, notes: list[str]) -> str:
    text = str(m.get("embedding_dtype") or "").lower()
    for dtype in ("fp32", "fp16", "bf16"):
        if text.startswith(dtype):
            return dtype
    notes.append("embedding dtype not stated: fp32 tables assumed")
    return "fp32"


def _check_against_preset(m: dict, preset: Dlrm, name: str, notes: list[str]) -> None:
    """Raises unless the row describes the preset's model (tables compared as a multiset)."""
    tables = [(t.num_rows, t.dim, t.pooling_factor) for t in preset.tables for _ in range(t.count)]
    differ = []
    if m["num_tables"] != len(tables):
        differ.append(f"num_tables {m['num_tables']} vs {len(tables)}")
    if {d for _, d, _ in tables} != {m["embedding_dim"]}:
        differ.append(f"embedding_dim {m['embedding_dim']} vs {sorted({d for _, d, _ in tables})}")
    if m["num_dense_features"] != preset.num_dense_features:
        differ.append(f"num_dense_features {m['num_dense_features']} vs {preset.num_dense_features}")
    if m["bottom_mlp"][1:] != preset.bottom_mlp:
        differ.append(f"bottom_mlp {m['bottom_mlp'][1:]} vs {preset.bottom_mlp}")
    if m["top_mlp"][1:] != preset.top_mlp or m["top_mlp"][0] != preset.interaction_output_width:
        differ.append(f"top_mlp {m['top_mlp']} vs {[preset.interaction_output_width, *preset.top_mlp]}")
    kind = _interaction(m)
    wanted = preset.interaction.model_dump(exclude_none=True)
    if kind != wanted:
        differ.append(f"interaction {kind} vs {wanted}")
    mismatched = 0
    if not differ:
        ours = sorted(zip(m["rows"], _pooling(m)))
        theirs = sorted((r, p) for r, _, p in tables)
        for (rows, pool), (p_rows, p_pool) in zip(ours, theirs):
            if abs(rows - p_rows) > ROW_COUNT_SLACK or abs(pool - p_pool) > 1e-9:
                differ.append(f"table of {rows:,} rows (pooling {pool:g}) vs the preset's {p_rows:,} ({p_pool:g})")
                break
            mismatched += rows != p_rows
    if differ:
        raise PlannerError(f"model {m.get('name') or name!r} differs from the preset {name}: {'; '.join(differ)}")
    tail = (f"; {mismatched} row counts differ from it by {ROW_COUNT_SLACK}, feature order may differ"
            if mismatched else "")
    notes.append(f"model: the preset {name} ({len(tables)} tables, D {m['embedding_dim']}, "
                 f"{preset.embedding_dtype} tables, {preset.interaction.type} interaction){tail}")


def resolve_dlrm_model(m: dict, notes: list[str]) -> Dlrm:
    """The row's model: its preset when named (and consistent), else built from the row."""
    name = m.get("preset")
    if name:
        if name not in dlrm_presets():
            raise PlannerError(f"model.preset: {name!r} is not a DLRM preset (DLRM presets: "
                               f"{', '.join(dlrm_presets())})")
        try:
            preset = load_dlrm(name, source="measured row", field="model.preset")
        except InputError as exc:
            raise PlannerError(f"model.preset: {exc}") from exc
        _check_against_preset(m, preset, name, notes)
        return preset
    dim = m["embedding_dim"]
    pooling = _pooling(m)
    dtype = _embedding_dtype(m, notes)
    interaction = _interaction(m)
    data = {
        "name": m.get("name") or "row model",
        "num_dense_features": m["num_dense_features"],
        "bottom_mlp": m["bottom_mlp"][1:],
        "interaction": interaction,
        "top_mlp": m["top_mlp"][1:],
        "embedding_dtype": dtype,
        "tables": [{"name": f"c{i + 1}", "num_rows": rows, "dim": dim, "pooling_factor": pool}
                   for i, (rows, pool) in enumerate(zip(m["rows"], pooling))],
    }
    try:
        model = build(Dlrm, data, "measured row", prefix="model.")
    except InputError as exc:
        raise PlannerError(str(exc)) from exc
    if m["top_mlp"][0] != model.interaction_output_width:
        raise PlannerError(f"model.top_mlp: starts with {m['top_mlp'][0]}, but the {interaction['type']} "
                           f"interaction outputs {model.interaction_output_width} features")
    hot = "one-hot" if set(pooling) == {1} else f"{sum(pooling):g} ids per sample"
    notes.append(f"model: built from the row ({len(pooling)} tables, D {dim}, {hot}, sum pooling, {dtype} tables, "
                 f"{interaction['type']} interaction; no preset)")
    return model


# -- task ------------------------------------------------------------------------------------

_PRECISION = re.compile(r"\b(fp32|tf32|fp16|bf16|amp|mixed)\b")


def _dense_precision(p: dict, notes: list[str]) -> str:
    """The MLP precision: the first precision word of the row's text decides ('fp32 (no mixed-precision
    flag)' is fp32; 'AMP (fp16) MLPs, fp32 embeddings' is fp16)."""
    text = str(p.get("precision") or "").lower()
    first = _PRECISION.search(text)
    if first is None:
        notes.append("precision not stated: MLP GEMMs in TF32 assumed")
        return "tf32"
    word = first.group(1)
    if word in ("amp", "mixed"):
        word = "bf16" if "bf16" in text else "fp16"
        if "fp16" not in text and word == "fp16":
            notes.append(f"precision {p.get('precision')!r}: fp16 mixed precision assumed")
    if word == "fp32":
        notes.append("fp32 run (TF32 status not stated): MLP GEMMs priced on TF32 tensor cores")
        return "tf32"
    return word


def _optimizer(text: Any, allowed: tuple[str, ...]) -> str | None:
    text = str(text or "").lower().replace("-", "").replace(" ", "")
    if "rowwise" in text and "rowwise_adagrad" in allowed:
        return "rowwise_adagrad"
    return next((name for name in ("adagrad", "adam", "sgd") if name in text and name in allowed), None)


def _task(p: dict, num_gpus: int, notes: list[str]) -> RecsysTraining:
    gbs = p["global_batch_size"]
    if gbs % num_gpus:
        raise PlannerError(f"plan.global_batch_size: {gbs} samples do not split evenly over {num_gpus} GPUs "
                           f"({gbs / num_gpus:.2f} per GPU); the cost model trains the same local batch on every rank")
    local = p.get("local_batch_size")
    if local is not None and local * num_gpus != gbs:
        raise PlannerError(f"plan.local_batch_size: {local} x {num_gpus} GPUs is not the global batch {gbs}")
    data: dict[str, Any] = {"global_batch_size": gbs, "dense_precision": _dense_precision(p, notes)}
    embedding = _optimizer(p.get("embedding_optimizer"), ("rowwise_adagrad", "adagrad", "adam", "sgd"))
    if embedding is None:
        notes.append("embedding optimizer not stated: rowwise Adagrad (the task default) assumed")
    else:
        data["embedding_optimizer"] = embedding
        if embedding == "adagrad":
            notes.append("embedding Adagrad priced element-wise (4 B of state per element): the MLPerf DCNv2 reference "
                         "(mlcommons/training recommendation_v2/torchrec_dlrm/dlrm_main.py) applies torch.optim.Adagrad "
                         "in backward, which TorchRec runs as FBGEMM EXACT_ADAGRAD, not EXACT_ROWWISE_ADAGRAD")
    dense = _optimizer(p.get("dense_optimizer"), ("adagrad", "adam", "sgd"))
    if dense is None:
        notes.append("dense optimizer not stated: Adam (the task default) assumed")
    else:
        data["dense_optimizer"] = dense
    framework = str(p.get("framework") or "not stated")
    notes.append(f"framework ({framework[:60]}): TorchRec's defaults assumed (the next batch's id all-to-all "
                 "pipelined under the step, 2 id buffers, 2.5 GiB framework memory, 5% of HBM kept free)")
    return build(RecsysTraining, data, "measured row", prefix="plan.")


# -- sharding --------------------------------------------------------------------------------

def _single_gpu_plan(problem: RecsysProblem) -> ShardingPlan:
    return ShardingPlan(tables=[TableSharding(table=t.name, count=t.count, sharding="table_wise", ranks=[0])
                                for t in problem.model.tables])


def _table_names(problem: RecsysProblem) -> list[str]:
    return [name for t in problem.model.tables for name in problem.model.table_names(t)]


def _list_plan(problem: RecsysProblem, lists: list[list[int]]) -> tuple[ShardingPlan | None, str]:
    """The plan of published per-GPU table lists (0-based table indices), or None and why not."""
    world, per_host = problem.cluster.num_devices, problem.ranks_per_host
    names = _table_names(problem)
    if len(lists) != world:
        return None, f"{len(lists)} per-GPU lists for {world} GPUs"
    holders: dict[int, list[int]] = {}
    for gpu, tables in enumerate(lists):
        for t in tables:
            if not 0 <= t < len(names):
                return None, f"table index {t} out of range"
            holders.setdefault(t, []).append(gpu)
    missing = [t for t in range(len(names)) if t not in holders]
    if missing:
        return None, f"tables {missing[:5]} are on no GPU's list"
    if any(t.count > 1 for t in problem.model.tables):
        return None, "grouped tables"
    entries = []
    for t, gpus in sorted(holders.items()):
        gpus = sorted(set(gpus))
        host = gpus[0] // per_host
        if len(gpus) == 1:
            entries.append(TableSharding(table=names[t], sharding="table_wise", ranks=gpus))
        elif len(gpus) == world:
            entries.append(TableSharding(table=names[t], sharding="row_wise"))
        elif gpus == list(range(host * per_host, (host + 1) * per_host)):
            entries.append(TableSharding(table=names[t], sharding="table_row_wise", host=host))
        else:
            return None, (f"table {t} is split over GPUs {gpus[0]}-{gpus[-1]}, a row split over a subset of ranks "
                          "that the plan format cannot express")
    return ShardingPlan(dense=DenseParallel(strategy="ddp"), tables=entries), ""


def _dle_plan(problem: RecsysProblem) -> ShardingPlan:
    """NVIDIA DeepLearningExamples PyTorch DLRM's hybrid-parallel device mapping
    (dlrm/utils/distributed.py, get_device_mapping / distribute_to_buckets): tables in
    decreasing row count, each onto the open GPU holding the fewest rows, a GPU closed once it
    holds ceil(T / G) tables; with more than 4 GPUs, G = W - 1 and GPU 0 (the bottom MLP's)
    gets none."""
    world = problem.cluster.num_devices
    names = _table_names(problem)
    rows = [t.num_rows for t in problem.model.tables for _ in range(t.count)]
    gpus = list(range(1, world)) if world > 4 else list(range(world))
    cap = math.ceil(len(names) / len(gpus))
    load = {g: 0 for g in gpus}
    held: dict[int, list[int]] = {g: [] for g in gpus}
    for t in sorted(range(len(names)), key=lambda i: -rows[i]):
        gpu = min((g for g in gpus if len(held[g]) < cap), key=lambda g: (load[g], g))
        held[gpu].append(t)
        load[gpu] += rows[t]
    entries = [TableSharding(table=names[t], sharding="table_wise", ranks=[g]) for g in gpus for t in held[g]]
    return ShardingPlan(dense=DenseParallel(strategy="ddp"), tables=entries)


def _not_expressible(text: str) -> str | None:
    """Why a stated sharding cannot be written in the plan format (None: not stated enough)."""
    t = text.lower()
    if "hybridsparseembedding" in t or "frequent rows" in t:
        return ("HugeCTR hybrid embedding: the most frequent rows replicated data-parallel on every GPU, the rest "
                "model-parallel, a split by row frequency the plan format cannot express")
    return None


_LISTS = re.compile(r"\[\s*\[[\d,\s\[\]]*\]\s*\]")


def _int_lists(text: str) -> list[list[int]] | None:
    """`[[21, 6], [20, 0], ...]` as lists of ints, else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in value):
        return value
    return None


def resolve_sharding(problem: RecsysProblem, p: dict, notes: list[str]) -> ShardingPlan:
    """The row's published sharding where the plan format expresses it, else the greedy plan."""
    text = " ".join(str(p.get("embedding_sharding") or "").split())
    quoted = f"the row: {text[:150]}{'...' if len(text) > 150 else ''}" if text else "the row gives none"
    dense = str(p.get("dense_parallelism") or "").lower()
    if problem.cluster.num_devices == 1:
        notes.append("sharding: one GPU, every table on it")
        return _single_gpu_plan(problem)
    if dense and not any(word in dense for word in ("data parallel", "ddp", "horovod")):
        notes.append(f"dense parallelism {p.get('dense_parallelism')!r}: DDP assumed")
    match = _LISTS.search(text)
    if match:
        lists = _int_lists(match.group(0))
        plan, why = _list_plan(problem, lists) if lists is not None else (None, "unreadable per-GPU lists")
        if plan is not None:
            notes.append("sharding: the published per-GPU table lists, dense DDP")
            return plan
        notes.append(f"published sharding not expressible in the plan format ({why}): {GREEDY}")
        return greedy_plan(problem)
    if "whole tables per gpu" in text.lower() and "bottom mlp on gpu 0" in text.lower() \
            and all(t.count == 1 for t in problem.model.tables):
        notes.append("sharding: the DeepLearningExamples PyTorch device mapping (largest table first onto the GPU "
                     "with the fewest rows, at most ceil(T/G) tables per GPU, none on GPU 0 beyond 4 GPUs); its bottom "
                     "MLP runs on GPU 0 alone, priced as data-parallel (DDP) like the top MLP")
        return _dle_plan(problem)
    why = _not_expressible(text)
    if why:
        notes.append(f"published sharding not expressible in the plan format ({why}): {GREEDY}")
        return greedy_plan(problem)
    plan = greedy_plan(problem)
    if "table-wise" in text.lower() or "table wise" in text.lower():
        kinds = {e.sharding for e in plan.tables}
        agrees = "it agrees" if kinds == {"table_wise"} else f"it uses {sorted(kinds)}"
        notes.append(f"sharding stated as table-wise without the placement ({quoted}): greedy placement, {agrees}")
        return plan
    notes.append(f"sharding not stated: {GREEDY} ({quoted})")
    return plan


# -- the row ---------------------------------------------------------------------------------

_GPU = re.compile(r"(?<![a-z0-9])(gb\d{3}|[a-z]\d{2,3}[a-z]?)(?=[^a-z0-9]|$)")


def _same_gpu(hw: dict, preset: str) -> None:
    """Refuses a row whose GPU has no device preset of its own (the closest preset by peak and
    memory is another GPU: a V100 would be priced as an A100)."""
    named = _GPU.search(str(hw.get("gpu") or "").lower())
    chosen = _GPU.search(preset)
    if named and chosen and named.group(1) != chosen.group(1):
        raise PlannerError(f"hardware.gpu: {hw.get('gpu')!r} has no device preset (the closest, {preset}, is "
                           "another GPU); a device preset (and a cluster for it) from its datasheet is needed")


def resolve_dlrm_row(row: dict) -> tuple[RecsysProblem, ShardingPlan, list[str], str]:
    """(problem, plan, assumptions, device preset) of one checked DLRM row; raises PlannerError
    (with the reason) when the row cannot be priced."""
    from planner.fidelity.validate import resolve_cluster  # validate routes DLRM rows here

    notes: list[str] = []
    m, hw, p = row["model"], row["hardware"], row["plan"]
    if row.get("workload") != "training":
        raise PlannerError(f"workload {row.get('workload')!r}: only training is priced so far")
    model = resolve_dlrm_model(m, notes)
    cluster, preset = resolve_cluster(hw, notes)
    _same_gpu(hw, preset)
    task = _task(p, hw["num_gpus"], notes)
    problem = RecsysProblem(model=model, cluster=cluster, task=task, source=row["id"])
    wire = model.output_dtype or "the tables' dtype"
    notes.append(f"pooled embeddings and their gradients cross the all-to-all in {wire} "
                 f"({'the model' if model.output_dtype else 'no wire dtype in the model or the row'}); every id "
                 "reads and updates a distinct row (no access skew: unique_fraction 1, no cache hits)")
    plan = resolve_sharding(problem, p, notes)
    errors = check_plan(plan, problem)
    if errors:
        raise PlannerError("the plan does not fit the problem: " + "; ".join(errors))
    other = (row.get("measured") or {}).get("other_metrics") or {}
    no_eval = other.get("samples_per_s_excluding_eval_mean") if isinstance(other, dict) else None
    if isinstance(no_eval, (int, float)) and row["measured"].get("samples_per_s"):
        gain = 100.0 * (no_eval / row["measured"]["samples_per_s"] - 1)
        notes.append(f"measured samples/s includes the in-run evaluations (without them: {no_eval:,.0f}, "
                     f"{gain:+.0f}%); predicted: training steps only")
    return problem, plan, notes, preset


def predict_dlrm_row(row: dict) -> tuple[RecsysProblem, ShardingPlan, list[str], str, RecsysBreakdown]:
    """`resolve_dlrm_row` and the priced step; a plan that does not fit in HBM is refused (the
    run must have kept tables in host memory, which the cost model does not price)."""
    problem, plan, notes, preset = resolve_dlrm_row(row)
    breakdown = evaluate(problem, plan)
    if not breakdown.fits:
        need = float(plan_loads(problem, plan).memory_bytes.sum())
        have = breakdown.memory_capacity_bytes * problem.cluster.num_devices
        where = (f"{breakdown.peak_memory_bytes / 2**30:.1f} GiB on GPU {breakdown.peak_memory_rank} > "
                 f"{breakdown.memory_capacity_bytes / 2**30:.1f} GiB usable ({plan.summary()})")
        if need > have:
            raise PlannerError(f"the tables do not fit in HBM: {where}; {need / 2**30:.0f} GiB of tables, optimizer "
                               f"state and buffers for {have / 2**30:.0f} GiB on all GPUs: the run must have kept "
                               "tables in host memory (UVM), which the cost model does not price")
        which = "the greedy plan" if any(GREEDY in n or "greedy placement" in n for n in notes) else "the plan"
        raise PlannerError(f"{which} overfills a GPU: {where}, though the tables fit in aggregate "
                           f"({need / 2**30:.0f} of {have / 2**30:.0f} GiB)")
    return problem, plan, notes, preset, breakdown
