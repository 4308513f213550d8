"""Pretraining (SPEC §3, §6): the three pretraining types and the paper's recipes, in one visible loop.

- ``capacity-0.5``: only θ_o1 exists during training: the network is built at half width and trained
  as an ordinary network (no compute spent on channels that would be zero). REM expands it post hoc.
- ``etd``: Example-Tied Dropout (Maini et al. 2023): half kept, half extra; each sample's forward pass
  uses its own fixed mask over the extra half (``mask`` mode, key = its index); deployed in ``drop`` mode.
- ``full``: an ordinary network at full width, no reserve.

Recipe (ResNet-9): SGD momentum 0.9, weight decay 5e-4, peak lr 0.025 at batch 512, 1 % linear warm-up
then linear decay towards 0 at a horizon of 1.25 × steps. ViT: Adam, constant lr after warm-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from rem.data.loader import train_batches
from rem.data.tasks import Task
from rem.errors import ConfigError
from rem.models import CapacityNet, build_model
from rem.models.capacity import mask_keys
from rem.runtime import autocast

PRETRAIN_TYPES = ("capacity-0.5", "etd", "full")


@dataclass(frozen=True)
class Recipe:
    """An optimisation recipe: ``steps`` updates of ``batch_size``, optimiser and schedule."""

    steps: int = 4000
    batch_size: int = 512
    lr: float = 0.025
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.01  # share of steps with linear warm-up
    horizon: float = 1.25  # linear decay reaches 0 at horizon × steps; 0 = constant after warm-up

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"recipe needs positive steps, batch size and lr: {self}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")

    def lr_at(self, step: int) -> float:
        w = max(1, round(self.warmup * self.steps))
        if step < w:
            return self.lr * (step + 1) / w
        if self.horizon <= 0:
            return self.lr
        end = self.horizon * self.steps
        return self.lr * max(0.0, 1 - (step - w) / max(1.0, end - w))

    def as_dict(self) -> dict:
        return asdict(self)


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def pretrain_spec(arch_spec: dict, ptype: str) -> dict:
    """Model description for a pretraining type from a full-width description (``kept`` = full widths).

    capacity-0.5 keeps the first half of each partitioned width; etd splits each into half kept, half extra.
    Unpartitioned widths (ResNet-9's residual hidden layers) stay as described.
    """
    if ptype not in PRETRAIN_TYPES:
        raise ConfigError(f"unknown pretraining type {ptype!r}; expected one of {PRETRAIN_TYPES}")
    spec = dict(arch_spec)
    full = list(spec["kept"])
    half = [max(1, w // 2) for w in full]
    if ptype == "capacity-0.5":
        spec["kept"], spec["extra"] = half, [0] * len(full)
    elif ptype == "etd":
        spec["kept"], spec["extra"] = half, [w - h for w, h in zip(full, half)]
    else:
        spec["kept"], spec["extra"] = full, [0] * len(full)
    return spec


def train_mode(ptype: str) -> str:
    return "mask" if ptype == "etd" else "drop"


def fit(
    model: CapacityNet,
    task: Task,
    idx: torch.Tensor | None,
    recipe: Recipe,
    *,
    mode: str = "drop",
    device: torch.device | str = "cpu",
    seed: int = 0,
    params=None,
    progress: bool = False,
    desc: str = "train",
    on_step: Callable[[int, int, object], None] | None = None,
) -> CapacityNet:
    """Minimise cross-entropy on D_tr[idx] (labels as trained) for ``recipe.steps`` steps.

    In ``mask`` mode each sample goes through its own fixed mask (ETD). ``params`` restricts the
    optimised parameters (default: all). ``on_step(done, total, loss)`` is called after every step
    (:mod:`rem.progress`); ``progress`` draws a bar (when stderr is a terminal).
    """
    from rem.progress import StepBar, bars_enabled, chain

    dev = torch.device(device)
    model.to(dev).train()
    opt = make_optimizer(model.parameters() if params is None else params, recipe)
    batches = train_batches(
        task,
        idx,
        device=dev,
        batch_size=recipe.batch_size,
        seed=seed,
        drop_last=len(idx if idx is not None else task.y_train) > recipe.batch_size,
    )
    bar = StepBar(desc, bars_enabled(progress))
    report = chain(on_step, bar)
    step = 0
    while step < recipe.steps:
        for x, y, bidx in batches:
            for g in opt.param_groups:
                g["lr"] = recipe.lr_at(step)
            with autocast(dev):
                out = model(x, mode=mode, keys=mask_keys(bidx) if mode == "mask" else None)
                loss = F.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if report is not None:
                report(step, recipe.steps, loss.detach())
            if step >= recipe.steps:
                break
    bar.close()
    return model.eval()


def pretrain(
    task: Task,
    arch_spec: dict,
    ptype: str,
    recipe: Recipe,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
    on_step: Callable[[int, int, object], None] | None = None,
) -> CapacityNet:
    """Train a starting model of pretraining type ``ptype`` on all of D_tr as corrupted.

    ``on_step(done, total, loss)`` is called after every step; ``progress`` draws a bar.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(pretrain_spec(arch_spec, ptype))
    dev = torch.device(device)
    model = model.to(memory_format=torch.channels_last)  # faster on CUDA and on CPU (measured ~12 %)
    return fit(
        model,
        task,
        None,
        recipe,
        mode=train_mode(ptype),
        device=dev,
        seed=seed,
        progress=progress,
        desc=f"pretrain {ptype}",
        on_step=on_step,
    )
