"""Model architectures: a registry of families keyed by `family`.

`dense` decoder transformers are priced; `moe` models (planner/llm/moe_model.py) load, validate
and count their parameters, and are refused by the training cost model until expert
parallelism is priced. Recommendation models (DLRM) will register here too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from planner.core.schema import Spec
from planner.llm.decoder import DecoderTransformer
from planner.llm.moe_model import MoETransformer


class DenseTransformer(DecoderTransformer):
    """A dense decoder-only transformer (GPT, Llama, Nemotron...)."""

    family: Literal["dense"] = "dense"
    ffn_hidden_size: int = Field(gt=0, le=2**24, description="MLP inner width f.")
    gated_mlp: bool = Field(description="SwiGLU-style gated MLP (3 matrices) vs plain (2).")


MODEL_FAMILIES: dict[str, type[Spec]] = {"dense": DenseTransformer, "moe": MoETransformer}
"""family -> schema. New families (dlrm) register here."""

ModelSpec = DenseTransformer
