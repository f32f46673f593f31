"""A large YAML text is parsed once per process (a task's model file is read to learn its family,
then by the family's loader); every reader still gets its own copy of the data, and a refused text
is refused every time."""

from __future__ import annotations

import pytest

from planner.core import files
from planner.core.errors import InputError


def big_text(n: int = 3000) -> str:
    return "tables:\n" + "".join(f"  - {{name: t{i}, num_rows: {i + 1}, dim: 16}}\n" for i in range(n))


def test_a_large_text_parsed_twice_is_parsed_once_and_copied(monkeypatch):
    text = big_text()
    assert len(text) >= files.CACHED_TEXT_BYTES
    first = files.parse_yaml(text, "m.yaml")
    calls = []
    monkeypatch.setattr(files, "_parse_yaml", lambda *args: calls.append(args))
    second = files.parse_yaml(text, "m.yaml")
    assert calls == [] and second == first
    second["tables"][0]["dim"] = 32  # a reader's change stays its own
    assert files.parse_yaml(text, "m.yaml")["tables"][0]["dim"] == 16


def test_a_refused_text_is_refused_again():
    text = big_text() + "tables: []\n"  # a duplicate key
    for _ in range(2):
        with pytest.raises(InputError, match="duplicate key"):
            files.parse_yaml(text, "m.yaml")
