"""A data set with one corruption task applied (SPEC §1), and its discovered sets.

The tasks themselves (``poison``, ``interclass``, ``random``: how each corrupts, which metrics it has)
are classes in :mod:`rem.data.corruptions`, behind one interface and a registry.

All randomness comes from ``torch.Generator`` objects keyed by (seed, kind, purpose), never global
state. D_f is the first ``round(rate·n)`` entries of one fixed permutation of D_c, so discovered sets
are nested across rates for the same seed. :meth:`Task.split_hash` identifies (D_c, labels, D_f).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import torch

from rem.data.container import ImageData
from rem.data.corruptions import CORRUPTIONS, get_corruption
from rem.errors import ArgumentError, ConfigError, IndexSetError
from rem.seeding import seeded_generator

KINDS = tuple(CORRUPTIONS)  # in registration order: poison, interclass, random
REGULARITY = {k: c.regularity for k, c in CORRUPTIONS.items()}
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def generator(seed: int, kind: str, purpose: str) -> torch.Generator:
    """A CPU generator keyed by (seed, task kind, purpose), independent of global RNG state."""
    return seeded_generator(f"{seed}/{kind}/{purpose}")


@dataclass(frozen=True)
class Trigger:
    """A square patch of constant value stamped into uint8 images (SPEC §1, poison)."""

    size: int = 3
    corner: str = "bottom-right"
    value: int = 255  # the data set's maximum pixel value: white on every channel

    def __post_init__(self) -> None:
        if self.corner not in CORNERS:
            raise ConfigError(f"trigger corner must be one of {CORNERS}, got {self.corner!r}")
        if self.size < 1 or not 0 <= self.value <= 255:
            raise ConfigError(f"bad trigger size {self.size} or value {self.value}")

    def stamp(self, x: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        """Stamp the trigger into the uint8 batch ``x`` [B,C,H,W] (in place) where ``which`` is true."""
        h, w = x.shape[-2:]
        if self.size > min(h, w):
            raise ConfigError(f"trigger of size {self.size} does not fit {h}×{w} images")
        rs = slice(h - self.size, h) if self.corner.startswith("bottom") else slice(0, self.size)
        cs = slice(w - self.size, w) if self.corner.endswith("right") else slice(0, self.size)
        if which is None:
            x[..., rs, cs] = self.value
        elif bool(which.any()):
            sel = which.nonzero().squeeze(1)
            patch = x[sel]
            patch[..., rs, cs] = self.value
            x[sel] = patch
        return x


PAD_MODES = ("zeros", "reflect")  # how training crops are padded (see rem.data.loader.random_crop_flip)


@dataclass(frozen=True)
class TaskConfig:
    """Settings of one corruption task, with the paper's defaults."""

    kind: str = "poison"
    n_corrupt: int = 1000
    seed: int = 0
    target: int = 0  # poison: the attacker's label
    trigger: Trigger = field(default_factory=Trigger)
    class_a: int = 3  # interclass: cat
    class_b: int = 5  # interclass: dog
    crop_pad: str = "zeros"  # how training crops are padded: "zeros" (the paper's) or "reflect"

    def __post_init__(self) -> None:
        corruption = get_corruption(self.kind)
        if self.crop_pad not in PAD_MODES:
            raise ConfigError(f"crop_pad must be one of {PAD_MODES}, got {self.crop_pad!r}")
        if self.n_corrupt < 1:
            raise ConfigError(f"n_corrupt must be positive, got {self.n_corrupt}")
        corruption.validate(self)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TaskConfig:
        d = dict(d)
        if isinstance(d.get("trigger"), dict):
            d["trigger"] = Trigger(**d["trigger"])
        return cls(**d)


@dataclass
class Task:
    """A data set with one corruption applied: what the model was trained on, and the ground truth."""

    config: TaskConfig
    data: ImageData
    y_train: torch.Tensor  # labels as trained (corrupted on D_c)
    corrupt_idx: torch.Tensor  # D_c, sorted int64
    triggered: torch.Tensor  # bool [N]: samples stamped with the trigger during training
    discovery_order: torch.Tensor  # a permutation of D_c; D_f(rate) is a prefix of it

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def y_true(self) -> torch.Tensor:
        return self.data.y_train

    @property
    def trigger(self) -> Trigger | None:
        return get_corruption(self.kind).trigger(self.config)

    def n_forget(self, rate: float) -> int:
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"discovery rate must be in [0, 1], got {rate}")
        return int(round(rate * len(self.corrupt_idx)))

    def forget_idx(self, rate: float) -> torch.Tensor:
        """D_f at discovery ``rate``: nested across rates (a prefix of one permutation), sorted."""
        return self.discovery_order[: self.n_forget(rate)].sort().values

    def retain_idx(self, forget_idx: torch.Tensor) -> torch.Tensor:
        """D_r = D_tr \\ D_f (it still holds the undiscovered corrupted samples)."""
        keep = torch.ones(self.n_train, dtype=torch.bool)
        keep[forget_idx.cpu()] = False
        return keep.nonzero().squeeze(1)

    def membership(self, idx: torch.Tensor) -> torch.Tensor:
        """Bool tensor over D_tr, true on ``idx``."""
        m = torch.zeros(self.n_train, dtype=torch.bool)
        m[idx.cpu()] = True
        return m

    def check_forget_idx(self, forget_idx, within_corrupt: bool = False) -> torch.Tensor:
        """Validate user-given indices: integers, in range, no duplicates, not every sample, optionally ⊆ D_c."""
        t = forget_tensor(forget_idx)
        if t.dim() != 1:
            t = t.reshape(-1)
        if t.numel() and (t.dtype.is_floating_point or t.dtype == torch.bool):
            raise IndexSetError(f"forget indices must be integers, got dtype {t.dtype}")
        t = t.to(torch.int64)
        if t.numel() == 0:
            raise IndexSetError("the forget set is empty: give at least one discovered index")
        bad = t[(t < 0) | (t >= self.n_train)]
        if bad.numel():
            raise IndexSetError(f"{bad.numel()} forget indices out of range [0, {self.n_train}): {bad[:5].tolist()}")
        uniq, counts = t.unique(return_counts=True)
        if (counts > 1).any():
            raise IndexSetError(f"duplicated forget indices: {uniq[counts > 1][:5].tolist()}")
        if uniq.numel() >= self.n_train:
            raise IndexSetError(
                f"the forget set holds every one of the {self.n_train} training samples: D_r is empty, nothing would "
                "be left to retain (every metric on the rest undefined); give only the discovered samples"
            )
        if within_corrupt:
            outside = uniq[~torch.isin(uniq, self.corrupt_idx)]
            if outside.numel():
                raise IndexSetError(
                    f"{outside.numel()} forget indices are not in the corrupted set D_c: {outside[:5].tolist()}"
                )
        return uniq

    def split_hash(self, forget_idx: torch.Tensor | None = None) -> str:
        """sha256 of (D_c, their training labels, D_f): identifies the split a result was computed on."""
        h = hashlib.sha256()
        h.update(self.corrupt_idx.numpy().astype("<i8").tobytes())
        h.update(self.y_train[self.corrupt_idx].numpy().astype("<i8").tobytes())
        if forget_idx is not None:
            h.update(b"|")
            h.update(forget_idx.sort().values.cpu().numpy().astype("<i8").tobytes())
        return h.hexdigest()[:16]


def forget_tensor(forget_idx) -> torch.Tensor:
    """``forget_idx`` as a tensor, refusing what is not a collection of integers in a fixed order: None, a
    set (no order), a generator or iterator (read once), text, a mapping (:class:`~rem.errors.ArgumentError`
    naming the argument)."""
    import collections.abc as abc

    import numpy as np

    what = type(forget_idx).__name__
    if forget_idx is None:
        raise ArgumentError("forget_idx is None: give the discovered sample indices (a list, array or tensor of ints)")
    if isinstance(forget_idx, (str, bytes)):
        raise ArgumentError(
            f"forget_idx is text ({forget_idx[:20]!r}): give a list, array or tensor of integer indices"
        )
    if isinstance(forget_idx, (abc.Set, abc.Mapping)):
        raise ArgumentError(f"forget_idx is a {what}: give a list, array or tensor of integer indices (sorted(s))")
    if isinstance(forget_idx, abc.Iterator):
        raise ArgumentError(f"forget_idx is a {what} (read once): give a list, array or tensor; e.g. list(...)")
    if not isinstance(forget_idx, (torch.Tensor, np.ndarray, list, tuple, range)):
        raise ArgumentError(f"forget_idx must be a list, array or tensor of integer indices, got a {what}")
    try:
        t = torch.as_tensor(np.asarray(forget_idx) if isinstance(forget_idx, range) else forget_idx)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ArgumentError(f"forget_idx must hold integer indices only: {str(e).splitlines()[0]}") from None
    if t.device.type != "cpu":
        t = t.cpu()
    return t


def make_task(data: ImageData, config: TaskConfig) -> Task:
    """Apply the corruption of ``config`` to ``data`` (SPEC §1, :mod:`rem.data.corruptions`)."""
    n, kind = data.y_train.numel(), config.kind
    if config.n_corrupt > n:
        raise ConfigError(f"n_corrupt={config.n_corrupt} exceeds the {n} training samples")
    y = data.y_train.cpu().clone()
    triggered = torch.zeros(n, dtype=torch.bool)
    idx = get_corruption(kind).corrupt(data, config, y, triggered, generator(config.seed, kind, "corrupt"))
    order = idx[torch.randperm(len(idx), generator=generator(config.seed, kind, "discover"))]
    return Task(config, data, y, idx, triggered, order)
