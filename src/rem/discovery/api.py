"""``rem.discover(model, data, forget_idx, score="rem", **settings) -> Ranking``: the Python entry point."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rem.data.tasks import Task
from rem.data.user import Preprocess, UserTask, user_task
from rem.discovery.base import Ranking, get_score
from rem.errors import ConfigError, DataError
from rem.methods.base import Context
from rem.models import CapacityNet
from rem.runtime import pick_device


def discover(
    model: nn.Module,
    data,
    forget_idx,
    score: str = "rem",
    *,
    labels=None,
    num_classes: int | None = None,
    preprocess: Preprocess | dict | None = None,
    targets=None,
    exclude=None,
    device: str | None = "auto",
    **settings,
) -> Ranking:
    """Rank the retained samples D_r = D_tr \\ D_f by how likely they belong with the corruption.

    ``model``: the starting model, one of rem's (a checkpoint's) or any ``nn.Module`` mapping images to
    logits (wrapped as :class:`rem.models.generic.GenericCapacity`, ``targets`` / ``exclude`` choosing
    the layers that get REM's branches for the ``rem`` score). ``data``: a benchmark :class:`~rem.Task`,
    or a user's images **with the labels they were trained with** (see :func:`rem.user_task`:
    ``(images, labels)``, an ``.npz`` file, an image folder). ``forget_idx``: the discovered indices D_f.
    ``score``: a registered score (:func:`rem.discovery.score_names`: ``rem``, ``features``, ``loss``,
    ``cleanlab``, ``spectral``); ``settings``: fields of its config, parsed by their types.
    The model is not modified. Returns a :class:`~rem.discovery.Ranking`, most suspicious first.
    """
    scorer = get_score(score, **settings)  # settings checked before any work
    if isinstance(data, (Task, UserTask)):
        task = data
    else:
        if labels is None and isinstance(data, (np.ndarray, torch.Tensor)):  # images alone
            raise DataError(
                "discovery scores need the labels the model was trained with: pass labels=... (one class "
                "number per image) or (images, labels)"
            )
        task = user_task(data, labels, num_classes=num_classes, preprocess=preprocess)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, CapacityNet):
        net = model
        if isinstance(task, Task):
            from rem.api import check_match

            check_match(net, task)
    else:
        from rem.heal import check_logits
        from rem.models.generic import GenericCapacity

        net = GenericCapacity(model, targets, exclude)  # no branches yet: the model computes as before
        check_logits(net, task, lambda x: net(x, mode="drop"))
    ctx = Context(device=pick_device(device))
    return scorer.rank(net, task, forget_idx, ctx)
