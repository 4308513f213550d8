import os
from pathlib import Path

import pytest
import torch

from rem.data.datasets import make_generated
from rem.data.tasks import TaskConfig, make_task

torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to oversubscription

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
if not os.environ.get("REM_DATA_DIR") and (_SHARED / "cifar-10-batches-py").is_dir():
    os.environ["REM_DATA_DIR"] = str(_SHARED)


@pytest.fixture(scope="session")
def gen_data():
    return make_generated(n_train=400, n_test=200, size=16, seed=0)


@pytest.fixture
def make_gen_task(gen_data):
    def _make(kind="poison", n_corrupt=20, seed=0, **kw):
        return make_task(gen_data, TaskConfig(kind=kind, n_corrupt=n_corrupt, seed=seed, **kw))

    return _make


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; with the cores shared, two threads can be 100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def refused(capsys):
    """``refused(name, argv, needle)``: run the command line ``argv`` in-process and check it was refused as
    bad input must be: exit 2, one line on stderr that holds ``needle``, no traceback."""
    from rem.cli import main

    def check(name: str, argv: list[str], needle: str) -> None:
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        out, err = capsys.readouterr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, f"{name}: exit {code}\nstdout: {out}\nstderr: {err}"
        assert len(lines) == 1, f"{name}: stderr is not one line:\n{err}"
        assert "Traceback" not in err and "Traceback" not in out
        assert needle in lines[0], f"{name}: {needle!r} not in {lines[0]!r}"

    return check
