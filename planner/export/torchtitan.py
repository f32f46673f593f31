"""torchtitan: a TOML job file (0.2.x) or override flags (0.3, which has no TOML).

DP maps to data_parallel_replicate_degree x data_parallel_shard_degree: ZeRO-0 replicates,
ZeRO-3 shards (FSDP2), HSDP shards within groups and replicates across. torchtitan has no
ZeRO-1/2: they are exported as FSDP (ZeRO-3), an explicit approximation (more communication,
less memory). Stages become module_fqns_per_model_part (0.2: explicit module names per model
chunk, any partition) or pipeline_parallel_layers_per_stage with fewer layers on the edge
stages (0.3 flags; other partitions are an error there).
"""

from __future__ import annotations

from planner.export.base import Exported, ExportError, header
from planner.plan import Plan
from planner.problem import Problem

VERSIONS = ("0.2", "0.3")


def torchtitan_settings(problem: Problem, plan: Plan) -> tuple[dict[str, dict], list[str]]:
    notes = []
    if plan.zero_stage == 0:
        replicate, shard = plan.dp, 1
    elif plan.zero_stage == 3:
        shard = plan.zero_shard_size or plan.dp
        replicate = plan.dp // shard
    else:
        shard = plan.zero_shard_size or plan.dp
        replicate = plan.dp // shard
        notes.append(f"APPROXIMATION: ZeRO-{plan.zero_stage} exported as FSDP (ZeRO-3): torchtitan has no ZeRO-1/2")
    if plan.recompute == "full" and plan.recompute_num_layers is not None:
        if any(r != n for r, n in zip(plan.recomputed_layers(problem.model.num_layers),
                                      plan.layers_per_stage(problem.model.num_layers), strict=True)):
            notes.append("APPROXIMATION: per-stage recompute counts exported as full recompute of every layer")
    parallelism: dict = {
        "data_parallel_replicate_degree": replicate,
        "data_parallel_shard_degree": shard,
        "tensor_parallel_degree": plan.tp,
        "context_parallel_degree": plan.cp,
        "pipeline_parallel_degree": plan.pp,
    }
    if plan.tp_comm_overlap:
        parallelism["enable_async_tensor_parallel"] = True
    if plan.tp > 1 and not plan.sp:
        notes.append("APPROXIMATION: torchtitan's TP always shards the sequence (SP); the plan had SP off")
    if plan.pp > 1:
        parallelism["pipeline_parallel_schedule"] = "Interleaved1F1B" if plan.virtual_stages > 1 else "1F1B"
        parallelism["pipeline_parallel_microbatch_size"] = plan.micro_batch_size
        layers = plan.layers_per_stage(problem.model.num_layers)
        v = plan.virtual_stages
        if any(n % v for n in layers):
            raise ExportError(f"stage layers {layers} are not multiples of the virtual stages")
        # Model chunks in forward order: chunk j of every rank, then chunk j + 1 (looped schedules
        # place chunk k on rank k mod pp).
        sizes = [layers[i] // v for j in range(v) for i in range(plan.pp)]
        parts, start = [], 0
        for k, size in enumerate(sizes):
            names = [f"layers.{n}" for n in range(start, start + size)]
            if k == 0:
                names = ["tok_embeddings", *names]
            if k == len(sizes) - 1:
                names = [*names, "norm", "output"]
            parts.append(names)
            start += size
        parallelism["module_fqns_per_model_part"] = parts
        middle = sizes[1:-1]
        if len(set(sizes)) == 1:
            flat = {"pipeline_parallel_layers_per_stage": sizes[0], "pipeline_parallel_first_stage_less_layers": 0,
                    "pipeline_parallel_last_stage_less_layers": 0}
        elif len(set(middle)) <= 1 and middle and sizes[0] <= middle[0] and sizes[-1] <= middle[0]:
            flat = {"pipeline_parallel_layers_per_stage": middle[0],
                    "pipeline_parallel_first_stage_less_layers": middle[0] - sizes[0],
                    "pipeline_parallel_last_stage_less_layers": middle[0] - sizes[-1]}
        else:
            flat = None
        parallelism["_layers_per_stage"] = flat
    task = problem.task
    settings = {
        "training": {"local_batch_size": plan.micro_batch_size * plan.num_micro_batches(task.num_sequences),
                     "global_batch_size": task.num_sequences, "seq_len": task.seq_len},
        "parallelism": parallelism,
        "activation_checkpoint": {"mode": plan.recompute},
    }
    if task.precision == "fp8":
        settings["model"] = {"converters": ["float8"]}
    return settings, notes


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def export_torchtitan(problem: Problem, plan: Plan, version: str | None) -> Exported:
    version = version or "0.2"
    if version not in VERSIONS:
        raise ExportError(f"torchtitan version {version!r} not supported; choose from {VERSIONS}")
    settings, notes = torchtitan_settings(problem, plan)
    flat = settings["parallelism"].pop("_layers_per_stage", None)
    if version == "0.3" and plan.pp > 1:
        if flat is None:
            raise ExportError(f"torchtitan 0.3 flags express stages only as layers per stage with fewer layers on "
                              f"the edges; this plan's stages {plan.layers_per_stage(problem.model.num_layers)} need "
                              "the 0.2 TOML (module_fqns_per_model_part)")
        settings["parallelism"].pop("module_fqns_per_model_part")
        settings["parallelism"].update(flat)
    head = header(problem, plan, "torchtitan", version, notes)
    if version == "0.2":
        body = []
        for section, values in settings.items():
            body.append(f"[{section}]")
            body += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
            body.append("")
        text = head + "\n" + "\n".join(body)
    else:
        flags = []
        for section, values in settings.items():
            for k, v in values.items():
                value = ",".join(v) if isinstance(v, list) else _toml_value(v).strip('"')
                flags.append(f"--{section}.{k} {value}")
        text = head + "\n" + " \\\n".join(flags) + "\n"
    return Exported("torchtitan", version, text, [n for n in notes if n.startswith("APPROXIMATION")])
