"""Check a Megatron-LM export with Megatron's own argument parser, or with its recorded table.

`check_megatron_export(text, checkout)` runs the checkout's parse_args, validate_args (with the
export's world size and launch environment) and TransformerConfig construction in a subprocess
with torch (planner/frameworks/megatron_args.py, in .venv-frameworks or PLANNER_FRAMEWORKS_PYTHON),
then compares what Megatron read back with the export. `check_megatron_table(text)` checks the
flags against the option table of Megatron core_v0.16.1 recorded in megatron_core_v0.16.1_arguments.json
(names, values and choices only: no validation rules), which needs neither torch nor a checkout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

from planner.core.errors import PlannerError

RUNNER = Path(__file__).resolve().parent.parent / "frameworks" / "megatron_args.py"
TABLE = Path(__file__).resolve().with_name("megatron_core_v0.16.1_arguments.json")
COMPUTE_CAPABILITY = {"A100": "8.0", "H100": "9.0", "H200": "9.0", "B200": "10.0", "GB200": "10.0"}
"""Compute capability of the planned device (validate_args asks torch.cuda for it)."""


def frameworks_python() -> Path:
    """The interpreter of the frameworks environment (PLANNER_FRAMEWORKS_PYTHON or .venv-frameworks)."""
    given = os.environ.get("PLANNER_FRAMEWORKS_PYTHON")
    path = Path(given) if given else RUNNER.parent.parent.parent / ".venv-frameworks" / "bin" / "python"
    if not path.exists():
        raise PlannerError(f"--check-with runs Megatron's parser with torch, in {path}, which does not exist; build "
                           "it (see .ci/run) or set PLANNER_FRAMEWORKS_PYTHON to a Python with torch")
    return path


def parse_export(text: str) -> tuple[list[str], dict[str, str | None], int, str]:
    """(argument list, launch environment, world size, compute capability) of a Megatron export."""
    argv: list[str] = []
    for name in ("MEGATRON_MODEL_ARGS", "MEGATRON_PARALLEL_ARGS"):
        start = text.find(f"{name}=(")
        if start < 0:
            raise PlannerError(f"not a planner Megatron export: no {name}=( ... ) array")
        body = text[start + len(name) + 2 :]
        argv += shlex.split(body[: body.index("\n)")])
    env: dict[str, str | None] = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"export (\w+)=(\S*)", line):
            env[match[1]] = match[2]
        elif match := re.fullmatch(r"unset (\w+)", line):
            env[match[1]] = None
    world = re.search(r"launch (\d+) ranks", text)
    device = re.search(r"on \d+ x (\S+),", text)
    capability = next((c for name, c in COMPUTE_CAPABILITY.items() if device and device[1].startswith(name)), "9.0")
    return argv, env, int(world[1]) if world else 1, capability


def _flags(argv: list[str]) -> dict[str, str | list[str] | bool]:
    flags: dict[str, str | list[str] | bool] = {}
    for token in argv:
        if token.startswith("--"):
            key = token
            flags[key] = True
        elif flags.get(key) is True:
            flags[key] = token
        else:
            value = flags[key]
            flags[key] = [*value, token] if isinstance(value, list) else [value, token]
    return flags


def _expected(argv: list[str], world: int) -> dict[str, object]:
    """What Megatron must read back: the degrees and batch the export states (and the expert grid)."""
    f = _flags(argv)
    tp, pp, cp = (int(f[k]) for k in ("--tensor-model-parallel-size", "--pipeline-model-parallel-size",
                                      "--context-parallel-size"))
    experts = {}
    if "--num-experts" in f:
        experts = {
            "num_experts": int(f["--num-experts"]), "expert_model_parallel_size": int(f["--expert-model-parallel-size"]),
            "expert_tensor_parallel_size": int(f["--expert-tensor-parallel-size"]),
            "moe_token_dispatcher_type": f["--moe-token-dispatcher-type"], "moe_grouped_gemm": "--moe-grouped-gemm" in f,
            "overlap_moe_expert_parallel_comm": "--overlap-moe-expert-parallel-comm" in f,
            "delay_wgrad_compute": "--delay-wgrad-compute" in f,
            "multi_latent_attention": "--multi-latent-attention" in f,
            "mtp_num_layers": int(f["--mtp-num-layers"]) if "--mtp-num-layers" in f else None,
        }
    return {**experts,
        "world_size": world, "tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp,
        "context_parallel_size": cp, "data_parallel_size": world // (tp * pp * cp),
        "micro_batch_size": int(f["--micro-batch-size"]), "global_batch_size": int(f["--global-batch-size"]),
        "sequence_parallel": "--sequence-parallel" in f, "use_distributed_optimizer": "--use-distributed-optimizer" in f,
        "use_megatron_fsdp": "--use-megatron-fsdp" in f,
        "num_distributed_optimizer_instances": int(f.get("--num-distributed-optimizer-instances", 1)),
        "recompute_granularity": f.get("--recompute-granularity"), "fp8_recipe": f.get("--fp8-recipe", "delayed"),
    }


def check_megatron_export(text: str, checkout: str, timeout_s: float = 300,
                          extra: dict[str, object] | None = None) -> list[str]:
    """Problems Megatron-LM's own code finds in a planner export (empty list = accepted).

    `extra`: more values Megatron must read back ({name: value}, names of megatron_args.py's
    result, e.g. moe_layer_pattern). Raises PlannerError when the checkout or the Python with
    torch cannot be used.
    """
    root = Path(checkout)
    if not (root / "megatron" / "training" / "arguments.py").is_file():
        raise PlannerError(f"{checkout}: no megatron/training/arguments.py (is this a Megatron-LM checkout?)")
    argv, env, world, capability = parse_export(text)
    command = [str(frameworks_python()), str(RUNNER), "check", str(root.resolve()), str(world), capability,
               *(f"{k}={v or ''}" for k, v in env.items()), "--", *argv]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise PlannerError(f"Megatron's parser did not finish in {timeout_s:.0f} s ({checkout})") from exc
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise PlannerError(f"could not run Megatron's parser from {checkout}: {out.stderr.strip()[-1500:]}")
    result = json.loads(lines[-1])
    if "error" in result:
        return [f"Megatron {result['stage']}: {result['error']}"]
    got = result["args"]
    return [f"Megatron read {name} = {got.get(name)!r}, the export says {want!r}"
            for name, want in {**_expected(argv, world), **(extra or {})}.items() if got.get(name) != want]


@cache
def megatron_table() -> dict[str, dict]:
    """Megatron core_v0.16.1's options: {option string: {dest, takes_value, nargs, choices, type}}."""
    return json.loads(TABLE.read_text())["options"]


def check_megatron_table(text: str) -> list[str]:
    """Problems with a Megatron export's flags against Megatron core_v0.16.1's option table."""
    problems = []
    table = megatron_table()
    argv = parse_export(text)[0]
    for flag, value in _flags(argv).items():
        option = table.get(flag)
        if option is None:
            problems.append(f"{flag}: not an option of Megatron core_v0.16.1")
            continue
        values = [] if value is True else value if isinstance(value, list) else [value]
        if not option["takes_value"] and values:
            problems.append(f"{flag} takes no value, got {values}")
        elif option["takes_value"] and not values:
            problems.append(f"{flag} needs a value")
        elif len(values) > 1 and option["nargs"] not in ("+", "*"):
            problems.append(f"{flag} takes one value, got {values}")
        for v in values:
            if option["choices"] and v not in option["choices"]:
                problems.append(f"{flag} {v}: not one of {option['choices']}")
            caster = {"int": int, "float": float}.get(option["type"] or "")
            try:
                if caster:
                    caster(v)
            except ValueError:
                problems.append(f"{flag} {v}: not {'an' if caster is int else 'a'} {option['type']}")
    return problems


__all__ = ["check_megatron_export", "check_megatron_table", "parse_export", "frameworks_python"]
