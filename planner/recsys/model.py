"""DLRM-style recommendation models: embedding tables, bottom MLP, feature interaction, top MLP.

Anatomy (Naumov et al. 2019; ../shared/reference/recsys.md sec. A.1): dense features go through
the bottom MLP; each sparse feature looks up a bag of ids in its embedding table and pools them
(sum) into one vector (or keeps them, for sequence features); the interaction combines the
bottom MLP's output with the pooled vectors; the top MLP produces the logit.

Tables are declared in groups: `count` identical tables share one entry (MAD-Max's DLRM-A is one
group of 4096 tables), named `<name>_<i>` when count > 1. Every quantity a cost needs is here:
rows, width, ids per sample (pooling factor), pooled or not, weighted (an fp32 weight per id),
storage dtype, and an optional access skew (`unique_fraction`: distinct rows per id in one
global batch, 1 = every id a distinct row, the upper bound on optimizer traffic).
"""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Annotated, Literal

from pydantic import Field, model_validator

from planner.core.schema import Name, Note, Spec

EmbeddingDtype = Literal["fp32", "fp16", "bf16"]
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2}

MAX_TABLES = 2**20
"""Most embedding tables a model may declare (over a million)."""

Width = Annotated[int, Field(gt=0, le=2**24)]


class EmbeddingTable(Spec):
    """One embedding table, or `count` identical ones."""

    name: Name = Field(description="Table (feature) name; a group of count > 1 names its tables <name>_<i>.")
    count: int = Field(default=1, gt=0, le=MAX_TABLES, description="Identical tables in this group.")
    num_rows: int = Field(gt=0, le=2**40, description="Rows (hash buckets / vocabulary size).")
    dim: int = Field(gt=0, le=2**16, description="Embedding width D (elements per row).")
    pooling_factor: float = Field(
        gt=0, le=2**20, description="Mean ids per sample for this feature (bag size P; 1 = one-hot)."
    )
    pooled: bool = Field(default=True, description="Sum-pooled bag (EmbeddingBag); false = sequence (one "
                         "output row per id).")
    weighted: bool = Field(default=False, description="Each id carries an fp32 weight (id-score list).")
    dtype: EmbeddingDtype | None = Field(default=None, description="Storage dtype; null = the model's.")
    unique_fraction: float = Field(
        default=1.0, gt=0, le=1,
        description="Distinct rows touched per id in one global batch (access skew; 1 = no reuse, the "
        "upper bound on the fused optimizer's row updates).",
    )


class DotInteraction(Spec):
    """Pairwise dot products of the F pooled vectors and the bottom MLP output, without self
    pairs, concatenated with the bottom MLP output: width D + C(F+1, 2) (Naumov et al. 2019)."""

    type: Literal["dot"] = "dot"


class DcnInteraction(Spec):
    """DCN-v2 low-rank cross network (Wang et al. 2021) on the concatenation of the bottom MLP
    output and the pooled vectors: each layer x_{l+1} = x0 * (U (V x_l) + b) + x_l."""

    type: Literal["dcn"] = "dcn"
    num_layers: int = Field(gt=0, le=64)
    low_rank_dim: int = Field(gt=0, le=2**20)


class ConcatInteraction(Spec):
    """The pooled vectors and the bottom MLP output, concatenated (no interaction compute)."""

    type: Literal["concat"] = "concat"


class FixedWidthInteraction(Spec):
    """An interaction whose compute is not modelled and whose output width is given: MAD-Max's
    DLRM idealisation (square MLP layers, the interaction not priced; madmax.md sec. 1.3)."""

    type: Literal["fixed_width"] = "fixed_width"
    output_width: int = Field(gt=0, le=2**24)


Interaction = Annotated[
    DotInteraction | DcnInteraction | ConcatInteraction | FixedWidthInteraction, Field(discriminator="type")
]


def _generated_name_clash(tables: list[EmbeddingTable]) -> tuple[int, int] | None:
    """(index of a single table, index of a group) where the single table's name is one of the
    group's generated names `<group>_<i>`, or None.

    Complete without listing the generated names (up to MAX_TABLES): a generated name ends in "_"
    and a canonical decimal, so it splits at its last "_" into the group's name and i. Two groups
    therefore never generate the same name, and a single table's name can only be the one
    generated name its own last "_" splits it into.
    """
    groups = {t.name: index for index, t in enumerate(tables) if t.count > 1}
    for index, t in enumerate(tables):
        if t.count > 1 or "_" not in t.name:
            continue
        prefix, _, suffix = t.name.rpartition("_")
        if not (suffix.isascii() and suffix.isdigit()) or str(int(suffix)) != suffix:
            continue
        group = groups.get(prefix)
        if group is not None and int(suffix) < tables[group].count:
            return index, group
    return None


class Dlrm(Spec):
    """A DLRM-style model."""

    family: Literal["dlrm"] = "dlrm"
    name: Name
    source: Note = ""
    num_dense_features: int = Field(gt=0, le=2**24, description="Width of the dense input.")
    bottom_mlp: list[Width] = Field(min_length=1, max_length=1024,
                                    description="Bottom MLP layer output widths (input: the dense features).")
    interaction: Interaction
    top_mlp: list[Width] = Field(min_length=1, max_length=1024,
                                 description="Top MLP layer output widths (input: the interaction output).")
    tables: list[EmbeddingTable] = Field(min_length=1, max_length=MAX_TABLES)
    embedding_dtype: EmbeddingDtype = Field(default="fp32", description="Default table storage dtype.")
    output_dtype: EmbeddingDtype | None = Field(
        default=None, description="Pooled outputs and their gradients on the wire; null = each table's dtype."
    )

    @model_validator(mode="after")
    def _check(self) -> Dlrm:
        counts = Counter(t.name for t in self.tables)
        duplicates = sorted(n for n, k in counts.items() if k > 1)
        if duplicates:
            raise ValueError(f"tables: table names must be unique; {duplicates[0]!r} appears more than once")
        if self.num_tables > MAX_TABLES:
            raise ValueError(f"tables: {self.num_tables:,} tables in all; at most {MAX_TABLES:,} are accepted")
        clash = _generated_name_clash(self.tables)
        if clash is not None:
            single, group = clash
            g, t = self.tables[group], self.tables[single]
            raise ValueError(
                f"tables: table names must be unique; tables[{group}] ({g.name!r}, count {g.count}) names its tables "
                f"{g.name}_0..{g.name}_{g.count - 1}, and tables[{single}].name {t.name!r} is one of them "
                "(rename one)"
            )
        if isinstance(self.interaction, DotInteraction):
            width = self.bottom_mlp[-1]
            other = next((t for t in self.tables if t.dim != width), None)
            if other is not None:
                raise ValueError(
                    f"interaction: a dot interaction needs every table's dim equal to the bottom MLP's output "
                    f"width ({width}); table {other.name!r} has dim {other.dim} (use concat or dcn)"
                )
            if any(not t.pooled for t in self.tables):
                raise ValueError("interaction: a dot interaction needs pooled tables (sequence tables have one "
                                 "vector per id)")
        return self

    @property
    def num_tables(self) -> int:
        return sum(t.count for t in self.tables)

    def table_dtype(self, table: EmbeddingTable) -> str:
        return table.dtype or self.embedding_dtype

    @property
    def pooled_width(self) -> int:
        """Width of the concatenated pooled vectors per sample (sum of table dims)."""
        return sum(t.count * t.dim for t in self.tables)

    @property
    def interaction_input_width(self) -> int:
        return self.bottom_mlp[-1] + self.pooled_width

    @property
    def interaction_output_width(self) -> int:
        i = self.interaction
        if isinstance(i, DotInteraction):
            return self.bottom_mlp[-1] + comb(self.num_tables + 1, 2)
        if isinstance(i, FixedWidthInteraction):
            return i.output_width
        return self.interaction_input_width

    def mlp_shapes(self) -> list[tuple[int, int]]:
        """(input, output) width of every dense layer, bottom then top."""
        shapes = []
        width = self.num_dense_features
        for out in self.bottom_mlp:
            shapes.append((width, out))
            width = out
        width = self.interaction_output_width
        for out in self.top_mlp:
            shapes.append((width, out))
            width = out
        return shapes

    @property
    def interaction_params(self) -> int:
        i = self.interaction
        if isinstance(i, DcnInteraction):
            n = self.interaction_input_width
            return i.num_layers * (2 * n * i.low_rank_dim + n)
        return 0

    @property
    def dense_params(self) -> int:
        """MLP weights and biases plus the interaction's parameters."""
        return sum(i * o + o for i, o in self.mlp_shapes()) + self.interaction_params

    @property
    def embedding_params(self) -> int:
        return sum(t.count * t.num_rows * t.dim for t in self.tables)

    def interaction_flops_per_sample(self) -> float:
        """Forward FLOPs of the interaction for one sample."""
        i = self.interaction
        if isinstance(i, DotInteraction):
            vectors = self.num_tables + 1
            return 2.0 * vectors * vectors * self.bottom_mlp[-1]
        if isinstance(i, DcnInteraction):
            n = self.interaction_input_width
            return i.num_layers * (2.0 * 2 * n * i.low_rank_dim + 3.0 * n)
        return 0.0

    def dense_flops_per_sample(self) -> float:
        """Forward FLOPs of the MLPs and the interaction for one sample (2 per multiply-add)."""
        return sum(2.0 * i * o for i, o in self.mlp_shapes()) + self.interaction_flops_per_sample()

    def table_names(self, table: EmbeddingTable) -> list[str]:
        if table.count == 1:
            return [table.name]
        return [f"{table.name}_{i}" for i in range(table.count)]
