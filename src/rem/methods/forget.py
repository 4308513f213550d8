"""Forgetting D_f through θ_o1: REM's step 2 (SPEC §4), also the whole of ``npo`` and ``ascent``.

Shared by :mod:`rem.methods.rem` (step 2 of every round) and :mod:`rem.methods.npo` (the step alone).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rem.methods.common import npo_loss, per_sample_ce
from rem.models import CapacityNet
from rem.runtime import autocast

#: ``forget_loss(ce, ce_ref)``: the batch objective of step 2 from per-sample CE of θ_o1 and of the reference.
ForgetLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def npo_objective(beta: float) -> ForgetLoss:
    """Mean NPO loss −(2/β)·log σ(β·(CE_θ − CE_ref)) over the batch (SPEC §4 step 2)."""
    return lambda ce, ce_ref: npo_loss(ce, ce_ref, beta).mean()


def ascent_objective(ce: torch.Tensor, ce_ref: torch.Tensor) -> torch.Tensor:
    """Gradient ascent on the cross-entropy (the reference is not used)."""
    return -ce.mean()


def remove_phase(
    model: CapacityNet,
    ref_ce,
    batches,
    opt,
    max_epochs: int,
    gamma: float,
    forget_loss: ForgetLoss,
    bn_frozen: bool = False,
) -> tuple[int, int, float]:
    """Step 2: epochs of a forget loss on D_f through the dropped model until Acc ≤ γ.

    Updates run in training mode (batch norm normalises by the D_f batch and updates its running
    statistics, SPEC §4). The stopping accuracy is measured after each epoch, without gradients, on
    augmented D_f images in inference mode (the deployed model's accuracy). ``forget_loss(ce, ce_ref)``
    gives the batch objective. ``bn_frozen`` (an option, off by default: ``rem``'s behaviour before it
    followed the authors) keeps batch norm in inference mode during the updates instead. Returns
    (epochs, steps, last accuracy as a share).
    """
    epochs = steps = 0
    acc = aug_acc(model, batches)
    while epochs < max_epochs and acc > gamma:
        model.train()
        if bn_frozen:
            for mod in model.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        for x, y, idx in batches:
            with autocast(x.device):
                logits = model(x, mode="drop")
            obj = forget_loss(per_sample_ce(logits, y), ref_ce(x, y, idx))
            opt.zero_grad(set_to_none=True)
            obj.backward()
            opt.step()
            steps += 1
        epochs += 1
        acc = aug_acc(model, batches)
    model.train()
    return epochs, steps, acc


@torch.no_grad()
def aug_acc(model: CapacityNet, batches) -> float:
    """Accuracy (share) of the dropped model, inference mode, on the (augmented) images of ``batches``."""
    was = model.training
    model.eval()
    correct = seen = 0
    for x, y, _ in batches:
        with autocast(x.device):
            correct += (model(x, mode="drop").argmax(1) == y).sum().item()
        seen += len(y)
    model.train(was)
    return correct / max(1, seen)
