"""rem.task_of rebuilds a checkpoint's own task; a model and a task that do not belong together are refused
(issue 14, item 5)."""

from __future__ import annotations

import warnings

import pytest

import rem
from rem.cli import main
from rem.errors import ConfigError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("start")
    assert main(["train", "--profile", "smoke", "--steps", "10", "--out", str(out), "--quiet"]) == 0
    return out / "model.safetensors"


def test_task_of_rebuilds_the_checkpoints_task(checkpoint):
    model, meta = rem.load_checkpoint(checkpoint)
    task = rem.task_of(meta)
    assert task.split_hash() == meta["split_hash"] and task.kind == "poison"
    assert task.data.image_size == meta["profile"]["image_size"] and len(task.corrupt_idx) == 50
    healed, healed_history = rem.unlearn(model, task, task.forget_idx(0.5), method="finetune", steps=1, device="cpu")
    assert {"healed", "utility", "uxh"} <= set(rem.evaluate(healed, task))
    with pytest.raises(ConfigError, match="split"):
        rem.task_of({**meta, "split_hash": "0" * 16})
    with pytest.raises(ConfigError, match="profile"):
        rem.task_of({"task": meta["task"]})


def test_mismatched_model_and_task_are_refused_or_warned(checkpoint):
    model, meta = rem.load_checkpoint(checkpoint)
    big = rem.make_task(
        rem.make_generated(n_train=200, n_test=50, size=32), rem.TaskConfig(kind="poison", n_corrupt=10)
    )
    with pytest.raises(ConfigError, match="px"):  # trained on 16px images, the task has 32px ones
        rem.unlearn(model, big, big.forget_idx(0.5), method="none", device="cpu")
    few = rem.make_task(
        rem.make_generated(n_train=200, n_test=50, size=16, num_classes=5), rem.TaskConfig(kind="random", n_corrupt=10)
    )
    with pytest.raises(ConfigError, match="classes"):
        rem.check_match(model, few)
    other = rem.make_task(rem.task_of(meta).data, rem.TaskConfig(kind="random", n_corrupt=50))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rem.check_match(model, other)
    assert any("another split" in str(x.message) for x in w)
