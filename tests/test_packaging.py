"""`pip install .` ships what the commands need: the presets, the data files, every package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

from .conftest import ROOT


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("planner", "solvers")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_a_built_wheel_solves_a_preset_task_from_another_directory(tmp_path):
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheel_dir.glob("planner-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "planner/presets/tasks/llama3-8b-8xh100.yaml" in names
    assert "planner/presets/devices/h100-sxm5-80gb.yaml" in names
    assert "planner/data/measured_runs.yaml" in names
    assert "planner/fidelity/recipes.yaml" in names
    assert "planner/export/megatron_core_v0.16.1_arguments.json" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The unpacked wheel first on the path: the editable install of this checkout is not used.
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    code = "import sys, planner; assert str(planner.__file__).startswith(sys.argv[1]); " \
           "from planner.cli import main; sys.exit(main(sys.argv[2:]))"
    run = subprocess.run([sys.executable, "-c", code, str(site), "solve", "llama3-8b-8xh100", "--time-limit", "20"],
                         capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-1000:] + run.stderr[-2000:]
    assert "solver cpsat: OPTIMAL" in run.stdout
    validate = subprocess.run([sys.executable, "-c", code, str(site), "validate", "--json"], capture_output=True,
                              text=True, cwd=elsewhere, env=env, timeout=300)
    assert validate.returncode == 0, validate.stderr[-2000:]
