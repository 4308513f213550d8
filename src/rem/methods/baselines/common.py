"""Pieces the baselines share: forward mode, batches, a logged training loop, layers, KL, derived seeds.

**Forward mode [choice].** On a starting model without extra units every baseline trains and measures
in ``drop`` mode (the ordinary network). On an ``etd`` starting model (one with extra units θ_o2) the
methods that train keep Example-Tied Dropout's training regime: each sample goes through its own
fixed mask (``mask`` mode, key = its index), exactly as during pretraining, and θ_o2 is dropped at
the end (:func:`rem.models.shrink`), so the deployed model is the kept part in ``drop`` mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rem.data.loader import Batches, train_batches
from rem.data.tasks import Task
from rem.errors import ConfigError
from rem.methods.base import Context, MethodConfig
from rem.models import CapacityNet
from rem.models.capacity import mask_keys


def train_forward_mode(model: CapacityNet, ctx: Context) -> str:
    """``mask`` for an ETD model (its own per-sample masks, as in pretraining), else ``drop``."""
    return "mask" if (model.has_extra or ctx.pretrain_type == "etd") else "drop"


def forward(model: nn.Module, x: torch.Tensor, idx: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits of ``model`` in ``mode``; in ``mask`` mode each sample uses its own mask (key = its index)."""
    return model(x, mode=mode, keys=mask_keys(idx) if mode == "mask" else None)


def batches(
    task: Task,
    idx: torch.Tensor | None,
    cfg: MethodConfig,
    device,
    *,
    seed_offset: int = 0,
    labels: torch.Tensor | None = None,
    drop_last: bool | None = None,
) -> Batches:
    """Shuffled, augmented batches over D_tr[idx] with labels as trained (or ``labels``).

    By default (``drop_last=None``), as in :func:`rem.train.fit`, the last incomplete batch is dropped
    when there is more than one batch; passes that must see every sample (epochs over D_f) pass False.
    """
    n = task.n_train if idx is None else len(idx)
    return train_batches(
        task,
        idx,
        device=device,
        batch_size=cfg.batch_size,
        seed=cfg.seed + seed_offset,
        labels=labels,
        drop_last=n > cfg.batch_size if drop_last is None else drop_last,
    )


def plain_batches(task: Task, idx: torch.Tensor, batch_size: int, device) -> Batches:
    """Non-augmented, unshuffled batches over D_tr[idx] (triggers stamped as trained): for importances."""
    return train_batches(task, idx, device=device, batch_size=batch_size, augment=False, shuffle=False)


class LossLog:
    """Appends the mean loss of every ``every`` steps (one record per epoch of the data) to ``history``."""

    def __init__(self, history: list[dict], every: int, phase: str = "train", **fixed) -> None:
        self.history, self.every, self.phase, self.fixed = history, max(1, every), phase, fixed
        self.total, self.n = 0.0, 0

    def add(self, step: int, loss: float, **extra) -> None:
        self.total += loss
        self.n += 1
        if (step + 1) % self.every == 0:
            self.flush(step, **extra)

    def flush(self, step: int, **extra) -> None:
        if self.n:
            self.history.append(
                {"phase": self.phase, "step": step + 1, "loss": self.total / self.n, **self.fixed, **extra}
            )
        self.total, self.n = 0.0, 0


def derived_seed(seed: int, purpose: str) -> int:
    """A seed keyed by (seed, purpose), so that different uses of one config seed draw independently."""
    return int(hashlib.sha256(f"{seed}/{purpose}".encode()).hexdigest()[:12], 16)


def fresh_model(model: CapacityNet, seed: int) -> CapacityNet:
    """A newly initialised model of the same architecture and partition (default init, under ``seed``)."""
    from rem.models import build_model

    if hasattr(model, "fresh"):  # a user's model in rem.models.generic.GenericCapacity: no spec to rebuild from
        return model.fresh(seed).to(next(model.parameters()).device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = build_model(model.spec())
    dev = next(model.parameters()).device
    return new.to(dev, memory_format=torch.channels_last)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen teacher: a deep copy in eval mode without gradients (never updated)."""
    import copy

    return copy.deepcopy(model).eval().requires_grad_(False)


def distill_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(p_teacher ‖ p_student) at temperature T, mean over the batch (Hinton et al.'s distillation loss).

    This is the "KL(student‖teacher)" of SCRUB's paper notation and its code's ``DistillKL``: the
    divergence of the student's softened distribution from the teacher's.
    """
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p, teacher_probs.float(), reduction="batchmean") * temperature**2


# --- layers ---------------------------------------------------------------------------------------


def layer_groups(model: nn.Module) -> list[list[str]]:
    """The model's layers in forward order; each layer is a list of module / parameter names.

    - ResNet-9: ``conv1, conv2, res1a, res1b, conv3, res2a, res2b, conv4, fc`` (9 layers; a conv-bn,
      its batch norm included, is one layer).
    - ViT: the embedding (``to_tokens`` with the ``cls`` token, the position embedding ``pos`` and the
      token-axis registers ``reg``), then each transformer block ``blocks.i``, then the head (``norm``, ``head``).
    - Any other model: its top-level children that hold parameters, a ``ModuleList`` counting one
      layer per item, in registration order.
    """
    arch = getattr(model, "arch", "")
    if hasattr(model, "layer_groups"):  # GenericCapacity: the wrapped user model's own layers
        return model.layer_groups()
    if arch == "resnet9":
        return [[n] for n in ("conv1", "conv2", "res1a", "res1b", "conv3", "res2a", "res2b", "conv4", "fc")]
    if arch == "vit":
        return (
            [["to_tokens", "cls", "pos", "reg"]]
            + [[f"blocks.{i}"] for i in range(len(model.blocks))]
            + [["norm", "head"]]
        )
    out: list[list[str]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            out.extend([[f"{name}.{i}"] for i, c in enumerate(child) if any(True for _ in c.parameters())])
        elif any(True for _ in child.parameters()):
            out.append([name])
    return out


def last_layers(model: nn.Module, k: int) -> list[str]:
    """Names (modules, or top-level parameters such as the ViT's ``cls``) of the last ``k`` layers.

    Layers are those of :func:`layer_groups`; a name covers every parameter and buffer under it.
    """
    groups = layer_groups(model)
    if not 1 <= k <= len(groups):
        raise ConfigError(f"k must be in [1, {len(groups)}] for this model's {len(groups)} layers, got {k}")
    return [n for g in groups[-k:] for n in g]


def under(name: str, prefixes: Sequence[str]) -> bool:
    """Whether the parameter / buffer ``name`` belongs to one of the modules or parameters ``prefixes``."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)
