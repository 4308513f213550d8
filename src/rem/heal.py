"""Heal a user's own classifier on the user's own data (``rem.unlearn(model, data, forget_idx, ...)``).

:func:`heal` is what :func:`rem.unlearn` runs when it is not given one of rem's own models *and* a
benchmark :class:`rem.data.tasks.Task`:

1. the data become a :class:`rem.data.user.UserTask` (arrays, an ``.npz`` file, an image folder; a
   benchmark Task is used as it is);
2. the model, any ``nn.Module`` mapping images to logits, is wrapped in
   :class:`rem.models.generic.GenericCapacity` (no copy and no change to it: the method works on its
   own deep copy); one of rem's own models keeps its built-in channel expansion unless
   ``capacity="generic"``;
3. one probe forward checks that the model returns ``[batch, classes]`` logits covering every label;
4. the method runs as in the benchmark (for REM: branches added, D_f pushed out of the original
   weights, the corruption redirected into the branches, branches cut off);
5. the user's own module comes back (its class, its ``state_dict`` keys) as the ``model`` of a
   :class:`rem.methods.Unlearned`, with the run's ``history``.

Methods that need what a user cannot give are refused before any work: ``retrain``, ``eu-2`` and
``eu-4`` need the model's training recipe and initialisation; ``rem-ideal`` needs the true corrupted
set D_c (it runs on a benchmark Task, even through the wrapper).
"""

from __future__ import annotations

import torch
from torch import nn

from rem.api import check_match
from rem.data.loader import Batches
from rem.data.tasks import Task
from rem.data.user import Preprocess, UserTask, user_task
from rem.errors import ConfigError, DataError
from rem.methods.base import Context, Unlearned, get_method
from rem.models import CapacityNet
from rem.models.generic import GenericCapacity
from rem.runtime import pick_device
from rem.train import Recipe

#: Methods refused on a user's model, and why.
NEEDS_RECIPE = {
    "retrain": "retrains from scratch with the model's own training recipe and initialisation, which rem does "
    "not know for a user's model",
    "eu-2": "re-initialises the last layers as the model's own initialisation would, which rem does not know "
    "for a user's model",
    "eu-4": "re-initialises the last layers as the model's own initialisation would, which rem does not know "
    "for a user's model",
}
#: Methods that need the ground truth, which a user's data set lacks.
NEEDS_TRUTH = {"rem-ideal": "is an oracle that needs the whole corrupted set D_c"}
CAPACITY = ("auto", "generic", "native")


@torch.no_grad()
def check_logits(model: nn.Module, task, call=None) -> int:
    """Run one probe batch (two images, eval mode) and check the logits: ``[batch, K]`` with every label < K.

    Returns K. Raises :class:`DataError` naming what does not fit.
    """
    ref = next(model.parameters(), None)
    dev = ref.device if ref is not None else torch.device("cpu")
    pre = getattr(task, "preprocess", None)
    norm = {} if pre is None else {"mean": pre.mean, "std": pre.std}
    x = task.data.x_train[:2].to(dev)
    batch = next(iter(Batches(x, torch.zeros(len(x), dtype=torch.int64, device=dev), batch_size=2, **norm)))[0]
    was = model.training
    model.eval()
    try:
        out = (call or model)(batch)
    except Exception as e:  # the user's forward: any error means the images do not fit the model
        raise DataError(
            f"the model cannot take these images ({tuple(task.data.x_train.shape[1:])} per image, "
            f"normalised floats): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(batch):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"the model must return logits of shape [batch, classes]; it returned {shape}")
    k = int(out.shape[1])
    top = int(task.y_train.max())
    if top >= k:
        raise DataError(f"labels out of range: the data has label {top} but the model outputs {k} classes")
    return k


def heal(
    model: nn.Module,
    data,
    forget_idx,
    method: str = "rem",
    *,
    labels=None,
    num_classes: int | None = None,
    preprocess: Preprocess | dict | None = None,
    targets=None,
    exclude=None,
    branch_act: str = "relu",
    branch_init: str = "zero",
    capacity: str = "auto",
    device: str | torch.device | None = "auto",
    pretrain_type: str | None = None,
    pretrain_recipe: Recipe | None = None,
    progress: bool = False,
    on_step=None,
    **overrides,
) -> Unlearned:
    """Heal ``model`` given the discovered indices ``forget_idx`` (D_f) of its training data ``data``.

    ``data``: see :func:`rem.data.user.user_task` (with ``labels``, ``num_classes``, ``preprocess``), or
    a benchmark :class:`Task`. ``targets`` / ``exclude``: the layers that get REM's branches (see
    :func:`rem.models.generic.select_targets`); ``branch_act``: the branches' activation;
    ``branch_init``: their ``up`` projection's initialisation, ``"zero"`` (the original function in every
    mode until trained) or ``"default"`` (:mod:`rem.models.generic`).
    ``capacity``: ``auto`` (rem's own models expand their channels, any other model gets branches),
    ``generic`` (branches on any model, rem's own included) or ``native``. ``overrides``: fields of the
    method's config (``steps``, ``lr``, ``expand_ratio``, ...), each parsed by its field's type
    (:mod:`rem.settings`). ``progress`` draws a bar of the steps; ``on_step(done, total, loss)`` is
    called after each step. The input model is not modified.
    Returns :class:`~rem.methods.Unlearned`: ``.model``, the healed model of the input's class (in eval
    mode), and ``.history``, the run's records; ``healed, history = heal(...)`` unpacks it.
    """
    if capacity not in CAPACITY:
        raise ConfigError(f"capacity must be one of {CAPACITY}, got {capacity!r}")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    task = data if isinstance(data, Task) else user_task(data, labels, num_classes=num_classes, preprocess=preprocess)
    native = isinstance(model, CapacityNet) and not isinstance(model, GenericCapacity) and capacity != "generic"
    if capacity == "native" and not native:
        raise ConfigError(f"capacity='native' needs one of rem's own models, got {type(model).__name__}")
    if isinstance(task, UserTask) and method in NEEDS_TRUTH:
        raise ConfigError(f"method {method!r} {NEEDS_TRUTH[method]}: a user's data set has no ground truth")
    if not native and method in NEEDS_RECIPE:
        raise ConfigError(f"method {method!r} {NEEDS_RECIPE[method]}; use rem, npo, finetune, scrub, ... instead")
    meth = get_method(method, **overrides)  # settings checked before any work
    forget_idx = task.check_forget_idx(forget_idx)
    if native:
        if isinstance(task, Task):
            check_match(model, task)  # as rem.unlearn: classes and image size must fit the task
        net = model
        ptype = pretrain_type or ("etd" if model.has_extra else "capacity-0.5")
    else:
        # no branches yet: the model is untouched
        net = GenericCapacity(model, targets, exclude, act=branch_act, up_init=branch_init)
        ptype = "full"  # an ordinary network: baselines train it in drop mode (= the user's forward)
    if isinstance(task, UserTask):
        check_logits(net, task, None if native else (lambda x: net(x, mode="drop")))
    ctx = Context(
        device=pick_device(device),
        pretrain_type=ptype,
        pretrain_recipe=pretrain_recipe,
        progress=progress,
        on_step=on_step,
    )
    healed, history = meth.unlearn(net, task, forget_idx, ctx)
    if native:
        return Unlearned(healed, history)
    out = healed.unwrap() if isinstance(healed, GenericCapacity) else healed
    return Unlearned(out.eval(), history)


__all__ = ["CAPACITY", "NEEDS_RECIPE", "NEEDS_TRUTH", "check_logits", "heal"]
