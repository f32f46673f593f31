"""The documented-regressions table (planner/fidelity/regressions.yaml): every entry cites a
public report and a reference measurement; a malformed table is an error naming its file and
field, never a silent default."""

import pytest

from planner.core.errors import InputError
from planner.fidelity.regressions import load_regressions, regressions
from planner.fidelity.validate import DEFAULT_RUNS, load_runs

GOOD = """regressions:
  - id: row-a
    source: https://github.com/org/repo/issues/1
    statement: 2x slower than the release before
    reference: the release before measured 100
"""


def test_the_shipped_table_names_rows_of_the_shipped_file_and_cites_each():
    ids = {row["id"] for row in load_runs(DEFAULT_RUNS)}
    table = regressions()
    assert table and set(table) <= ids
    # Each names its report and the unregressed measurement (the schema refuses less).
    assert all(entry.reference for entry in table.values())


def test_a_well_formed_table_loads_by_id(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    assert list(load_regressions(path)) == ["row-a"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD.replace("    source: https://github.com/org/repo/issues/1\n", ""), "regressions.0.source"),
        (GOOD.replace("https://github.com/org/repo/issues/1", "see the forum"), "regressions.0.source"),
        (GOOD.replace("https://github.com/org/repo/issues/1", "http://example.com/x"), "regressions.0.source"),
        (GOOD.replace("statement: 2x slower than the release before", "statement: ''"), "regressions.0.statement"),
        (GOOD.replace("    reference: the release before measured 100\n", ""), "regressions.0.reference"),
        (GOOD + "    factor: 2.0\n", "regressions.0.factor"),
        (GOOD.replace("id: row-a", "id: 7"), "regressions.0.id"),
        ("regressions: none\n", "regressions"),
        ("- id: row-a\n", "regressions"),
    ],
)
def test_a_malformed_entry_names_the_file_and_field(tmp_path, text, field):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_regressions(path)
    assert str(path) in str(err.value)
    assert field in str(err.value)


def test_a_repeated_id_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD + GOOD.split("\n", 1)[1])
    with pytest.raises(InputError, match="repeated: row-a"):
        load_regressions(path)


def test_an_empty_or_unreadable_table_is_an_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("")
    with pytest.raises(InputError) as err:
        load_regressions(path)
    assert str(path) in str(err.value)
    with pytest.raises(InputError):
        load_regressions(tmp_path / "missing.yaml")
