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
