"""The Python entry points: ``rem.unlearn(model, task, forget_idx, method="rem", **overrides) -> Unlearned``,
``rem.task_of(meta)`` (the task a checkpoint was trained on) and ``rem.check_match(model, task)``."""

from __future__ import annotations

import warnings

import torch

from rem.data.tasks import Task
from rem.errors import ConfigError
from rem.methods.base import Context, Unlearned, get_method
from rem.models import CapacityNet
from rem.runtime import pick_device
from rem.train import Recipe

#: Methods whose discovered indices must lie inside the corrupted set (they are *corrections*).
_NEEDS_SUBSET: set[str] = set()


def task_of(meta: dict, data_dir=None, *, download: bool = True) -> Task:
    """The task a checkpoint's model was trained on, rebuilt from its metadata (``load_checkpoint``'s meta).

    The profile recorded in ``meta`` gives the data (the same subset and image size) and the task
    config gives the corruption (kind, |D_c|, seed), so the result has the checkpoint's own split: its
    :meth:`~rem.Task.split_hash` is checked against the recorded one (:class:`~rem.errors.ConfigError`
    if the data changed).
    """
    from rem.data.tasks import TaskConfig, make_task
    from rem.profiles import profile_data, profile_from_dict

    if not isinstance(meta, dict) or "profile" not in meta or "task" not in meta:
        raise ConfigError(
            "this checkpoint's metadata has no profile and task (not written by `rem train`, "
            "`rem unlearn` or `rem bench`): build the task with rem.make_task instead"
        )
    profile = profile_from_dict(meta["profile"])
    task = make_task(profile_data(profile, data_dir, download=download), TaskConfig.from_dict(meta["task"]))
    check_split(meta, task)
    return task


def check_split(meta: dict, task: Task) -> None:
    """Refuse ``task`` when its split differs from the one recorded in a checkpoint's ``meta``."""
    want = meta.get("split_hash")
    if not want:
        return
    fi = meta.get("forget_idx")
    got = task.split_hash(torch.as_tensor(fi, dtype=torch.int64) if fi is not None else None)
    if got != want:
        raise ConfigError(
            f"the rebuilt task's split ({got}) is not the one the checkpoint records ({want}): "
            "the data or the task settings differ from those it was trained on"
        )


def check_match(model: CapacityNet, task: Task) -> None:
    """Refuse a model and a task that do not belong together; warn when the split differs.

    Classes (the model's output size) must equal the task's; a model loaded by :func:`rem.load_checkpoint`
    also knows its training data's image size (which must match) and split (a different one warns:
    the model was trained on another corruption).
    """
    n_out = getattr(model, "num_classes", None)
    if n_out is not None and n_out != task.data.num_classes:
        raise ConfigError(
            f"the model has {n_out} output classes but the task's data {task.data.name} has {task.data.num_classes}"
        )
    meta = getattr(model, "rem_meta", None)
    if not isinstance(meta, dict) or not isinstance(meta.get("profile"), dict):
        return
    size = meta["profile"].get("image_size")  # images larger than this were downsampled to it for training
    if size is not None and task.data.image_size > int(size):
        raise ConfigError(
            f"the model was trained on {int(size)}px images but the task's are "
            f"{task.data.image_size}px: use rem.task_of(meta) for the checkpoint's own task"
        )
    want = meta.get("split_hash")
    if want and "forget_idx" not in meta and want != task.split_hash():
        warnings.warn(
            f"the model was trained on another split ({want}) than this task's ({task.split_hash()}): "
            "its corrupted set differs; rem.task_of(meta) rebuilds the checkpoint's own task",
            stacklevel=3,
        )


def unlearn(
    model: CapacityNet,
    task: Task,
    forget_idx,
    method: str = "rem",
    *,
    device: str | torch.device | None = "auto",
    pretrain_type: str | None = None,
    pretrain_recipe: Recipe | None = None,
    progress: bool = False,
    on_step=None,
    **overrides,
) -> Unlearned:
    """Heal ``model`` of the corruption in ``task`` given the discovered indices ``forget_idx`` (D_f).

    ``overrides`` set fields of the method's config (e.g. ``steps=100``, ``expand_ratio=0.25``), each
    parsed by the field's type. Indices are validated first (integers, in range, no duplicates) and the
    model is checked against the task (:func:`check_match`), so bad input fails before any work.
    ``progress`` draws a bar of the steps (on a terminal); ``on_step(done, total, loss)`` is called after
    each step. Returns :class:`~rem.methods.Unlearned`: ``.model``, the healed model with the input's
    parameter count, and ``.history``, the run's records (for REM: per-round proxy, Acc(D_f) of θ_o1 and of
    the masked model, accuracies as shares in [0, 1]); ``healed, history = rem.unlearn(...)`` unpacks it.
    The input is not modified.

    A user's own classifier (any ``nn.Module``) and data (arrays, ``(images, labels)``, an ``.npz``
    file or an image folder in place of ``task``) go to :func:`rem.heal.heal`, which takes further
    keywords (``labels``, ``num_classes``, ``preprocess``, ``targets``, ``exclude``, ``capacity``) and
    returns ``Unlearned`` with the user's own module as ``.model``.
    """
    if not (isinstance(model, CapacityNet) and isinstance(task, Task)) or "capacity" in overrides:
        from rem.heal import heal

        return heal(
            model,
            task,
            forget_idx,
            method,
            device=device,
            pretrain_type=pretrain_type,
            pretrain_recipe=pretrain_recipe,
            progress=progress,
            on_step=on_step,
            **overrides,
        )
    forget_idx = task.check_forget_idx(forget_idx)
    check_match(model, task)
    meth = get_method(method, **overrides)
    if pretrain_type is None:
        pretrain_type = "etd" if model.has_extra else "capacity-0.5"
    ctx = Context(
        device=pick_device(device),
        pretrain_type=pretrain_type,
        pretrain_recipe=pretrain_recipe,
        progress=progress,
        on_step=on_step,
    )
    return meth.unlearn(model, task, forget_idx, ctx)
