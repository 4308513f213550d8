"""The metrics of SPEC §2, always of the deployed model (``drop`` mode) on non-augmented images; the
test-set ones each corruption task computes itself (:meth:`rem.data.corruptions.Corruption.test_metrics`).
Every metric is a share in [0, 1] (:mod:`rem.units`; reports and command output show percent).

| metric | poison | interclass | random |
|---|---|---|---|
| healed      | acc on all of D_c *with the trigger* vs true labels | acc on D_c vs true labels | same |
| healed_test | acc on triggered test images vs true labels | test acc on classes a and b | clean test acc |
| utility     | clean test acc | test acc on the K−2 other classes | clean test acc |
| uxh         | healed × utility | same | same |

Also ``forget_acc`` (acc on D_f vs its corrupted labels, triggered as trained), ``asr`` (poison: share
of triggered test images of true class ≠ target predicted as target) and ``test_acc`` (clean).
"""

from __future__ import annotations

import torch

from rem.data.corruptions import get_corruption
from rem.data.loader import Batches
from rem.data.tasks import Task
from rem.models import CapacityNet, param_count
from rem.runtime import autocast


@torch.no_grad()
def predict(
    model: CapacityNet,
    images: torch.Tensor,
    idx: torch.Tensor | None = None,
    *,
    mode: str = "drop",
    triggered: torch.Tensor | None = None,
    task: Task | None = None,
    keys_fn=None,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Predicted classes for ``images[idx]`` (no augmentation), optionally with the task's trigger."""
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    images = images.to(dev)
    labels = torch.zeros(len(images), dtype=torch.int64, device=dev)
    trig = task.trigger if (task is not None and triggered is not None) else None
    pre = getattr(task, "preprocess", None)  # a user data set's own normalisation (rem.data.user)
    norm = {} if pre is None else {"mean": pre.batch_kwargs()["mean"], "std": pre.batch_kwargs()["std"]}
    preds = []
    for x, _, bidx in Batches(
        images, labels, idx, batch_size=batch_size, trigger=trig, triggered=triggered, channels_last=True, **norm
    ):
        with autocast(dev):
            keys = keys_fn(bidx) if keys_fn is not None else None
            preds.append(model(x, mode=mode, keys=keys).argmax(1))
    model.train(was_training)
    return torch.cat(preds).cpu() if preds else torch.zeros(0, dtype=torch.int64)


def accuracy(
    model: CapacityNet,
    task: Task,
    idx: torch.Tensor,
    labels: torch.Tensor,
    *,
    mode: str = "drop",
    device="cpu",
    keys_fn=None,
) -> float:
    """Top-1 accuracy (a share in [0, 1]) on D_tr[idx] as trained (triggers stamped) against ``labels[idx]``."""
    if len(idx) == 0:
        return float("nan")
    p = predict(
        model, task.data.x_train, idx, mode=mode, triggered=task.triggered, task=task, device=device, keys_fn=keys_fn
    )
    return (p == labels[idx.cpu()]).float().mean().item()


def evaluate(
    model: CapacityNet,
    task: Task,
    forget_idx: torch.Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    mode: str = "drop",
) -> dict:
    """All SPEC §2 metrics of ``model`` on ``task`` (``forget_idx`` = D_f, for ``forget_acc``): shares in
    [0, 1], and ``params``, the parameter count."""
    d, cfg = task.data, task.config
    y_test = d.y_test.cpu()
    clean = predict(model, d.x_test, mode=mode, device=device)
    test_acc = (clean == y_test).float().mean().item()
    healed = accuracy(model, task, task.corrupt_idx, task.y_true.cpu(), mode=mode, device=device)
    out = {"test_acc": test_acc, "healed": healed}

    def predict_test(triggered: torch.Tensor | None) -> torch.Tensor:
        return predict(model, d.x_test, mode=mode, device=device, task=task, triggered=triggered)

    out.update(get_corruption(task.kind).test_metrics(cfg, y_test, clean, test_acc, predict_test))
    out["uxh"] = out["healed"] * out["utility"]
    if forget_idx is not None and len(forget_idx):
        out["forget_acc"] = accuracy(model, task, forget_idx, task.y_train.cpu(), mode=mode, device=device)
    out["corrupt_acc"] = accuracy(model, task, task.corrupt_idx, task.y_train.cpu(), mode=mode, device=device)
    out["params"] = param_count(model)
    return out
