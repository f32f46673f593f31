"""DLRM training tasks: global batch, precisions, optimizers, what the framework overlaps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from planner.core.schema import Bytes, Spec

EmbeddingOptimizer = Literal["sgd", "rowwise_adagrad", "adagrad", "adam"]

OPTIMIZER_STATE_BYTES = {
    # fp32 state per row and per element of an embedding row, as FBGEMM's fused table-batched
    # embedding (TBE) optimizers keep it: rowwise Adagrad one fp32 per row (EXACT_ROWWISE_ADAGRAD),
    # Adagrad one fp32 per element, Adam two fp32 moments per element; SGD none.
    "sgd": (0, 0),
    "rowwise_adagrad": (4, 0),
    "adagrad": (0, 4),
    "adam": (0, 8),
}
"""optimizer -> (state bytes per row, state bytes per element)."""

DENSE_OPTIMIZER_STATE_BYTES = {"sgd": 0, "adagrad": 4, "adam": 8}
"""fp32 optimizer state bytes per dense parameter."""


class RecsysFramework(Spec):
    """How the training framework runs a step (TorchRec's DistributedModelParallel defaults)."""

    pipelined_input_dist: bool = Field(
        default=True,
        description="The id all-to-all of the next batch runs under this batch's compute (TorchRec "
        "TrainPipelineSparseDist); false = it precedes the lookups.",
    )
    input_buffers: int = Field(
        default=2, ge=1, le=16,
        description="Batches of ids held per shard at once (2 with the pipelined input dist).",
    )
    framework_overhead_bytes: Bytes = Field(
        default=2.5 * 2**30,
        description="CUDA context, NCCL and cuBLAS workspaces, allocator slack not in the formulas "
        "(the LLM family's default).",
    )


class RecsysTraining(Spec):
    """One DLRM training job."""

    kind: Literal["recsys_training"] = "recsys_training"
    global_batch_size: int = Field(gt=0, le=2**40, description="Samples per step, over all ranks.")
    dense_precision: Literal["fp32", "tf32", "bf16", "fp16"] = Field(
        default="tf32", description="MLP GEMM precision (weights and activations stay fp32 for fp32/tf32)."
    )
    embedding_optimizer: EmbeddingOptimizer = Field(
        default="rowwise_adagrad", description="Fused into the embedding backward (FBGEMM TBE)."
    )
    dense_optimizer: Literal["sgd", "adagrad", "adam"] = "adam"
    framework: RecsysFramework = RecsysFramework()
    memory_headroom: float = Field(default=0.05, ge=0, lt=1, description="Fraction of device memory kept free.")
