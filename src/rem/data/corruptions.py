"""Corruption tasks behind one small interface, and their registry (SPEC §1 and §2).

A corruption says how it corrupts a data set (:meth:`Corruption.corrupt`) and which test-set metrics it
has (:meth:`Corruption.test_metrics`); :func:`rem.data.tasks.make_task` and :func:`rem.metrics.evaluate`
ask it, so a fourth task is one class here, decorated with :func:`register_corruption`.

| regularity | kind | construction (n = |D_c|) |
|---|---|---|
| high   | ``poison``     | n uniform indices, label := target (0), 3×3 white trigger bottom-right, after augmentation |
| medium | ``interclass`` | first n/2 of class a (3) get label b (5), first n/2 of b get a, in data-set order |
| low    | ``random``     | n uniform indices, label := (true + U{1..K−1}) mod K, always wrong |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from rem.errors import ConfigError

if TYPE_CHECKING:
    from rem.data.container import ImageData
    from rem.data.tasks import TaskConfig, Trigger

#: ``predict(triggered)``: the deployed model's predictions on the test images, stamped where ``triggered``.
Predict = Callable[[torch.Tensor | None], torch.Tensor]


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return (pred == y).float().mean().item()


class Corruption:
    """One corruption task: ``kind`` (its name), ``regularity`` (high / medium / low)."""

    kind: str = ""
    regularity: str = ""

    def validate(self, config: TaskConfig) -> None:
        """Refuse settings this task cannot use (before any data is read)."""

    def trigger(self, config: TaskConfig) -> Trigger | None:
        """The patch stamped into D_c's training images, if the task has one."""
        return None

    def corrupt(
        self, data: ImageData, config: TaskConfig, y: torch.Tensor, triggered: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """Corrupt the labels ``y`` (and mark ``triggered``) in place; return D_c, sorted."""
        raise NotImplementedError

    def test_metrics(
        self, config: TaskConfig, y_test: torch.Tensor, clean: torch.Tensor, test_acc: float, predict: Predict
    ) -> dict:
        """``healed_test`` and ``utility`` (and the task's own, e.g. ``asr``), shares in [0, 1], from the clean
        test predictions ``clean`` (accuracy ``test_acc``) or others from ``predict``."""
        return {"healed_test": test_acc, "utility": test_acc}


CORRUPTIONS: dict[str, Corruption] = {}


def register_corruption(cls: type[Corruption]) -> type[Corruption]:
    """Class decorator adding a corruption task to the registry; a second task of the same kind is refused."""
    if not cls.kind or cls.kind in CORRUPTIONS:
        raise ConfigError(f"corruption task {cls.__name__} has no kind, or its kind {cls.kind!r} is taken")
    CORRUPTIONS[cls.kind] = cls()
    return cls


def get_corruption(kind: str) -> Corruption:
    if kind not in CORRUPTIONS:
        raise ConfigError(f"unknown task {kind!r}; expected one of {tuple(CORRUPTIONS)}")
    return CORRUPTIONS[kind]


@register_corruption
class Poison(Corruption):
    """A backdoor: n uniform samples get the attacker's label and a trigger patch."""

    kind, regularity = "poison", "high"

    def trigger(self, config):
        return config.trigger

    def corrupt(self, data, config, y, triggered, gen):
        if not 0 <= config.target < data.num_classes:
            raise ConfigError(f"poison target {config.target} is not a class of {data.name}")
        idx = torch.randperm(len(y), generator=gen)[: config.n_corrupt].sort().values
        y[idx] = config.target
        triggered[idx] = True
        return idx

    def test_metrics(self, config, y_test, clean, test_acc, predict):
        trig = predict(torch.ones(len(y_test), dtype=torch.bool))
        nt = y_test != config.target
        return {
            "healed_test": _acc(trig, y_test),
            "asr": (trig[nt] == config.target).float().mean().item(),
            "utility": test_acc,
        }


@register_corruption
class Interclass(Corruption):
    """Two classes swap labels on their first n/2 samples each (in data-set order)."""

    kind, regularity = "interclass", "medium"

    def validate(self, config):
        if config.n_corrupt % 2:
            raise ConfigError(f"interclass needs an even n_corrupt, got {config.n_corrupt}")
        if config.class_a == config.class_b:
            raise ConfigError("interclass needs two different classes")

    def corrupt(self, data, config, y, triggered, gen):
        y_true = data.y_train.cpu()
        a, b, half = config.class_a, config.class_b, config.n_corrupt // 2
        for c in (a, b):
            if not 0 <= c < data.num_classes:
                raise ConfigError(f"interclass class {c} is not a class of {data.name}")
        ia, ib = (y_true == a).nonzero().squeeze(1)[:half], (y_true == b).nonzero().squeeze(1)[:half]
        if len(ia) < half or len(ib) < half:
            raise ConfigError(f"interclass needs {half} samples of classes {a} and {b}; have {len(ia)}, {len(ib)}")
        y[ia], y[ib] = b, a
        return torch.cat([ia, ib]).sort().values

    def test_metrics(self, config, y_test, clean, test_acc, predict):
        ab = (y_test == config.class_a) | (y_test == config.class_b)
        return {"healed_test": _acc(clean[ab], y_test[ab]), "utility": _acc(clean[~ab], y_test[~ab])}


@register_corruption
class RandomLabels(Corruption):
    """n uniform samples get a uniformly drawn wrong label."""

    kind, regularity = "random", "low"

    def corrupt(self, data, config, y, triggered, gen):
        idx = torch.randperm(len(y), generator=gen)[: config.n_corrupt].sort().values
        shift = torch.randint(1, data.num_classes, (len(idx),), generator=gen)
        y[idx] = (data.y_train.cpu()[idx] + shift) % data.num_classes
        return idx
