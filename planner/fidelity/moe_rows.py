"""Mixture-of-experts rows of a measured-runs file: their model and the recipe settings the
rows do not carry (planner/fidelity/recipes.yaml).

A row's MoE model is the shipped preset of the same name when the row's dimensions agree with
it (the presets carry what rows do not: MLA ranks, router groups, shared-expert widths, MTP);
otherwise it is built from the row's own fields (GQA attention, SwiGLU experts), recorded as
an assumption.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from planner.core import files
from planner.core.errors import InputError, PlannerError
from planner.core.schema import Spec
from planner.llm.frameworks import DEFAULT_PROFILE
from planner.llm.moe_model import MoETransformer
from planner.llm.problem import PROBLEMS_DIR, build, load_model
from planner.llm.task import Dispatcher, RecomputeModule

RECIPES = Path(__file__).resolve().parent / "recipes.yaml"


class RecipePlan(Spec):
    etp: int | None = Field(default=None, gt=0, le=2**16)
    dispatcher: Dispatcher | None = None
    ep_comm_overlap: bool | None = None
    virtual_stages: int | None = Field(default=None, gt=0, le=2**16)
    micro_batch_size: int | None = Field(default=None, gt=0, le=2**20)
    stage_layers: list[int] | None = None
    tp_comm_overlap: bool | None = None
    recompute_modules: list[RecomputeModule] | None = Field(default=None, min_length=1)


class RecipeModel(Spec):
    mtp_layers: int | None = Field(default=None, ge=0, le=16)
    dispatch_dtype: Literal["bf16", "fp8"] | None = None


class RecipeFramework(Spec):
    overlap_grad_reduce: bool | None = None
    # The megatron-core profile's option: the dtype of the router's probabilities.
    moe_router_dtype: Literal["fp32", "bf16"] | None = None


class Recipe(Spec):
    id: str
    source: str
    plan: RecipePlan = RecipePlan()
    model: RecipeModel = RecipeModel()
    framework: RecipeFramework = RecipeFramework()


class Recipes(Spec):
    recipes: list[Recipe]


@cache
def recipes() -> dict[str, Recipe]:
    data = files.read_yaml(RECIPES)
    return {r.id: r for r in build(Recipes, data, str(RECIPES)).recipes}


def _preset_names() -> list[str]:
    return sorted(p.stem for p in (PROBLEMS_DIR / "models").glob("*.yaml"))


def resolve_moe_model(m: dict, notes: list[str]) -> MoETransformer:
    """The row's model: its preset when the dimensions agree, else built from the row."""
    name = str(m.get("name") or "")
    key = name.lower().replace(" ", "-")
    if key in _preset_names():
        preset = load_model(key)
        if preset.family == "moe":
            checks = {
                "num_layers": preset.num_layers, "hidden_size": preset.hidden_size,
                "moe_num_experts": preset.moe.num_experts, "moe_top_k": preset.moe.top_k,
                "moe_ffn_hidden_size": preset.moe.ffn_hidden_size,
            }
            differ = [f"{k} {m.get(k)} vs {v}" for k, v in checks.items() if m.get(k) is not None and m.get(k) != v]
            if differ:
                raise PlannerError(f"model {name!r} differs from the preset {key}: {', '.join(differ)}")
            has = ["MLA" if preset.mla is not None else "GQA attention", "router",
                   *(["shared experts"] if preset.moe.shared_ffn_hidden_size else []),
                   *(["MTP"] if getattr(preset, "mtp_layers", 0) else []),
                   *(["expert biases"] if preset.moe.bias else []),
                   *(["activation clamp"] if preset.moe.activation_clamp is not None else []),
                   *(["YaRN"] if preset.rope_yarn_factor is not None else []),
                   *(["sliding window"] if preset.sliding_window is not None else [])]
            notes.append(f"architecture from the preset {key} ({', '.join(has)} as published)")
            return preset
    for needed in ("num_heads", "moe_top_k", "moe_ffn_hidden_size"):
        if not m.get(needed):
            raise PlannerError(f"MoE model without a preset and without {needed}")
    dense = m.get("moe_dense_layers") or 0
    shared = m.get("moe_shared_experts") or 0
    heads = m["num_heads"]
    data: dict[str, Any] = {
        "family": "moe", "name": name or "row model", "num_layers": m["num_layers"],
        "hidden_size": m["hidden_size"], "num_heads": heads, "num_kv_heads": m.get("num_kv_heads") or heads,
        "head_dim": m.get("head_dim"), "vocab_size": m.get("vocab_size") or 32000,
        "max_seq_len": m["seq_len"], "ffn_hidden_size": m.get("ffn_hidden_size"),
        "moe": {
            "num_experts": m["moe_num_experts"], "top_k": m["moe_top_k"], "ffn_hidden_size": m["moe_ffn_hidden_size"],
            "shared_experts": shared, "shared_ffn_hidden_size": shared * m["moe_ffn_hidden_size"],
            "first_dense_layers": dense,
        },
    }
    notes.append("MoE model built from the row (GQA attention, SwiGLU experts; no preset of that name)")
    return build(MoETransformer, data, "measured row", prefix="model.")


def apply_recipe(row_id: str | None, plan: dict, framework: dict, model, notes: list[str]):
    """Applies the recipe settings of `row_id` to the plan and framework dicts; returns the
    model (with the recipe's MTP count)."""
    try:
        recipe = recipes().get(row_id) if row_id is not None else None
    except InputError as exc:
        raise PlannerError(f"recipe settings unreadable: {exc}") from exc
    if recipe is None:
        notes.append("no recipe settings for this row: etp 1, alltoall, no all-to-all overlap assumed")
        return model
    for key, value in recipe.plan.model_dump(exclude_none=True).items():
        plan[key] = value
    for key, value in recipe.framework.model_dump(exclude_none=True).items():
        if key == "moe_router_dtype":  # a profile option, not a task framework field
            framework.setdefault("profile", DEFAULT_PROFILE)
            framework.setdefault("options", {})[key] = value
        else:
            framework[key] = value
    settings = {**recipe.plan.model_dump(exclude_none=True), **recipe.framework.model_dump(exclude_none=True)}
    if recipe.model.mtp_layers is not None:
        settings["mtp_layers"] = recipe.model.mtp_layers
        if getattr(model, "mtp_layers", None) != recipe.model.mtp_layers:
            model = model.model_copy(update={"mtp_layers": recipe.model.mtp_layers})
    elif getattr(model, "mtp_layers", 0):
        model = model.model_copy(update={"mtp_layers": 0})
        settings["mtp_layers"] = 0
    if recipe.model.dispatch_dtype is not None and model.moe.dispatch_dtype != recipe.model.dispatch_dtype:
        settings["dispatch_dtype"] = recipe.model.dispatch_dtype
        model = model.model_copy(update={"moe": model.moe.model_copy(update={"dispatch_dtype": recipe.model.dispatch_dtype})})
    text = ", ".join(f"{k} {v}" for k, v in settings.items())
    notes.append(f"recipe settings ({recipe.source.split()[0]} {recipe.source.split()[1]}): {text}")
    return model
