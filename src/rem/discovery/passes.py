"""What the discovery scores share: the checks of their inputs, the classifier layer, one inference pass over
D_tr (per-sample loss on the labels as trained, penultimate features) and a robust scale."""

from __future__ import annotations

import torch
from torch import nn

from rem.data.loader import Batches
from rem.errors import ConfigError, DataError, IndexSetError
from rem.runtime import autocast


def check_inputs(task, forget_idx) -> tuple[torch.Tensor, torch.Tensor]:
    """(D_f, D_r) after the checks every score needs: labels as trained, a non-empty D_f that leaves
    something to rank. Raises :class:`~rem.errors.DataError` / :class:`~rem.errors.IndexSetError`
    naming what is wrong."""
    y = getattr(task, "y_train", None)
    if y is None:
        raise DataError("discovery needs the labels the model was trained with (labels as trained): the data has none")
    n = int(len(y))
    raw = torch.as_tensor(forget_idx).reshape(-1)
    if raw.numel() == 0:
        raise IndexSetError("the discovered set D_f is empty: discovery needs at least one found sample")
    if raw.numel() > n:
        raise IndexSetError(
            f"the discovered set D_f has {raw.numel()} indices but the training set D_tr only {n} samples"
        )
    fi = task.check_forget_idx(raw)
    if len(fi) >= n:
        raise IndexSetError(f"the discovered set D_f covers all {n} training samples: D_r is empty, nothing to rank")
    return fi, task.retain_idx(fi)


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The classifier: the last ``nn.Linear`` registered in ``model`` (ResNet-9's ``fc``, the ViT's
    ``head``, a user's model's last layer, as :mod:`rem.models.generic` assumes too); the side branches a
    wrapped model carries as θ_o2 are not the classifier."""
    from rem.models.generic import Branch

    side = {id(m) for b in model.modules() if isinstance(b, Branch) for m in b.modules()}  # θ_o2's branches
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear) and id(m) not in side:
            last = m
    if last is None:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear classifier: penultimate features are its input")
    return last


@torch.no_grad()
def forward_pass(
    model: nn.Module,
    task,
    *,
    device,
    batch_size: int = 1000,
    features: bool = False,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample cross-entropy on the labels as trained (or ``labels``) of every sample of D_tr and,
    with ``features``, the penultimate features (the classifier's input), both on CPU.

    Inference mode, ``drop`` mode (the deployed θ_o1), non-augmented images with the trigger stamped
    where the task stamped it during training, a user's data set normalised by its own statistics.
    """
    dev = torch.device(device)
    was = model.training
    model.eval()
    y_all = (task.y_train if labels is None else labels).to(dev)
    pre = getattr(task, "preprocess", None)
    norm = {} if pre is None else {"mean": pre.mean, "std": pre.std}
    batches = Batches(
        task.data.x_train.to(dev),
        y_all,
        batch_size=batch_size,
        trigger=task.trigger,
        triggered=task.triggered,
        channels_last=True,
        **norm,
    )
    captured: list[torch.Tensor] = []
    hook = None
    if features:
        hook = classifier_layer(model).register_forward_pre_hook(
            lambda _m, args: captured.append(args[0].detach().float().flatten(1).cpu())
        )
    ces = []
    try:
        for x, y, _ in batches:
            with autocast(dev):
                logits = model(x, mode="drop")
            ces.append(torch.nn.functional.cross_entropy(logits.float(), y, reduction="none").cpu())
    finally:
        if hook is not None:
            hook.remove()
        model.train(was)
    ce = torch.cat(ces).double() if ces else torch.zeros(0, dtype=torch.float64)
    feats = torch.cat(captured).double() if features and captured else None
    return ce, feats


def robust_z(values: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """(v − median) / IQR over ``values[ref]`` (all if None): a unit-free scale that one far outlier
    cannot squash; falls back to the standard deviation, then 1, when the spread is zero."""
    v = values.double()
    r = v if ref is None else v[ref]
    q = torch.quantile(r, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    spread = float(q[2] - q[0])
    if not spread > 0:
        spread = float(r.std()) if len(r) > 1 else 0.0
    if not spread > 0:
        spread = 1.0
    return (v - q[1]) / spread
