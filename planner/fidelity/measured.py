"""Schemas of the fidelity data files: measured runs (`validate`) and microbenchmarks (`calibrate`).

Only the fields the planner reads are declared; the shared files carry many more (sources,
notes, confidence), which are kept as they are. Declared fields are typed strictly: a wrong
type or an impossible value in one measured run skips that run with the field named; in the
efficiency file, whose every part feeds the fit, it is an error naming the file and field.

A run whose `model.family` is `dlrm` is a recommendation-model run (planner/fidelity/dlrm_rows.py):
its model block gives tables, pooling, MLPs and interaction instead of layers and heads, its plan
the embedding sharding, and it measures samples per second. A run whose `workload` is `inference`
is a serving benchmark (planner/fidelity/serving_rows.py): it measures the batch, prompt and
output lengths it ran and its output tokens/s per GPU or its time to first token.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from planner.core.files import shown
from planner.llm.task import RecomputeModule

PositiveInt = Annotated[int, Field(gt=0, le=2**40)]
PositiveNumber = Annotated[float, Field(ge=1e-3, le=1e9)]
"""A measured rate, size or peak in the file's units (TFLOP/s, GB, Gb/s, tokens/s): 0.001..1e9."""
Seconds = Annotated[float, Field(ge=1e-6, le=1e7)]


class Record(BaseModel):
    """Declared fields strict and finite; undeclared fields kept."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class RunModel(Record):
    name: str | None = None
    num_layers: PositiveInt
    hidden_size: PositiveInt
    num_heads: PositiveInt
    num_kv_heads: PositiveInt | None = None
    head_dim: PositiveInt | None = None
    ffn_hidden_size: PositiveInt | None = None
    ffn_activation: str | None = None
    vocab_size: PositiveInt | None = None
    seq_len: PositiveInt
    moe_num_experts: int | None = Field(default=None, ge=0)


class RunHardware(Record):
    gpu: str | None = None
    cluster: str | None = None
    num_gpus: Annotated[int, Field(gt=0, le=2**24)]
    gpus_per_node: Annotated[int, Field(gt=0, le=2**24)] | None = None
    peak_dense_tflops_per_gpu: PositiveNumber | None = None
    gpu_memory_gb: PositiveNumber | None = None
    inter_node_gbps_per_gpu: PositiveNumber | None = None


class RunPlan(Record):
    framework: str | None = None
    precision: str | None = None
    other: str | None = None
    recompute: str | None = None
    tp: PositiveInt | None = None
    pp: PositiveInt | None = None
    cp: PositiveInt | None = None
    dp: PositiveInt | None = None
    vpp: PositiveInt | None = None
    micro_batch_size: PositiveInt | None = None
    global_batch_size: PositiveInt | None = None
    global_batch_tokens: PositiveInt | None = None
    sp: bool | None = None
    zero_stage: Annotated[int, Field(ge=0, le=3)] | None = None
    # Megatron-Core --recompute-modules the run used (with recompute: selective); not a key of the
    # shared file's rows, which take theirs from planner/fidelity/recipes.yaml.
    recompute_modules: Annotated[list[RecomputeModule], Field(min_length=1)] | None = None


class RunMeasured(Record):
    step_time_s: Seconds | None = None
    tokens_per_s_per_gpu: PositiveNumber | None = None
    tflops_per_gpu: PositiveNumber | None = None
    tflops_kind: str | None = None
    mfu_pct: Annotated[float, Field(ge=1e-3, le=100)] | None = None
    memory_gib_per_gpu: PositiveNumber | None = None


class MeasuredRun(Record):
    """One published run (see ../shared/data/measured_runs.yaml for the full format)."""

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]
    workload: str
    model: RunModel
    hardware: RunHardware
    plan: RunPlan
    measured: RunMeasured


class InferenceRunMeasured(Record):
    """What a serving benchmark measured: the batch and lengths it ran, and its output throughput
    per GPU or its time to first token."""

    infer_batch_size: PositiveInt
    infer_input_len: PositiveInt
    infer_output_len: PositiveInt
    output_tokens_per_s_per_gpu: PositiveNumber | None = None
    first_token_latency_ms: PositiveNumber | None = None

    @model_validator(mode="after")
    def _check(self) -> InferenceRunMeasured:
        if self.output_tokens_per_s_per_gpu is None and self.first_token_latency_ms is None:
            raise ValueError("measured.output_tokens_per_s_per_gpu: field required (or measured.first_token_latency_ms)")
        return self


class InferenceMeasuredRun(Record):
    """One published serving run (`workload: inference`)."""

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]
    workload: Literal["inference"]
    model: RunModel
    hardware: RunHardware
    plan: RunPlan
    measured: InferenceRunMeasured


def is_inference_row(row: Any) -> bool:
    """Whether a (raw or checked) row is a serving run: `workload: inference`."""
    return isinstance(row, dict) and row.get("workload") == "inference"


Width = Annotated[int, Field(gt=0, le=2**24)]


class DlrmRunInteraction(Record):
    """A structured interaction (DCN-v2 low-rank cross network); a plain string names the others
    ('dot ...', 'concat')."""

    type: Annotated[str, Field(min_length=1, max_length=100)]
    input_width: Width | None = None
    num_layers: Annotated[int, Field(gt=0, le=64)]
    low_rank_dim: Width


class DlrmRunModel(Record):
    """A DLRM model as a row states it: the MLP lists start with their input width."""

    family: Literal["dlrm"]
    name: str | None = None
    preset: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    num_dense_features: Width
    num_tables: Annotated[int, Field(gt=0, le=2**20)]
    embedding_dim: Annotated[int, Field(gt=0, le=2**16)]
    rows: list[Annotated[int, Field(gt=0, le=2**40)]] = Field(min_length=1, max_length=2**20)
    pooling: Annotated[float, Field(gt=0, le=2**20)] | list[Annotated[float, Field(gt=0, le=2**20)]]
    bottom_mlp: list[Width] = Field(min_length=2, max_length=1024)
    top_mlp: list[Width] = Field(min_length=2, max_length=1024)
    interaction: Annotated[str, Field(min_length=1, max_length=1000)] | DlrmRunInteraction
    embedding_dtype: str | None = None

    @field_validator("interaction", mode="before")
    @classmethod
    def _interaction(cls, value: Any) -> Any:
        """A mapping is a cross network: checked here so that its errors name its own fields."""
        if isinstance(value, dict):
            try:
                return DlrmRunInteraction.model_validate(value)
            except ValidationError as exc:
                raise ValueError("; ".join(field_errors(exc))) from None
        if not isinstance(value, str):  # pydantic reports ValueError (not TypeError) as a field error
            raise ValueError(f"expected a string ('dot', 'concat') or a cross-network mapping, got "  # noqa: TRY004
                             f"{type(value).__name__}")
        return value

    @field_validator("rows")
    @classmethod
    def _rows(cls, value: list[int], info: ValidationInfo) -> list[int]:
        tables = info.data.get("num_tables")
        if tables is not None and len(value) != tables:
            raise ValueError(f"{len(value)} entries but num_tables is {tables} (one row count per table)")
        return value

    @field_validator("pooling")
    @classmethod
    def _pooling(cls, value: float | list[float], info: ValidationInfo) -> float | list[float]:
        tables = info.data.get("num_tables")
        if isinstance(value, list) and tables is not None and len(value) != tables:
            raise ValueError(f"{len(value)} entries but num_tables is {tables} (one pooling factor, or one per table)")
        return value

    @field_validator("bottom_mlp")
    @classmethod
    def _bottom(cls, value: list[int], info: ValidationInfo) -> list[int]:
        dense = info.data.get("num_dense_features")
        if dense is not None and value[0] != dense:
            raise ValueError(f"starts with its input width {value[0]}, but num_dense_features is {dense}")
        return value


class DlrmRunPlan(Record):
    framework: str | None = None
    precision: str | None = None
    other: str | None = None
    global_batch_size: PositiveInt
    local_batch_size: PositiveInt | None = None
    embedding_sharding: str | None = None
    dense_parallelism: str | None = None
    embedding_optimizer: str | None = None
    dense_optimizer: str | None = None


class DlrmRunMeasured(Record):
    samples_per_s: PositiveNumber | None = None
    samples_per_s_per_gpu: PositiveNumber | None = None
    step_time_s: Seconds | None = None

    @model_validator(mode="after")
    def _check(self) -> DlrmRunMeasured:
        if self.samples_per_s is None and self.step_time_s is None:
            raise ValueError("measured.samples_per_s: field required (or measured.step_time_s)")
        return self


class DlrmMeasuredRun(Record):
    """One published DLRM training run (`model.family: dlrm`)."""

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]
    workload: str
    model: DlrmRunModel
    hardware: RunHardware
    plan: DlrmRunPlan
    measured: DlrmRunMeasured


def is_dlrm_row(row: Any) -> bool:
    """Whether a (raw or checked) row is a DLRM run: its model says `family: dlrm`."""
    return isinstance(row, dict) and isinstance(row.get("model"), dict) and row["model"].get("family") == "dlrm"


def check_run(row: Any, index: int) -> tuple[str, dict | None, str | None]:
    """(row id for messages, the row with declared fields typed, or None and the reason)."""
    label = f"[{index}]"
    if isinstance(row, dict) and isinstance(row.get("id"), str) and row["id"].isprintable() and row["id"]:
        label = row["id"][:200]
    if not isinstance(row, dict):
        return label, None, f"expected a mapping, got {type(row).__name__}"
    schema = DlrmMeasuredRun if is_dlrm_row(row) else InferenceMeasuredRun if is_inference_row(row) else MeasuredRun
    try:
        return label, schema.model_validate(row).model_dump(), None
    except ValidationError as exc:
        return label, None, "; ".join(field_errors(exc))


class GemmBySize(Record):
    gpu: str
    peak_tflops: PositiveNumber | None = None
    source: str = ""
    buckets_gflop: dict[str, dict[str, Any]] = Field(default_factory=dict)
    rows: list[Annotated[list[Any], Field(min_length=5)]] | None = Field(default=None, max_length=1000)


class GemmBestShape(Record):
    gpu: str
    dtype: str
    peak: PositiveNumber
    fraction: Annotated[float, Field(gt=0, le=1.5)]


class AllReduceSweep(Record):
    system: str
    link_unidirectional_gb_s: PositiveNumber | None = None
    points: list[Annotated[list[Annotated[float, Field(ge=1e-3, le=1e15)]], Field(min_length=2, max_length=2)]] = Field(
        min_length=1, max_length=1000
    )


class EfficiencyData(Record):
    """The parts of ../shared/data/efficiency.yaml that `calibrate` fits to."""

    gemm_by_size: list[GemmBySize] = Field(min_length=1)
    gemm_best_shape: list[GemmBestShape] = Field(min_length=1)
    allreduce_sweeps: list[AllReduceSweep] = Field(default_factory=list)


def field_errors(exc: ValidationError) -> list[str]:
    """`dotted.field: message` per failing field."""
    out = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        loc = ".".join(p if len(p) <= 60 and p.isprintable() else shown(p, 60) for p in parts)
        message = "field required" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
        out.append(f"{loc or '(top level)'}: {message}")
    return out
