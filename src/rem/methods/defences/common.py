"""What the post-training backdoor defences share: their base class (:class:`Defence`), their "clean" data,
the deployed model, its head and its batch-norm layers, and stamping a (reversed) trigger in the normalised
input space.

**Their data in rem's setting.** The defences' papers assume a small *clean* set and know nothing of which
training samples were poisoned. In rem a user has the retain set D_r = D_tr ∖ D_f, which still holds
the undiscovered corrupted samples (triggered, with the attacker's label): that is what every defence
trains on by default, "contaminated as it really is", and none of them touches D_f (their algorithms have no
use for known-poisoned samples; ``uses = "D_r"``). ``clean_subset=true`` gives them D_r without its
undiscovered corrupted samples instead — chosen with the ground truth, so it is an **upper bound** no user
has. Either way a defence consumes the same number of samples (its step budget × batch size), so the two
settings differ only in what the samples are (the pools differ by |D_c ∖ D_f| samples, ≤ 2 % of D_r in
every profile).

**Model [choice].** A defence acts on the model *as deployed*: an ETD starting model is shrunk to its kept
part first (:func:`rem.models.shrink`) and every defence runs in ``drop`` mode, the ordinary network; they
know nothing of ETD's training regime. The same code runs on a user's own model wrapped by
:class:`rem.models.generic.GenericCapacity` (its forward is the user's module).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rem.data.loader import Batches, train_batches
from rem.data.tasks import Task
from rem.errors import ConfigError, RemError
from rem.methods.base import Method, MethodConfig, setting
from rem.models import CapacityNet, shrink

CLEAN_SUBSET_HELP = (
    "false: the defence's 'clean' data is D_r as it really is (still holding the undiscovered corrupted "
    "samples); true: D_r without them, chosen with the ground truth — an UPPER BOUND no user has"
)


@dataclass(frozen=True)
class DefenceConfig(MethodConfig):
    """Settings every defence shares (besides the shared recipe of :class:`MethodConfig`)."""

    clean_subset: bool = setting(False, CLEAN_SUBSET_HELP)


class Defence(Method):
    """Base class of the post-training backdoor defences: ``family = "defence"`` (what the report's "Backdoor
    defences" section sets beside the unlearning methods), D_r as their data, and a label that marks the
    oracle setting: a run with ``clean_subset=true`` is ``anp (clean subset)`` in reports, its own row, never
    averaged with the realistic runs."""

    family = "defence"
    uses = "D_r"

    @classmethod
    def label(cls, config: dict) -> str:
        return f"{cls.name} (clean subset)" if config.get("clean_subset") else cls.name


def clean_pool(task: Task, forget_idx: torch.Tensor, clean_subset: bool) -> torch.Tensor:
    """The indices a defence takes for its clean data: D_r, or (``clean_subset``) D_r ∖ D_c (an oracle)."""
    retain = task.retain_idx(forget_idx)
    if not clean_subset:
        return retain
    try:
        corrupt = task.corrupt_idx
    except RemError as e:  # a user's data set (rem.data.user): D_c is unknown
        raise ConfigError(
            "clean_subset=true needs the ground truth (which samples are corrupted); a user's data set has none: "
            "leave clean_subset false"
        ) from e
    return retain[~torch.isin(retain, corrupt)]


def deployed(model: CapacityNet) -> CapacityNet:
    """The model as deployed (θ_o2 removed when it has any), in ``drop`` mode."""
    return shrink(model) if model.has_extra else model


def plain_shuffled(task: Task, idx: torch.Tensor, batch_size: int, device, seed: int) -> Batches:
    """Shuffled batches over D_tr[idx] without augmentation (triggers stamped, labels as trained)."""
    return train_batches(
        task, idx, device=device, batch_size=batch_size, augment=False, shuffle=True, seed=seed, drop_last=False
    )


def endless(batches: Batches):
    """Batches for ever, a new shuffle each epoch (an empty pool is refused)."""
    if len(batches) == 0:
        raise ConfigError("the defence has no data to work on: its clean pool is empty")
    while True:
        yield from batches


def to_normalised(batches: Batches, pixels01: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] pixel units (shape [C,H,W] or [1,C,H,W]) in the batches' normalised input space."""
    return (pixels01 * 255.0 - batches.norm.mean) / batches.norm.std


def stamp(x: torch.Tensor, mask: torch.Tensor, pattern_n: torch.Tensor) -> torch.Tensor:
    """(1 − m)·x + m·p in the normalised space. Normalisation is affine per channel and the two weights sum
    to one, so this is exactly the normalised image of the pixel-space blend NC's formula defines."""
    return (1 - mask) * x + mask * pattern_n


def classifier_head(model: nn.Module, num_classes: int) -> tuple[str, nn.Linear]:
    """(name, module) of the model's last ``nn.Linear``, checked to output ``num_classes`` logits."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1][1].out_features != num_classes:
        raise ConfigError(
            f"no linear classifier head found: the last nn.Linear of {type(model).__name__} must output "
            f"the {num_classes} class logits"
        )
    return linears[-1]


def batch_norms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """The model's affine batch-norm layers (name, module), in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
