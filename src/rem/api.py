"""The Python entry point: ``rem.unlearn(model, task, forget_idx, method="rem", **overrides) -> model``."""

from __future__ import annotations

import torch

from rem.data.tasks import Task
from rem.methods.base import Context, get_method
from rem.models import CapacityNet
from rem.runtime import pick_device
from rem.train import Recipe

#: Methods whose discovered indices must lie inside the corrupted set (they are *corrections*).
_NEEDS_SUBSET: set[str] = set()


def unlearn(model: CapacityNet, task: Task, forget_idx, method: str = "rem", *,
            device: str | torch.device | None = "auto", pretrain_type: str | None = None,
            pretrain_recipe: Recipe | None = None, progress: bool = False, **overrides) -> CapacityNet:
    """Heal ``model`` of the corruption in ``task`` given the discovered indices ``forget_idx`` (D_f).

    A user's own classifier (any ``nn.Module``) and data (arrays, ``(images, labels)``, an ``.npz``
    file or an image folder in place of ``task``) go to :func:`rem.heal.heal`, which takes further
    keywords (``labels``, ``num_classes``, ``preprocess``, ``targets``, ``exclude``, ``capacity``) and
    returns the user's own module.

    ``overrides`` set fields of the method's config (e.g. ``steps=100``, ``expand_ratio=0.25``).
    Indices are validated first (integers, in range, no duplicates) so bad input fails before any work.
    The returned model has the input's parameter count; ``returned.history`` holds the run's records
    (for REM: per-round proxy, Acc(D_f) of θ_o1 and of the masked model). The input is not modified.
    """
    if not (isinstance(model, CapacityNet) and isinstance(task, Task)) or "capacity" in overrides:
        from rem.heal import heal

        return heal(model, task, forget_idx, method, device=device, pretrain_type=pretrain_type,
                    pretrain_recipe=pretrain_recipe, progress=progress, **overrides)
    forget_idx = task.check_forget_idx(forget_idx)
    meth = get_method(method, **overrides)
    if pretrain_type is None:
        pretrain_type = "etd" if model.has_extra else "capacity-0.5"
    ctx = Context(device=pick_device(device), pretrain_type=pretrain_type, pretrain_recipe=pretrain_recipe,
                  progress=progress)
    return meth.unlearn(model, task, forget_idx, ctx)
