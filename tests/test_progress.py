"""Signs of life (issue 14, item 10): step callbacks advance during pretraining and inside every method,
the grid's bar moves within a pretraining and a cell, and bars are drawn only on a terminal."""

from __future__ import annotations

import pytest
import torch

from rem.methods import REGISTRY, Context, get_method
from rem.models import resnet9
from rem.train import Recipe, pretrain


def _recorder():
    calls = []

    def on_step(done, total, loss=None):
        calls.append((done, total, None if loss is None else float(torch.as_tensor(loss).detach())))

    return calls, on_step


def test_pretraining_reports_every_step(make_gen_task):
    task = make_gen_task("poison", n_corrupt=20)
    calls, on_step = _recorder()
    spec = resnet9(10, width=0.125).spec()
    spec["kept"] = [2 * k for k in spec["kept"]]
    pretrain(task, spec, "capacity-0.5", Recipe(steps=5, batch_size=64, lr=0.05), seed=0, on_step=on_step)
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5] and all(c[1] == 5 for c in calls)
    assert all(c[2] is not None and c[2] > 0 for c in calls)


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - {"none"}))
def test_every_method_reports_steps(name, make_gen_task):
    from rem.train import Recipe as R

    task = make_gen_task("poison", n_corrupt=20)
    model = resnet9(10, width=0.125)
    calls, on_step = _recorder()
    ov = {"steps": 3, "batch_size": 64}
    if "max_epochs" in {f for f in get_method(name).config.as_dict()}:
        ov["max_epochs"] = 2
    ctx = Context(device=torch.device("cpu"), pretrain_recipe=R(steps=3, batch_size=64), on_step=on_step)
    get_method(name, **ov).unlearn(model, task, task.forget_idx(0.5), ctx)
    assert calls, f"{name} never reported a step"
    dones = [c[0] for c in calls]
    assert all(b >= a for a, b in zip(dones, dones[1:])) and all(0 < d <= t for d, t, _ in calls)


def test_grid_bar_moves_within_pretraining_and_cells():
    from rem.bench.executors import GridBar

    bar = GridBar(total_cells=4, done_cells=1, n_starts=1, start_weight=3.0, enabled=False)
    pre = bar.steps(3.0)
    pre(1, 10)
    assert bar.n == pytest.approx(1.3)
    pre(10, 10)
    bar.finish(3.0, cell=False)
    assert bar.n == pytest.approx(4.0) and bar.cells == 1
    cell = bar.steps(1.0)
    cell(2, 4)
    assert bar.n == pytest.approx(4.5)
    bar.finish(1.0, cell=True)
    assert bar.n == pytest.approx(5.0) and bar.cells == 2


def test_bars_only_on_a_terminal_and_never_when_quiet(monkeypatch):
    from rem.progress import bars_enabled

    monkeypatch.delenv("REM_PROGRESS", raising=False)
    assert not bars_enabled(False)
    assert not bars_enabled(True)  # pytest's stderr is not a terminal
    monkeypatch.setenv("REM_PROGRESS", "1")
    assert bars_enabled(True) and not bars_enabled(False)


def test_grid_draws_nested_bars_for_pretraining_and_cells(tmp_path, monkeypatch, capfd):
    from rem.bench import Grid, run_grid

    monkeypatch.setenv("REM_PROGRESS", "1")
    g = Grid(profile="smoke", methods=("none", "finetune"), tasks=("poison",), rates=(0.5,), pretrain_steps=30, steps=3)
    summary = run_grid(g, tmp_path, device="cpu", progress=True)
    assert summary.complete
    err = capfd.readouterr().err
    assert "pretrain poison capacity-0.5 seed 0" in err  # the nested bar of the pretraining
    assert "finetune" in err and "cells" in err  # a cell's own bar, and the grid's bar with its cell count
