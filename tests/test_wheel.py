"""The package as users install it: `python -m build` makes a wheel that holds everything rem needs at run
time (the demo's starting model included), installs into a clean virtual environment, and runs
`rem demo --profile smoke` there, importing rem from the wheel, not from this checkout.

The clean environment gets the dependencies (torch, numpy, ...) through a path file pointing at this
environment's site-packages, added *after* the wheel is installed, so nothing is downloaded (a fresh
torch from the public index would be gigabytes) and the wheel's own files are what runs."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, timeout=900, env=None):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_and_runs_the_smoke_demo(tmp_path):
    pytest.importorskip("build", reason="pip install -e '.[test]' installs build")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)], ROOT)
    (wheel,) = dist.glob("rem_unlearning-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    from rem.demo import STARTER_FILE

    assert f"rem/assets/{STARTER_FILE}" in names and "rem/py.typed" in names
    assert "rem/report/html.py" in names and "rem/bench/executors/local.py" in names
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist: torch")]
    assert requires and all("==" not in r for r in requires), requires  # a floor, never one exact version
    assert "Name: rem-unlearning" in meta

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    # install the wheel with this environment's pip into the clean one (no index, no dependencies yet)
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "--no-deps", str(wheel)],
        tmp_path,
    )
    site = Path(
        _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    )
    (site / "zz_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    where = _run(
        [str(py), "-c", "import rem, rem.demo; rem.demo.check_starter(); print(rem.__file__)"], tmp_path, env=env
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the wheel's rem, not the checkout's
    out = _run(
        [str(venv / "bin" / "rem"), "demo", "--profile", "smoke", "--run-dir", "d", "--quiet"], tmp_path, env=env
    )
    assert "attack success rate" in out.stdout and (tmp_path / "d" / "report" / "report.html").is_file()
