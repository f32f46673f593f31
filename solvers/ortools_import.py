"""OR-Tools' CP-SAT module, imported without pandas.

`ortools.sat.python.cp_model` imports pandas at load time (about 0.3 s of CPU, half of what a
`planner solve` command spends importing) only for its pandas-indexed helpers
(`new_int_var_series` and the like), which the planner never calls. When neither pandas nor
cp_model is loaded yet, cp_model is imported against a stand-in module whose `Index` and
`Series` are empty classes (cp_model's annotations and isinstance checks name them), and the
stand-in is removed from `sys.modules` straight after, so a later `import pandas` (a plotting
library, a user's code) loads the real one. Any failure falls back to the plain import.
"""

from __future__ import annotations

import sys
import types


def load_cp_model():
    """The cp_model module (see the module doc)."""
    name = "ortools.sat.python.cp_model"
    if name in sys.modules or "pandas" in sys.modules:
        from ortools.sat.python import cp_model

        return cp_model
    stand_in = types.ModuleType("pandas")
    stand_in.__doc__ = "stand-in for cp_model's import (solvers.ortools_import)"
    stand_in.Index = type("Index", (), {})
    stand_in.Series = type("Series", (), {})
    sys.modules["pandas"] = stand_in
    try:
        from ortools.sat.python import cp_model
    except Exception:  # noqa: BLE001 -- an OR-Tools release that needs more of pandas at import: the plain way
        import importlib

        import ortools.sat.python as package

        sys.modules.pop(name, None)
        if hasattr(package, "cp_model"):
            delattr(package, "cp_model")
        if sys.modules.get("pandas") is stand_in:
            del sys.modules["pandas"]
        return importlib.import_module(name)
    finally:
        if sys.modules.get("pandas") is stand_in:
            del sys.modules["pandas"]
    return cp_model
