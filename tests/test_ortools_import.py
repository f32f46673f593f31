"""CP-SAT is imported without pandas (solvers.ortools_import), and that leaves pandas usable."""

import subprocess
import sys

SCRIPT = """
import sys
import solvers
assert "pandas" not in sys.modules, "pandas was imported with the solvers"
from ortools.sat.python import cp_model
assert cp_model.pd.__doc__.startswith("stand-in"), cp_model.pd
model = cp_model.CpModel()
x = model.new_int_var(0, 10, "x")
model.add(x >= 3)
model.minimize(x)
solver = cp_model.CpSolver()
assert solver.solve(model) == cp_model.OPTIMAL and solver.value(x) == 3
import pandas
assert hasattr(pandas, "DataFrame"), "a later import of pandas got the stand-in"
print("ok")
"""


def test_cp_sat_loads_without_pandas_and_pandas_still_loads_after():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
