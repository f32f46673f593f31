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
explicitly (0.2: [quantize.linear.float8] recipe_name).

A task whose framework profile is torchtitan (planner/llm/frameworks.py) exports the settings it
was priced with: compile (model and loss), its float8 recipe (tensorwise or rowwise), async TP
where TP > 1, and selective recompute as torchtitan's op-level policy (selective_ac_option "op"),
which is what that profile prices. torchtitan 0.3 sets converters in a
config_registry function, not by flag, and offers rowwise recipes only, so an fp8 plan is an
error there. TP communication
overlap is async TP, which needs torch.compile of the model (compile is switched on).

Mixture of experts: torchtitan builds MoE models from its own model flavors, so the export
names one ([model] name and flavor in 0.2; --module and --config in 0.3), found by the model's
shape (layers, width, experts, top-k, which layers are MoE; TORCHTITAN_MOE below), and a model
without one is an error. The expert grid: parallelism.expert_parallel_degree, and in 0.2
expert_tensor_parallel_degree (0.3 has none). torchtitan's rules (0.2.2 parallel_dims.py l.58-59,
136-138; 0.3.0 config/configs.py l.279-286; the models' apply_moe_ep_tp / moe_sharding.py):
  - EP borrows ranks from dp_shard x CP x TP (not from dp_replicate): dp_shard*cp*tp must be
    divisible by etp*ep. ZeRO-0 (pure replication) with EP is therefore exported as HSDP with
    the smallest shard group that satisfies it, an explicit approximation;
  - with EP > 1, ETP is 1 or TP (0.2) / 1 (0.3): other plans are errors; with EP = 1 the experts
    are TP-sharded (ETP = TP), an approximation for plans with another ETP;
  - 0.2's deepseek_v3 flavors use FlexAttention, which its CP refuses (deepseek_v3/model/args.py
    l.102-109): CP > 1 is an error there;
  - the flex dispatcher is DeepEP (expert_parallel_comm_backend = "deepep") in 0.2's deepseek_v3
    and llama4, which read it; elsewhere the dispatch is an all-to-all (standard backend);
  - there is no EP overlap (torchtitan overlaps EP only under its DualPipeV schedule); the
    dispatch is dropless and in bf16; the MTP modules of DeepSeek-V3 are not in its 671B flavor;
    the Float8 linear converter leaves the experts' grouped GEMMs in bf16; full activation
    checkpointing re-runs dense layers too (the cost model recomputes MoE blocks only).
    Each difference from the plan is printed as an approximation.
"""

from __future__ import annotations

from planner.export.base import Exported, ExportError, header, model_chunk_layers
from planner.llm.plan import Plan
from planner.llm.problem import Problem

VERSIONS = ("0.2", "0.3")
TORCHTITAN_MOE = [
    # (module, flavor, 0.3 config function or None), (layers, width, experts, top-k, leading dense layers, MoE every)
    (("deepseek_v3", "16B", "deepseek_v3_16b"), (27, 2048, 64, 6, 1, 1)),
    (("deepseek_v3", "236B", None), (60, 5120, 160, 6, 1, 1)),
    (("deepseek_v3", "671B", "deepseek_v3_671b"), (61, 7168, 256, 8, 3, 1)),
    (("qwen3", "30B-A3B", "qwen3_30b_a3b"), (48, 2048, 128, 8, 0, 1)),
    (("qwen3", "235B-A22B", None), (94, 4096, 128, 8, 0, 1)),
    (("llama4", "17bx16e", None), (48, 5120, 16, 1, 0, 1)),
    (("llama4", "17bx128e", None), (48, 5120, 128, 1, 0, 2)),
    (("gpt_oss", "20b", "gpt_oss_20b"), (24, 2880, 32, 4, 0, 1)),
    (("gpt_oss", "120b", "gpt_oss_120b"), (36, 2880, 128, 4, 0, 1)),
]
"""torchtitan's MoE flavors (torchtitan/models/<module>/__init__.py at v0.2.2 and 0.3.0; llama4 is
0.2 only) and the config functions 0.3 ships for them (models/<module>/config_registry.py, bf16)."""
FP8_RECIPE = "tensorwise"
FP8_CONVERTER = "quantize.linear.float8"
"""torchtitan 0.2's registered name of the Float8 linear converter."""


def _module_parts(problem: Problem, plan: Plan, head: str) -> list[list[str]]:
    sizes = model_chunk_layers(problem, plan)
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


def moe_flavor(problem: Problem, version: str) -> tuple[str, str, str | None]:
    """(module, flavor, 0.3 config) of torchtitan's flavor for an MoE model; ExportError if none."""
    m = problem.model
    moe = m.moe
    for (module, flavor, config), (layers, width, experts, top_k, dense, every) in TORCHTITAN_MOE:
        pattern = [i >= dense and (i - dense + 1) % every == 0 for i in range(layers)]
        if (m.num_layers, m.hidden_size, moe.num_experts, moe.top_k) == (layers, width, experts, top_k) and (
                m.moe_layers == pattern) and not (module == "llama4" and version != "0.2"):
            return module, flavor, config
    names = sorted({f"{module} {flavor}" for (module, flavor, _), _ in TORCHTITAN_MOE
                    if version == "0.2" or module != "llama4"})
    raise ExportError(f"torchtitan {version} has no model flavor for {m.name} ({m.num_layers} layers, width "
                      f"{m.hidden_size}, {moe.num_experts} experts, top-{moe.top_k}); its MoE flavors: "
                      f"{', '.join(names)}")


def _expert_grid(problem: Problem, plan: Plan, version: str, shard: int) -> tuple[dict, list[str]]:
    """torchtitan's expert degrees for the plan and the approximations (ExportError where it has none)."""
    moe = problem.model.moe
    etp = plan.etp if plan.ep > 1 else plan.tp  # with EP 1 torchtitan TP-shards the experts
    notes = []
    if plan.ep == 1 and plan.etp != plan.tp:
        notes.append(f"APPROXIMATION: with EP 1 torchtitan shards the experts over TP (ETP = TP = {plan.tp}); the plan "
                     f"has ETP {plan.etp}")
    module = moe_flavor(problem, version)[0]
    if version == "0.2" and module == "deepseek_v3" and plan.cp > 1:
        raise ExportError(f"CP {plan.cp}: torchtitan 0.2's deepseek_v3 flavors use FlexAttention, which its context "
                          "parallelism does not support ('Context Parallel only supports SDPA attention'); re-plan "
                          "with cp: 1, or export --target-version 0.3")
    if plan.ep > 1 and version == "0.3" and plan.etp > 1:
        raise ExportError(f"ETP {plan.etp}: torchtitan 0.3 has no expert tensor parallelism (its experts are not "
                          "TP-sharded when EP > 1); re-plan with etp: 1, or export --target-version 0.2")
    if plan.ep > 1 and plan.etp not in (1, plan.tp):
        raise ExportError(f"ETP {plan.etp} with TP {plan.tp}: torchtitan 0.2 supports ETP = 1 or ETP = TP "
                          "('Currently we only support ETP=TP or ETP=1')")
    borrowed = shard * plan.cp * plan.tp
    if plan.ep > 1 and borrowed % (plan.etp * plan.ep):
        raise ExportError(f"ETP {plan.etp} x EP {plan.ep} does not divide dp_shard {shard} x CP {plan.cp} x TP {plan.tp}"
                          f" = {borrowed}: torchtitan's EP borrows ranks from the FSDP, CP and TP dimensions (not "
                          "from dp_replicate); re-plan with a larger ZeRO shard group")
    degrees = {"expert_parallel_degree": plan.ep}
    if version == "0.2":
        degrees["expert_tensor_parallel_degree"] = etp if plan.ep > 1 else 1
    deepep = version == "0.2" and plan.dispatcher == "flex" and plan.ep > 1 and module in ("deepseek_v3", "llama4")
    if deepep:  # 0.2.2 reads the DeepEP backend in these two models only (their parallelize functions)
        degrees["expert_parallel_comm_backend"] = "deepep"
    elif plan.dispatcher != "alltoall" and plan.ep > 1:
        notes.append(f"APPROXIMATION: torchtitan dispatches tokens with an all-to-all over EP; the plan was priced with "
                     f"the {plan.dispatcher} dispatcher")
    if plan.ep_comm_overlap:
        notes.append("APPROXIMATION: torchtitan overlaps the EP all-to-alls only under its DualPipeV schedule; the plan "
                     "was priced with them hidden under another micro-batch's compute")
    if moe.dispatch_dtype == "fp8" and plan.ep > 1:
        notes.append("APPROXIMATION: torchtitan dispatches tokens in bf16; the plan was priced with an fp8 dispatch")
    if moe.capacity_factor is not None:
        notes.append(f"APPROXIMATION: torchtitan's MoE is dropless; the model has capacity factor {moe.capacity_factor}")
    if problem.model.mtp_layers:
        notes.append(f"APPROXIMATION: torchtitan's flavor has no multi-token-prediction module; the plan was priced "
                     f"with {problem.model.mtp_layers} on the last stage")
    if problem.task.precision == "fp8":
        notes.append("APPROXIMATION: the Float8 linear converter leaves the routed experts' grouped GEMMs in bf16 "
                     "(torchtitan's float8 grouped-GEMM converter is a rowwise prototype without PP and CP); the "
                     "plan was priced with fp8 experts")
    return degrees, notes


def _moe_shard(problem: Problem, plan: Plan) -> int:
    """The smallest HSDP shard group over which torchtitan's EP fits (ZeRO-0 plans with EP)."""
    for shard in range(1, plan.dp + 1):
        if plan.dp % shard == 0 and (shard * plan.cp * plan.tp) % (plan.etp * plan.ep) == 0:
            return shard
    return plan.dp


def profile_options(problem: Problem) -> dict | None:
    """The torchtitan profile's options (defaults filled) of the task, or None for another profile."""
    from planner.llm import frameworks

    framework = problem.task.framework
    name, _ = frameworks.parse_name(framework.profile)
    return frameworks.check_options(name, framework.options) if name == "torchtitan" else None


def torchtitan_settings(problem: Problem, plan: Plan, version: str) -> tuple[dict[str, dict], list[str]]:
    task = problem.task
    notes = []
    profile = profile_options(problem)
    moe = problem.model.family == "moe"
    if plan.zero_stage == 0 and moe and plan.ep > 1:
        shard = _moe_shard(problem, plan)
        replicate = plan.dp // shard
        if shard > 1:
            notes.append(f"APPROXIMATION: DDP exported as HSDP with shard groups of {shard}: torchtitan's EP borrows "
                         "ranks from the FSDP dimension (dp_shard x CP x TP must be divisible by ETP x EP)")
    elif plan.zero_stage == 0:
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
    if moe:
        degrees, moe_notes = _expert_grid(problem, plan, version, shard)
        parallelism.update(degrees)
        notes += moe_notes
    async_tp = plan.tp_comm_overlap or bool(profile and profile["async_tp"] and plan.tp > 1)
    if async_tp:
        if version == "0.2":
            parallelism["enable_async_tensor_parallel"] = True
        settings["compile"] = {"enable": True, "components": ["model", "loss"]}
        if version == "0.3":
            settings["compile"]["enable_async_tensor_parallel"] = True
        if profile is None or not profile["compile"]:
            notes.append("TP overlap is torchtitan's async TP, which needs torch.compile: compile is enabled")
        if not plan.tp_comm_overlap:
            notes.append("APPROXIMATION: the profile's async_tp is exported; the plan was priced without TP overlap")
    elif profile and profile["compile"]:
        settings["compile"] = {"enable": True, "components": ["model", "loss"]}
    if profile and profile["async_tp"] and plan.tp == 1:
        notes.append("the profile's async_tp has no effect at TP 1: not exported")
    if plan.tp > 1 and not plan.sp:
        notes.append("APPROXIMATION: torchtitan's TP always shards the sequence (SP); the plan had SP off")
    num_micro_batches = plan.num_micro_batches(plan.sequences(task))
    if plan.pp > 1:
        parallelism["pipeline_parallel_schedule"] = "Interleaved1F1B" if plan.virtual_stages > 1 else "1F1B"
        parallelism["pipeline_parallel_microbatch_size"] = plan.micro_batch_size
        parallelism["module_fqns_per_model_part"] = _module_parts(problem, plan, "output" if version == "0.2" else "lm_head")
        local = plan.micro_batch_size * num_micro_batches
    else:
        local = plan.micro_batch_size
    training: dict = {"local_batch_size": local, "global_batch_size": plan.sequences(task), "seq_len": task.seq_len}
    if version == "0.3" and (plan.pp > 1 or plan.ep > 1):
        # 0.3 captures CUDA graphs by default and refuses them with PP, and with EP over a dispatcher
        # that synchronizes with the CPU (its all-to-all one; trainer.py _validate_cuda_graphs)
        training["disable_cuda_graphs"] = True
    settings = {"training": training, "parallelism": parallelism, **settings}
    modules = plan.recompute == "selective" and plan.recompute_modules_list != ["core_attn"]
    if modules:
        mode = "full"
        notes.append(f"APPROXIMATION: Megatron-Core's selective recompute of {', '.join(plan.recompute_modules_list)} "
                     "has no torchtitan equivalent (its activation checkpointing is per block or op-level): "
                     "exported as full activation checkpointing (more recompute: slower, never more memory)")
    elif plan.recompute == "selective" and profile is not None:
        mode = "selective"  # priced as torchtitan's op-level policy (the profile's selective_recompute)
    elif plan.recompute == "selective":
        mode = "none"
        notes.append('selective recompute (Megatron: core attention only) -> activation_checkpoint "none": '
                     "torchtitan's SDPA attention stores no s x s scores, which is all it saves; torchtitan's own "
                     '"selective" (every Nth block, or op-level) is a different policy')
    elif moe and plan.recompute == "full":
        mode = "full"
        notes.append("APPROXIMATION: torchtitan's full activation checkpointing re-runs every layer; the plan recomputes "
                     f"{'the planned number of' if plan.recompute_num_layers is not None else 'all'} MoE blocks only "
                     "(more recompute: slower, never more memory)")
    else:
        mode = plan.recompute
        counts = plan.recomputed_layers(problem.model.num_layers)
        if mode == "full" and counts != plan.layers_per_stage(problem.model.num_layers):
            notes.append(f"APPROXIMATION: per-stage recompute counts {counts} exported as full recompute of every layer")
    settings["activation_checkpoint"] = {"mode": mode}
    if mode == "selective":
        if version == "0.2":
            settings["activation_checkpoint"]["selective_ac_option"] = "op"
        else:
            notes.append("APPROXIMATION: torchtitan 0.3's selective activation checkpointing keeps its default "
                         "option; the plan was priced with the op-level policy (selective_ac_option \"op\")")
    if moe and version == "0.2":
        module, flavor, _ = moe_flavor(problem, version)
        settings["model"] = {"name": module, "flavor": flavor}
    model = problem.model
    if not moe and (model.sliding_window is not None or model.rope_yarn_factor is not None):
        missing = [*(["a sliding window"] if model.sliding_window is not None else []),
                   *(["YaRN"] if model.rope_yarn_factor is not None else [])]
        notes.append(f"APPROXIMATION: torchtitan's dense (Llama) flavors have no {' and no '.join(missing)}: the job "
                     "attends to the whole prefix with plain RoPE; the plan was priced with the model's")
    if task.precision == "fp8":
        recipe = profile["float8"] if profile else FP8_RECIPE
        if version == "0.3":
            raise ExportError("fp8: torchtitan 0.3 sets model converters in a config_registry function "
                              "(model_registry(..., converters=[Float8LinearConverter.Config(...)])), not by flag, "
                              f"and its Float8 recipes are rowwise only (the plan's is {recipe}); "
                              "export --target-version 0.2")
        settings.setdefault("model", {})["converters"] = [FP8_CONVERTER]
        settings["quantize.linear.float8"] = {"recipe_name": recipe}
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
    llama3_405b config carries Float8 (rowwise) converters. MoE models: the config of their
    flavor (ExportError without a flavor).
    """
    if problem.model.family == "moe":
        module, _, config = moe_flavor(problem, "0.3")
        return (module, config) if config else None
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
        if module is None and problem.model.family == "moe":
            name, flavor, _ = moe_flavor(problem, version)
            notes.append(f"torchtitan 0.3 ships {name} flavor {flavor} for {problem.model.name} but no config for it: "
                         f"add --module {name} and --config of yours (a config_registry function with "
                         f"model_registry(\"{flavor}\"))")
        elif module is None:
            notes.append(f"torchtitan 0.3 has no bf16 config for {problem.model.name}: add --module and --config of yours")
        mode = settings.pop("activation_checkpoint")["mode"]
        for section, values in settings.items():
            flags += [_flag(section, k, v) for k, v in values.items()]
        flags.append(f"activation-checkpoint:{mode}")
        head = header(problem, plan, "torchtitan", version, notes)
        text = head + "\n" + " \\\n".join(flags) + "\n"
    return Exported("torchtitan", version, text, [n for n in notes if n.startswith("APPROXIMATION")])
