"""Record a serving engine's own command-line parser as a flag table, or run it on an export.

Usage (in an environment where the engine's Python package imports; not run in CI):
    python serving_flags.py table vllm   > vllm_table.json
    python serving_flags.py table sglang > sglang_table.json
    python serving_flags.py parse vllm|sglang -- ARG [ARG ...]
The shipped tables (planner/export/vllm_v0.33.0_arguments.json, sglang_v0.5.23_arguments.json) are
this output with the wheel's name and SHA-256, `what`/`how`/`used_by` added, one option per line.

`table` builds the parser the engine's server command builds (vLLM: `vllm serve`, i.e.
vllm.entrypoints.common.cli_args.make_arg_parser on a FlexibleArgumentParser; SGLang:
`python -m sglang.launch_server`, i.e. ServerArgs.add_cli_args on an ArgumentParser) and prints
every option string with its destination, whether it takes a value, nargs, choices, the name of
its type and its default, as one JSON object (facts only, no engine code). Where the engine
validates a value after parsing instead of with argparse choices, the list it validates against
is recorded under `validated_values` (vLLM: --quantization against QUANTIZATION_METHODS,
--kv-cache-dtype against KV_CACHE_DTYPES). `parse` runs the engine's parser on ARG... and prints
the namespace it read (or its complaint) as JSON: planner.export.serving_check uses it when
PLANNER_SERVING_PYTHON names such an interpreter.

Standard library and the engine only; this file does not import planner.

How the shipped tables were made (CPU machine, torch 2.13.0 CPU): the released wheels
(vllm-0.33.0, commit 4ba787ec9 per vllm/_version.py; sglang-0.5.23) unpacked or installed with
--no-deps into a throwaway virtual environment with the pure-Python packages their parser
modules import; vLLM needs VLLM_TARGET_DEVICE=cpu to pick a platform. TensorRT-LLM's wheel is not
on PyPI (the PyPI project is a stub), and its parser is a click command, so its table
(planner/export/trtllm_arguments.json) was transcribed by reading tensorrt_llm/commands/serve.py
and tensorrt_llm/llmapi/llm_args.py at the commits recorded in that file.
"""

from __future__ import annotations

import argparse
import json
import sys


def _engine_parser(engine: str) -> tuple[argparse.ArgumentParser, dict]:
    """(the engine's server parser, facts about the engine: version, commit, validated values)."""
    if engine == "vllm":
        import typing

        import vllm
        from vllm.entrypoints.common.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        info: dict = {"engine": "vllm", "version": vllm.__version__, "command": "vllm serve MODEL"}
        try:
            from vllm import _version

            info["commit"] = getattr(_version, "__commit_id__", None)
        except ImportError:
            pass
        validated = {}
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

        validated["--quantization"] = list(QUANTIZATION_METHODS)
        from vllm.config import cache

        dtypes = getattr(cache, "KV_CACHE_DTYPES", None) or typing.get_args(cache.CacheDType)
        validated["--kv-cache-dtype"] = sorted(dtypes)
        info["validated_values"] = validated
        return make_arg_parser(FlexibleArgumentParser()), info
    if engine == "sglang":
        import sglang
        from sglang.srt.server_args import ServerArgs

        parser = argparse.ArgumentParser()
        ServerArgs.add_cli_args(parser)
        info = {"engine": "sglang", "version": getattr(sglang, "__version__", None),
                "command": "python -m sglang.launch_server"}
        try:
            from sglang import _version

            info["commit"] = getattr(_version, "__commit_id__", None)
        except ImportError:
            pass
        return parser, info
    raise SystemExit(f"unknown engine {engine!r}: vllm or sglang")


def _plain(value):
    """A JSON-able form of a default or choice (other objects as their repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def table(engine: str) -> dict:
    parser, info = _engine_parser(engine)
    options: dict[str, dict] = {}
    positionals = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        kind = type(action).__name__
        row = {
            "dest": action.dest,
            "takes_value": action.nargs != 0,
            "nargs": action.nargs,
            "choices": sorted(map(str, action.choices)) if action.choices is not None else None,
            "type": getattr(action.type, "__name__", None) if action.type is not None else None,
            "default": _plain(action.default) if action.default is not argparse.SUPPRESS else None,
            "action": kind,
        }
        if not action.option_strings:
            positionals.append(row)
        for option in action.option_strings:
            options[option] = {**row, "aliases": [o for o in action.option_strings if o != option]}
    return {**info, "positionals": positionals, "options": dict(sorted(options.items()))}


def parse(engine: str, argv: list[str]) -> dict:
    parser, _ = _engine_parser(engine)
    parser.exit_on_error = False

    def refuse(message: str):
        raise ValueError(message)

    parser.error = refuse  # type: ignore[method-assign]
    try:
        if engine == "sglang" and "--config" in argv:  # as sglang.srt.server_args.prepare_server_args does
            from sglang.srt.utils.server_args_config_parser import ConfigArgumentMerger

            argv = ConfigArgumentMerger(parser).merge_config_with_args(argv)
        namespace = parser.parse_args(argv)
    except (ValueError, argparse.ArgumentError, SystemExit) as exc:
        return {"error": str(exc)}
    return {"args": {k: _plain(v) for k, v in vars(namespace).items()}}


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "table":
        print(json.dumps(table(argv[1]), indent=1, sort_keys=False))
        return 0
    if len(argv) >= 3 and argv[0] == "parse" and argv[2] == "--":
        print(json.dumps(parse(argv[1], argv[3:])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
