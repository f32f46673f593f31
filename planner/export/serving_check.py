"""Check a serving export against the engine's recorded flag table (and, where an interpreter
with the engine is named, against the engine's own parser).

Tables (planner/export/*.json, facts only, no engine code):
  vllm    vllm_v0.33.0_arguments.json    `vllm serve`'s parser, recorded by running it
  sglang  sglang_v0.5.23_arguments.json  `python -m sglang.launch_server`'s parser, recorded by running it
  trtllm  trtllm_arguments.json          trtllm-serve's click options and the LLM API fields of its
                                         YAML, transcribed from the source at the recorded commits
(how each was made: planner/frameworks/serving_flags.py and the tables' own `how`).

`check_flags(engine, argv)` builds an argparse parser from the table and parses the command's
arguments: every flag must be known, a flag without a value must have none, a value must be of
the recorded type and inside the recorded choices (or the values the engine validates after
parsing); the values read back are returned. `config_argv(engine, data)` turns a vLLM or SGLang
`--config` YAML into the arguments the engine makes of it (vLLM's FlexibleArgumentParser.
load_config_file, SGLang's ConfigArgumentMerger: `key: value` -> `--key value`, true -> `--key`);
`check_llm_args(data)` checks a TensorRT-LLM YAML's keys and values against the LLM API fields.
`check_with_engine(engine, argv)` runs the engine's own parser through serving_flags.py in the
interpreter named by PLANNER_SERVING_PYTHON (tests skip without one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from functools import cache
from pathlib import Path

from planner.core.errors import PlannerError

HERE = Path(__file__).resolve().parent
TABLES = {
    "vllm": HERE / "vllm_v0.33.0_arguments.json",
    "sglang": HERE / "sglang_v0.5.23_arguments.json",
    "trtllm": HERE / "trtllm_arguments.json",
}
RUNNER = HERE.parent / "frameworks" / "serving_flags.py"
INT_TYPES = {"int", "human_readable_int", "human_readable_int_or_auto"}
FLOAT_TYPES = {"float"}


@cache
def table(engine: str) -> dict:
    """The recorded flag table of `engine` (vllm, sglang, trtllm)."""
    return json.loads(TABLES[engine].read_text())


def version_text(engine: str) -> str:
    """The engine version a table records, for headers and messages."""
    t = table(engine)
    if engine == "trtllm":
        commits = ", ".join(f"{Path(p).name}@{c[:9]}" for p, c in t["commits"].items())
        return f"main ({commits})"
    commit = f", commit {t['commit'].lstrip('g')[:9]}" if t.get("commit") else ""
    return f"{t['version']}{commit}"


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would exit; a check reports instead
        raise _Refused(message)


@cache
def _parser(engine: str) -> argparse.ArgumentParser:
    t = table(engine)
    parser = _Parser(prog=engine, add_help=False, allow_abbrev=False)
    for row in t.get("positionals", []):
        parser.add_argument(row["dest"], nargs="?" if row["nargs"] in (None, "?") else row["nargs"])
    seen: set[str] = set()
    for option, row in t["options"].items():
        if option in seen:
            continue
        spellings = [option, *row.get("aliases", [])]
        seen.update(spellings)
        if not row["takes_value"]:
            parser.add_argument(*spellings, dest=row["dest"], action="count")
        else:
            nargs = row["nargs"]
            parser.add_argument(*spellings, dest=row["dest"], nargs="*" if nargs == "*" else nargs,
                                action="append" if nargs == "*" else "store")
    return parser


def option_row(engine: str, flag: str) -> dict | None:
    return table(engine)["options"].get(flag)


def _value_problem(engine: str, flag: str, row: dict, value: str) -> str | None:
    name = f"{engine} {version_text(engine)}"
    kind = row.get("type")
    if kind in INT_TYPES:
        if not value.lstrip("-").isdigit():
            return f"{flag} {value}: not an integer ({kind} in {name})"
    elif kind in FLOAT_TYPES:
        try:
            float(value)
        except ValueError:
            return f"{flag} {value}: not a number ({name})"
    allowed = row.get("choices") or table(engine).get("validated_values", {}).get(flag)
    if allowed is not None and value not in allowed:
        return f"{flag} {value}: not one of {engine} {version_text(engine)}'s values ({', '.join(allowed)})"
    return None


def check_flags(engine: str, argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """(values read back by destination, problems) of a command's arguments (after the program)."""
    parser = _parser(engine)
    problems: list[str] = []
    try:
        namespace, unknown = parser.parse_known_args(argv)
    except _Refused as exc:
        return {}, [f"{engine} {version_text(engine)} refuses the arguments: {exc}"]
    for word in unknown:
        if word.startswith("-"):
            problems.append(f"{word}: not an option of {engine} {version_text(engine)}")
        else:
            problems.append(f"{word!r}: an argument no option of {engine} {version_text(engine)} takes")
    values = {k: v for k, v in vars(namespace).items() if v is not None}
    # Type and choice checks, by the spelling used.
    i = 0
    while i < len(argv):
        word = argv[i]
        row = option_row(engine, word) if word.startswith("-") else None
        if row is not None and row["takes_value"]:
            taken = []
            j = i + 1
            while j < len(argv) and not (argv[j].startswith("--") and option_row(engine, argv[j]) is not None):
                taken.append(argv[j])
                if row["nargs"] in (None, "?"):
                    break
                j += 1
            for value in taken:
                if problem := _value_problem(engine, word, row, value):
                    problems.append(problem)
            i += 1 + len(taken)
            continue
        i += 1
    return values, problems


def config_argv(data: dict) -> list[str]:
    """The arguments vLLM and SGLang make of a `--config` YAML mapping (flat keys)."""
    argv: list[str] = []
    for key, value in data.items():
        flag = f"--{key}"
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        elif isinstance(value, list):
            if value:
                argv += [flag, *map(str, value)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


def _field_problem(where: str, row: dict, value: object) -> str | None:
    kind = row.get("type") or ""
    checks = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str),
              "dict": lambda v: isinstance(v, dict), "list": lambda v: isinstance(v, list)}
    alternatives = [checks[k] for k in kind.split("|") if k in checks]
    if value is not None and alternatives and not any(c(value) for c in alternatives):
        return f"{where}: {value!r} is not a {kind}"
    if row.get("choices") and value is not None and value not in row["choices"]:
        return f"{where}: {value!r} is not one of {', '.join(row['choices'])}"
    return None


def check_llm_args(data: dict) -> list[str]:
    """Problems with a TensorRT-LLM --extra_llm_api_options mapping against the recorded fields."""
    t = table("trtllm")
    name = f"TensorRT-LLM {version_text('trtllm')}"
    problems = []
    for key, value in data.items():
        row = t["llm_args"].get(key)
        if row is None:
            problems.append(f"{key}: not a field of {name}'s LLM API arguments")
            continue
        if key == "kv_cache_config" and isinstance(value, dict):
            for sub, subvalue in value.items():
                subrow = t["kv_cache_config"].get(sub)
                if subrow is None:
                    problems.append(f"kv_cache_config.{sub}: not a field of {name}'s KvCacheConfig")
                elif problem := _field_problem(f"kv_cache_config.{sub}", subrow, subvalue):
                    problems.append(problem)
            fraction = value.get("free_gpu_memory_fraction")
            if isinstance(fraction, (int, float)) and not 0 <= fraction <= 1:
                problems.append(f"kv_cache_config.free_gpu_memory_fraction: {fraction} is not in [0, 1]")
        elif problem := _field_problem(key, row, value):
            problems.append(problem)
    return problems


def serving_python() -> Path | None:
    given = os.environ.get("PLANNER_SERVING_PYTHON")
    return Path(given) if given else None


def check_with_engine(engine: str, argv: list[str], timeout_s: float = 300) -> dict:
    """The engine's own parser on `argv` (run by serving_flags.py in PLANNER_SERVING_PYTHON):
    {"args": {...}} or {"error": "..."}."""
    python = serving_python()
    if python is None or not python.exists():
        raise PlannerError("PLANNER_SERVING_PYTHON does not name a Python with the engine installed")
    env = dict(os.environ)
    if engine == "vllm":
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    out = subprocess.run([str(python), str(RUNNER), "parse", engine, "--", *argv], capture_output=True, text=True,
                         timeout=timeout_s, env=env)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise PlannerError(f"could not run {engine}'s parser: {out.stderr.strip()[-1500:]}")
    return json.loads(lines[-1])


__all__ = ["TABLES", "table", "version_text", "check_flags", "config_argv", "check_llm_args", "check_with_engine",
           "option_row"]
