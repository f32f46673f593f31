"""torchtitan: a TOML job file (0.2.x) or command-line flags (0.3, which has no TOML).

DP maps to data_parallel_replicate_degree x data_parallel_shard_degree: ZeRO-0 replicates,
ZeRO-3 shards (FSDP2), HSDP shards within groups and replicates across. torchtitan has no
ZeRO-1/2: they are exported as FSDP (ZeRO-3), an explicit approximation (more communication,
less memory). Stages become module_fqns_per_model_part (explicit module names per model chunk,
any partition; 0.3 names the head `lm_head`, 0.2 `output`).

Batch: torchtitan runs global / (local_batch_size x DP) gradient-accumulation steps of
local_batch_size sequences each; with PP the local batch is one pipeline pass cut into
micro-batches of pipeline_parallel_microbatch_size. So local_batch_size is the micro-batch
without PP and micro-batch x micro-batches with PP.

Recompute: "full" is torchtitan's "full". Megatron's selective recompute re-runs only the core
attention (the s x s scores), which torchtitan's SDPA attention never stores, so it is "none";
torchtitan's own "selective" mode is something else (every Nth block fully, or op-level:
keep matmul outputs, recompute the rest) and is not used.

fp8: Float8 linear layers with the tensorwise (per-tensor dynamic scaling) recipe, written
explicitly (0.2: [quantize.linear.float8] recipe_name). torchtitan 0.3 sets converters in a
config_registry function, not by flag, and offers rowwise recipes only, so an fp8 plan is an
error there. TP communication
overlap is async TP, which needs torch.compile of the model (compile is switched on).
"""

from __future__ import annotations

from planner.export.base import Exported, ExportError, header
from planner.export.megatron import chunk_layers
from planner.llm.plan import Plan
from planner.llm.problem import Problem

VERSIONS = ("0.2", "0.3")
FP8_RECIPE = "tensorwise"
FP8_CONVERTER = "quantize.linear.float8"
"""torchtitan 0.2's registered name of the Float8 linear converter."""


def _module_parts(problem: Problem, plan: Plan, head: str) -> list[list[str]]:
    sizes = chunk_layers(plan.layers_per_stage(problem.model.num_layers), plan.virtual_stages)
    parts, start = [], 0
    for k, size in enumerate(sizes):
        names = [f"layers.{n}" for n in range(start, start + size)]
        if k == 0:
            names = ["tok_embeddings", *names]
        if k == len(sizes) - 1:
            names = [*names, "norm", head]
        parts.append(names)
        start += size
    return parts


def torchtitan_settings(problem: Problem, plan: Plan, version: str) -> tuple[dict[str, dict], list[str]]:
    task = problem.task
    notes = []
    if plan.zero_stage == 0:
        replicate, shard = plan.dp, 1
    else:
        shard = plan.zero_shard_size or plan.dp
        replicate = plan.dp // shard
        if plan.zero_stage in (1, 2):
            notes.append(f"APPROXIMATION: ZeRO-{plan.zero_stage} exported as FSDP (ZeRO-3): torchtitan has no ZeRO-1/2")
    parallelism: dict = {
        "data_parallel_replicate_degree": replicate,
        "data_parallel_shard_degree": shard,
        "tensor_parallel_degree": plan.tp,
        "context_parallel_degree": plan.cp,
        "pipeline_parallel_degree": plan.pp,
    }
    settings: dict[str, dict] = {}
    if plan.tp_comm_overlap:
        if version == "0.2":
            parallelism["enable_async_tensor_parallel"] = True
        settings["compile"] = {"enable": True, "components": ["model", "loss"]}
        if version == "0.3":
            settings["compile"]["enable_async_tensor_parallel"] = True
        notes.append("TP overlap is torchtitan's async TP, which needs torch.compile: compile is enabled")
    if plan.tp > 1 and not plan.sp:
        notes.append("APPROXIMATION: torchtitan's TP always shards the sequence (SP); the plan had SP off")
    num_micro_batches = plan.num_micro_batches(task.num_sequences)
    if plan.pp > 1:
        parallelism["pipeline_parallel_schedule"] = "Interleaved1F1B" if plan.virtual_stages > 1 else "1F1B"
        parallelism["pipeline_parallel_microbatch_size"] = plan.micro_batch_size
        parallelism["module_fqns_per_model_part"] = _module_parts(problem, plan, "output" if version == "0.2" else "lm_head")
        local = plan.micro_batch_size * num_micro_batches
    else:
        local = plan.micro_batch_size
    training: dict = {"local_batch_size": local, "global_batch_size": task.num_sequences, "seq_len": task.seq_len}
    if version == "0.3" and plan.pp > 1:
        training["disable_cuda_graphs"] = True  # 0.3 captures CUDA graphs by default and refuses them with PP
    settings = {"training": training, "parallelism": parallelism, **settings}
    if plan.recompute == "selective":
        mode = "none"
        notes.append('selective recompute (Megatron: core attention only) -> activation_checkpoint "none": '
                     "torchtitan's SDPA attention stores no s x s scores, which is all it saves; torchtitan's own "
                     '"selective" (every Nth block, or op-level) is a different policy')
    else:
        mode = plan.recompute
        counts = plan.recomputed_layers(problem.model.num_layers)
        if mode == "full" and counts != plan.layers_per_stage(problem.model.num_layers):
            notes.append(f"APPROXIMATION: per-stage recompute counts {counts} exported as full recompute of every layer")
    settings["activation_checkpoint"] = {"mode": mode}
    if task.precision == "fp8":
        if version == "0.3":
            raise ExportError("fp8: torchtitan 0.3 sets model converters in a config_registry function "
                              "(model_registry(..., converters=[Float8LinearConverter.Config(...)])), not by flag, "
                              f"and its Float8 recipes are rowwise only (the plan's is {FP8_RECIPE}); "
                              "export --target-version 0.2")
        settings["model"] = {"converters": [FP8_CONVERTER]}
        settings["quantize.linear.float8"] = {"recipe_name": FP8_RECIPE}
    elif task.precision == "fp16":
        notes.append("APPROXIMATION: fp16 exported as bf16: torchtitan's mixed precision is bf16 or fp32 (same "
                     "GEMM rate and bytes as fp16)")
    return settings, notes


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _flag(section: str, key: str, value) -> str:
    if isinstance(value, bool):
        return f"--{section}.{key}" if value else f"--{section}.no_{key}"
    if isinstance(value, list) and value and isinstance(value[0], list):
        return f"--{section}.{key} " + " ".join(",".join(part) for part in value)
    if isinstance(value, list):
        return f"--{section}.{key} " + ",".join(value)
    return f"--{section}.{key} {value}"


def torchtitan_module(problem: Problem) -> tuple[str, str] | None:
    """torchtitan 0.3's (--module, --config) for a model, else None.

    Only configs that train in bf16 qualify: flags cannot remove converters, and 0.3's
    llama3_405b config carries Float8 (rowwise) converters.
    """
    name = problem.model.name.lower().replace(" ", "").replace("-", "")
    return {"llama38b": ("llama3", "llama3_8b"), "llama370b": ("llama3", "llama3_70b")}.get(name)


def export_torchtitan(problem: Problem, plan: Plan, version: str | None) -> Exported:
    version = "0.2" if version is None else version
    if version not in VERSIONS:
        raise ExportError(f"torchtitan version {version!r} not supported; choose from {VERSIONS}")
    settings, notes = torchtitan_settings(problem, plan, version)
    if version == "0.2":
        head = header(problem, plan, "torchtitan", version, notes)
        body = []
        for section, values in settings.items():
            body.append(f"[{section}]")
            body += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
            body.append("")
        text = head + "\n" + "\n".join(body)
    else:
        module = torchtitan_module(problem)
        flags = [f"--module {module[0]} --config {module[1]}"] if module else []
        if module is None:
            notes.append(f"torchtitan 0.3 has no bf16 config for {problem.model.name}: add --module and --config of yours")
        mode = settings.pop("activation_checkpoint")["mode"]
        for section, values in settings.items():
            flags += [_flag(section, k, v) for k, v in values.items()]
        flags.append(f"activation-checkpoint:{mode}")
        head = header(problem, plan, "torchtitan", version, notes)
        text = head + "\n" + " \\\n".join(flags) + "\n"
    return Exported("torchtitan", version, text, [n for n in notes if n.startswith("APPROXIMATION")])
