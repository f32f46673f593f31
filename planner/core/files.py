"""The files a user hands us and the files we write, handled defensively in one place.

Reading: a path must name a regular file of at most `MAX_INPUT_BYTES`, in UTF-8 (a BOM is
allowed); YAML is read with a safe loader that also refuses duplicate keys, aliases (`*name`,
which make alias bombs possible), nesting deeper than `MAX_DEPTH`, keys that are not strings,
non-finite numbers (`.inf`, `.nan`) and integers beyond 2**53. JSON gets the same checks.
Every failure is an InputError that names the file (and the field or line where known).

Writing: `write_atomic` writes a temporary file beside the target and renames it over the
target, so a failed write never truncates an existing file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

from planner.core.errors import InputError

MAX_INPUT_BYTES = 16 * 2**20
"""Largest input file read (the shipped measured-runs file is about 0.2 MiB)."""

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in an input file."""

MAX_INT = 2**63 - 1
"""Largest integer magnitude accepted anywhere in an input file (int64; fields have tighter bounds)."""

MAX_NODES = 100_000
"""Most values (scalars, lists, mappings) in one task, model, cluster or plan file (a large one
has a few hundred); more is not a planner input and would only cost seconds of parsing."""

MAX_DATA_NODES = 500_000
"""Most values in a data file (measured runs, microbenchmarks): the shipped runs file has 13,170
(77 runs); this admits about 2,900 such runs, read in about 10 s."""


def shown(text: object, limit: int = 120) -> str:
    """A user-supplied string as it may appear in a message: repr-escaped and truncated."""
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + f"...({len(value) - limit} more characters)"
    return repr(value)


def read_text(path: str | Path) -> str:
    """The text of a regular UTF-8 file; InputError naming the file otherwise."""
    path = Path(path)
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{_name(path)}: cannot read file ({_reason(exc)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{_name(path)}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{_name(path)}: not a regular file (a device, pipe or socket)")
    if info.st_size > MAX_INPUT_BYTES:
        raise InputError(f"{_name(path)}: {info.st_size:,} bytes is larger than the {MAX_INPUT_BYTES:,} "
                         "bytes an input file may have")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{_name(path)}: cannot read file ({_reason(exc)})") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"{_name(path)}: larger than the {MAX_INPUT_BYTES:,} bytes an input file may have")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(f"{_name(path)}: UTF-16 text; save the file as UTF-8")
    if b"\x00" in data:
        raise InputError(f"{_name(path)}: binary data (NUL bytes), not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{_name(path)}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, deep nesting and duplicate or non-string keys."""

    int_keys = False
    max_nodes = MAX_NODES

    def compose_node(self, parent, index):  # noqa: D401 (PyYAML hook)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not "
                           "accepted; write the value out")
        self._depth = getattr(self, "_depth", 0) + 1
        self._nodes = getattr(self, "_nodes", 0) + 1
        if self._nodes > self.max_nodes:
            mark = self.peek_event().start_mark
            raise _Refused(f"line {mark.line + 1}: more than {self.max_nodes:,} values in one file")
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            if isinstance(exc, _Refused):
                raise
            # A scalar its tag cannot hold: !!float abc, !!timestamp 2001-02-30, a 5000-digit integer.
            raise _Refused(f"line {node.start_mark.line + 1}: {shown(node.value, 60) if isinstance(node.value, str) else 'a value'} "
                           f"cannot be read ({_one_line(exc)[:120]})") from None

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str) and not (self.int_keys and type(key) is int):
                hint = " (YAML reads yes/no/on/off/true/false as booleans: quote it)" if isinstance(key, bool) else ""
                raise _Refused(f"line {line}: key {shown(key)} is not a string{hint}")
            if key in seen:
                raise _Refused(f"line {line}: duplicate key {shown(key)} (first at line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DataLoader(_StrictLoader):
    """For data tables (microbenchmark files): integer keys (message sizes) are allowed too."""

    int_keys = True
    max_nodes = MAX_DATA_NODES


# YAML 1.1 (PyYAML) reads 8.03e9 and 1e-5 as strings; YAML 1.2 and every user read them as numbers.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Refused(Exception):
    """A YAML construct the strict loader does not accept (turned into InputError)."""


_PARSED: dict[tuple[str, str, bool], Any] = {}
"""Large YAML texts already parsed in this process (a task's model file is read once to learn its
family and again by the family's loader: 10,000 tables take seconds with the strict loader)."""

CACHED_TEXT_BYTES = 1 << 16
"""Texts at least this long are kept parsed (at most CACHED_TEXTS of them); shorter ones parse in
milliseconds."""

CACHED_TEXTS = 4


def parse_yaml(text: str, source: str, int_keys: bool = False) -> Any:
    """YAML text -> plain data, with the checks of the module doc (`int_keys`: integer mapping
    keys are accepted, for data tables). A large text parsed before returns a copy of its data."""
    key = (text, source, int_keys)
    if key in _PARSED:
        return copy.deepcopy(_PARSED[key])
    data = _parse_yaml(text, source, int_keys)
    if len(text) >= CACHED_TEXT_BYTES:
        if len(_PARSED) >= CACHED_TEXTS:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = copy.deepcopy(data)
    return data


def _parse_yaml(text: str, source: str, int_keys: bool) -> Any:
    try:
        data = yaml.load(text, Loader=_DataLoader if int_keys else _StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as exc:
        raise InputError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise InputError(f"{source}: nested too deeply") from None
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        # A scalar its tag cannot hold: !!float abc, !!timestamp 2001-02-30, a 5000-digit integer.
        raise InputError(f"{source}: a value cannot be read: {_one_line(exc)[:200]}") from None
    check_values(data, source)
    return data


def parse_json(text: str, source: str) -> Any:
    """JSON text -> plain data: duplicate keys, NaN/Infinity and deep nesting are errors."""

    def pairs(items):
        result = {}
        for key, value in items:
            if key in result:
                raise _Refused(f"duplicate key {shown(key)}")
            result[key] = value
        return result

    def constant(name):
        raise _Refused(f"{name} is not a finite number")

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except _Refused as exc:
        raise InputError(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{source}: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(f"{source}: a value cannot be read: {_one_line(exc)[:200]}") from None
    check_values(data, source)
    return data


def check_values(data: Any, source: str) -> None:
    """Depth, non-finite floats and huge integers anywhere in `data` (iteratively)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        field = where or "(top level)"
        if depth > MAX_DEPTH:
            raise InputError(f"{source}: {field}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{source}: {field}: {value} is not a finite number")
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise InputError(f"{source}: {field}: {value:.3e} is out of range (at most 2**63 - 1)")
        if isinstance(value, dict):
            stack += [(v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]


def read_yaml(path: str | Path, int_keys: bool = False) -> Any:
    """A YAML file's data (any top-level type), with every check of the module doc."""
    return parse_yaml(read_text(path), _name(Path(path)), int_keys)


def read_json(path: str | Path) -> Any:
    return parse_json(read_text(path), _name(Path(path)))


def output_problem(path: str | Path, inputs: list[str | Path] = ()) -> str | None:
    """Why `path` cannot be written (None if it looks writable), checked before any work is done.

    A symlink is followed (the file it names is replaced); a device, pipe or socket is refused,
    since replacing one (e.g. /dev/null as root) would be a disaster and writing into one is not
    an atomic file write.
    """
    target = Path(path)
    name = _name(target)
    try:
        real = Path(os.path.realpath(target))
        if real.is_dir():
            return f"{name}: is a directory; give a file name"
        if real.exists() and not real.is_file():
            return f"{name}: is not a regular file (a device, pipe or socket); give a file name"
        parent = real.parent
        if not parent.is_dir():
            return f"{name}: directory {_name(target.parent)} does not exist"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{name}: directory {_name(parent)} is not writable"
        if real.exists() and not os.access(real, os.W_OK):
            return f"{name}: file is not writable"
        for source in inputs:
            if Path(source).exists() and real.exists() and os.path.samefile(real, source):
                return f"{name}: is an input of this command; write the output elsewhere"
    except (OSError, ValueError) as exc:
        return f"{name}: cannot be written ({_reason(exc)})"
    return None


def write_atomic(path: str | Path, text: str, inputs: list[str | Path] = ()) -> Path:
    """Writes `text` to `path` through a temporary file and a rename (never a truncated file)."""
    problem = output_problem(path, inputs)
    if problem:
        raise InputError(problem)
    name = _name(Path(path))
    target = Path(os.path.realpath(path))  # through a symlink: the file it names is replaced
    parent = target.parent
    tmp_name = None
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode) if target.exists() else None
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{target.name[:64]}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp_name, mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, target)
        tmp_name = None
    except (OSError, ValueError) as exc:
        raise InputError(f"{name}: cannot write file ({_reason(exc)}); nothing was changed") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return target


def _name(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 200 and text.isprintable() else shown(text, 200)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
