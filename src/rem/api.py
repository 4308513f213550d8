"""The Python entry points: ``rem.unlearn(model, data, forget_idx, method="rem", **overrides) -> Unlearned``,
``rem.discover(model, data, forget_idx, score="rem", **settings) -> Ranking``, ``rem.task_of(meta)`` (the task
a checkpoint was trained on) and ``rem.check_match(model, task)``.

:func:`unlearn` and :func:`discover` take rem's own models (a checkpoint's) with a benchmark
:class:`~rem.data.tasks.Task`, and any classifier (an ``nn.Module`` mapping images to logits) with a user's own
data; both go through one preparation step, :func:`prepare`:

1. the data become a task: a benchmark :class:`Task` (or a :class:`~rem.data.user.UserTask`) is used as it is;
   arrays, ``(images, labels)``, an ``.npz`` file or an image folder become a ``UserTask``
   (:func:`rem.data.user.user_task`);
2. the model: one of rem's own (any :class:`~rem.models.CapacityNet`, a model already wrapped in
   :class:`~rem.models.generic.GenericCapacity` included) keeps its own capacity and is checked against a
   benchmark task (:func:`check_match`); any other ``nn.Module`` is wrapped in ``GenericCapacity`` (no copy
   and no change to it: methods and scores work on their own deep copy), and so is rem's own with
   ``capacity="generic"``;
3. on a user's data one probe forward checks that the model returns ``[batch, classes]`` logits covering
   every label (:func:`check_logits`).

Then the method runs as in the benchmark (for REM: branches added, D_f pushed out of the original weights,
the corruption redirected into the branches, branches cut off) and the model comes back as it was given: a
user's own module (its class, its ``state_dict`` keys), or rem's own. Methods that need what a user cannot
give are refused before any work: ``retrain``, ``eu-2`` and ``eu-4`` need the model's training recipe and
initialisation; ``rem-ideal`` needs the true corrupted set D_c.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rem.data.loader import Batches
from rem.data.tasks import Task
from rem.data.user import Preprocess, UserTask, user_task
from rem.discovery import Ranking, get_score
from rem.errors import ArgumentError, ConfigError, DataError
from rem.methods import Context, Unlearned, get_method
from rem.models import CapacityNet
from rem.models.generic import GenericCapacity
from rem.runtime import pick_device
from rem.train import Recipe

#: Methods refused on a user's model, and why.
NEEDS_RECIPE = {
    "retrain": "retrains from scratch with the model's own training recipe and initialisation, which rem does not "
    "know for a user's model",
    "eu-2": "re-initialises the last layers as the model's own initialisation would, which rem does not know "
    "for a user's model",
    "eu-4": "re-initialises the last layers as the model's own initialisation would, which rem does not know "
    "for a user's model",
}
#: Methods that need the ground truth, which a user's data set lacks.
NEEDS_TRUTH = {"rem-ideal": "is an oracle that needs the whole corrupted set D_c"}
#: ``capacity=``: ``auto`` (rem's own models keep theirs, any other gets branches), ``generic`` (branches on
#: any model, rem's own included) or ``native`` (rem's own models only).
CAPACITY = ("auto", "generic", "native")
_SCORES_NEED_LABELS = (
    "discovery scores need the labels the model was trained with: pass labels=... (one class number per image) or "
    "(images, labels)"
)


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


@dataclass
class Prepared:
    """A model and data made ready for a method or a score (:func:`prepare`)."""

    net: CapacityNet  # the model itself (rem's own capacity) or a GenericCapacity around it
    task: Task | UserTask
    native: bool  # True: ``net`` is the model given; False: a wrapper to take off at the end


def as_task(data, labels=None, *, num_classes=None, preprocess=None, labels_needed: str = "") -> Task | UserTask:
    """``data`` as a task: a :class:`Task` or :class:`UserTask` as it is, else :func:`rem.data.user.user_task`.
    ``labels_needed``: refuse images without labels, saying why (the labels they were trained with)."""
    if isinstance(data, (Task, UserTask)):
        return data
    if labels_needed and labels is None and isinstance(data, (np.ndarray, torch.Tensor)):  # images alone
        raise DataError(labels_needed)
    return user_task(data, labels, num_classes=num_classes, preprocess=preprocess)


def prepare(
    model: nn.Module,
    data,
    labels=None,
    num_classes: int | None = None,
    preprocess: Preprocess | dict | None = None,
    targets=None,
    exclude=None,
    *,
    branch_act: str = "relu",
    branch_init: str = "zero",
    capacity: str = "auto",
    labels_needed: str = "",
    refuse: Callable[[Task | UserTask, bool], None] | None = None,
) -> Prepared:
    """The model and data that :func:`unlearn` and :func:`discover` run on (steps 1–3 of the module docs).

    ``refuse(task, native)`` is called once the task and the kind of model are known, before any work on
    them: the caller's own refusals (a method a user's model cannot run). Raises :class:`ConfigError` /
    :class:`DataError` naming what does not fit.
    """
    if capacity not in CAPACITY:
        raise ConfigError(f"capacity must be one of {CAPACITY}, got {capacity!r}")
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ArgumentError(
            "model has tensors on the meta device (shapes without values): load its weights first, e.g. "
            "model.to_empty(device='cpu') then model.load_state_dict(...)"
        )
    task = as_task(data, labels, num_classes=num_classes, preprocess=preprocess, labels_needed=labels_needed)
    native = isinstance(model, CapacityNet) and capacity != "generic"
    if capacity == "native" and not native:
        raise ConfigError(f"capacity='native' needs one of rem's own models, got {type(model).__name__}")
    if refuse is not None:
        refuse(task, native)
    if native:
        net = model
        if isinstance(task, Task):
            check_match(model, task)  # classes and image size must fit the task
    else:  # no branches yet: the model is untouched and computes as before (in drop mode)
        net = GenericCapacity(model, targets, exclude, act=branch_act, up_init=branch_init)
    if isinstance(task, UserTask):
        check_logits(net, task, None if native else (lambda x: net(x, mode="drop")))
    return Prepared(net, task, native)


def unlearn(
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
    """Heal ``model`` of the corruption in ``data`` given the discovered indices ``forget_idx`` (D_f).

    ``model``: one of rem's own (e.g. from :func:`rem.load_checkpoint`) or any ``nn.Module`` mapping images
    to logits. ``data``: a benchmark :class:`Task` (:func:`task_of` rebuilds a checkpoint's own), or a user's
    own training data (see :func:`rem.data.user.user_task`, with ``labels``, ``num_classes``,
    ``preprocess``). ``overrides`` set fields of the method's config (e.g. ``steps=100``,
    ``expand_ratio=0.25``), each parsed by the field's type (:mod:`rem.settings`).

    ``targets`` / ``exclude``: the layers of a user's model that get REM's branches (see
    :func:`rem.models.generic.select_targets`); ``branch_act``: the branches' activation; ``branch_init``:
    their ``up`` projection's initialisation, ``"zero"`` (the original function in every mode until trained)
    or ``"default"`` (:mod:`rem.models.generic`). ``capacity``: ``auto`` (rem's own models expand their
    channels, any other model gets branches), ``generic`` (branches on any model, rem's own included) or
    ``native``.

    The method's settings, the indices (integers, in range, no duplicates) and the model's fit to the data
    are checked first, so bad input fails before any work. ``progress`` draws a bar of the steps (on a
    terminal); ``on_step(done, total, loss)`` is called after each step. The input is not modified.
    Returns :class:`~rem.methods.Unlearned`: ``.model``, the healed model of the input's class (rem's own
    with the input's parameter count; a user's own module in eval mode), and ``.history``, the run's
    records (for REM: per-round proxy, Acc(D_f) of θ_o1 and of the masked model, accuracies as shares in
    [0, 1]); ``healed, history = rem.unlearn(...)`` unpacks it.
    """

    def refuse(task, native: bool) -> None:
        if isinstance(task, UserTask) and method in NEEDS_TRUTH:
            raise ConfigError(f"method {method!r} {NEEDS_TRUTH[method]}: a user's data set has no ground truth")
        if not native and method in NEEDS_RECIPE:
            raise ConfigError(f"method {method!r} {NEEDS_RECIPE[method]}; use rem, npo, finetune, scrub, ... instead")

    if on_step is not None and not callable(on_step):
        raise ArgumentError(f"on_step must be a function on_step(done, total, loss), got a {type(on_step).__name__}")
    meth = get_method(method, **overrides)  # settings checked before any work
    data_options = (labels, num_classes, preprocess, targets, exclude)
    prep = prepare(
        model, data, *data_options, branch_act=branch_act, branch_init=branch_init, capacity=capacity, refuse=refuse
    )
    forget_idx = prep.task.check_forget_idx(forget_idx)
    if prep.native:
        ptype = pretrain_type or ("etd" if prep.net.has_extra else "capacity-0.5")
    else:
        ptype = "full"  # an ordinary network: baselines train it in drop mode (= the user's forward)
    ctx = Context(
        device=pick_device(device),
        pretrain_type=ptype,
        pretrain_recipe=pretrain_recipe,
        progress=progress,
        on_step=on_step,
    )
    healed, history = meth.unlearn(prep.net, prep.task, forget_idx, ctx)
    if prep.native:
        return Unlearned(healed, history)
    out = healed.unwrap() if isinstance(healed, GenericCapacity) else healed
    return Unlearned(out.eval(), history)


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
    device: str | torch.device | None = "auto",
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
    prep = prepare(model, data, labels, num_classes, preprocess, targets, exclude, labels_needed=_SCORES_NEED_LABELS)
    return scorer.rank(prep.net, prep.task, forget_idx, Context(device=pick_device(device)))
