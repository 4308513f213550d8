"""``npo`` and ``ascent`` (SPEC §4 step 2 / §5): REM's step 2 alone, on θ_o1, best epoch by the proxy.

Both run epochs of a forget loss on D_f through θ_o1 (batch norm in training mode, as REM's step 2)
until Acc(D_f) ≤ γ or ``max_epochs``; after every epoch the proxy Acc(D_r)·(1 − max(Acc(D_f), γ))
scores the model and the best epoch is returned. They differ only in the loss: NPO against a frozen
θ_o1-only reference, or plain gradient ascent on the cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rem.data.tasks import Task
from rem.methods.base import Context, Method, MethodConfig, register, setting
from rem.methods.common import BestState, forget_batches, frozen_copy, optimizer_for, per_sample_ce, proxy
from rem.methods.forget import ForgetLoss, ascent_objective, npo_objective, remove_phase
from rem.models import CapacityNet, shrink
from rem.runtime import autocast


@dataclass(frozen=True)
class ForgetConfig(MethodConfig):
    """Settings of a method that is step 2 alone (``ascent``; ``npo`` adds β)."""

    forget_bn_frozen: bool = setting(False, "option (not the authors'): batch norm in inference mode in the updates")


@dataclass(frozen=True)
class NPOConfig(ForgetConfig):
    """NPO's settings: the shared ones and the inverse temperature β of the NPO loss."""

    beta: float = setting(1.0, "inverse temperature β of the NPO loss")


@register
class NPO(Method):
    """NPO alone (SPEC §4 step 2 / §5): NPO on D_f with a θ_o1-only reference, best epoch by the proxy."""

    name = "npo"
    order = 4
    config_cls = NPOConfig
    summary = "Negative Preference Optimisation on D_f until Acc(D_f) <= gamma, best epoch by the proxy"
    uses = "D_f (proxy: D_r)"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        return forget_until(model, task, forget_idx, self.config, ctx, history, npo_objective(self.config.beta))


@register
class Ascent(Method):
    """Gradient ascent on CE over D_f until Acc(D_f) ≤ γ, best epoch by the proxy (SPEC §5)."""

    name = "ascent"
    order = 5
    config_cls = ForgetConfig
    summary = "Gradient ascent on the cross-entropy of D_f until Acc(D_f) <= gamma, best epoch by the proxy"
    uses = "D_f (proxy: D_r)"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        return forget_until(model, task, forget_idx, self.config, ctx, history, ascent_objective)


def forget_until(
    model: CapacityNet,
    task: Task,
    forget_idx: torch.Tensor,
    cfg: MethodConfig,
    ctx: Context,
    history: list[dict],
    forget_loss: ForgetLoss,
) -> CapacityNet:
    """One epoch of ``forget_loss`` at a time until Acc(D_f) ≤ γ (at most ``cfg.max_epochs``); best epoch."""
    dev = ctx.device
    ref = frozen_copy(model)  # θ_o1-only reference (drop mode)

    @torch.no_grad()
    def ref_ce(x, y, idx):
        with autocast(dev):
            return per_sample_ce(ref(x, mode="drop"), y)

    retain_idx = task.retain_idx(forget_idx)
    opt = optimizer_for(model, cfg)
    forget_set_batches = forget_batches(task, forget_idx, cfg, dev, seed_offset=1)
    best = BestState()
    for epoch in range(cfg.max_epochs):
        _, _, aug_acc_f = remove_phase(
            model, ref_ce, forget_set_batches, opt, 1, cfg.gamma, forget_loss, cfg.forget_bn_frozen
        )
        score, acc_r, acc_f = proxy(model, task, forget_idx, retain_idx, cfg.gamma, dev)
        history.append(
            {"epoch": epoch, "aug_acc_f": aug_acc_f, "proxy": score, "acc_drop_r": acc_r, "acc_drop_f": acc_f}
        )
        best.offer(score, model, epoch)
        ctx.step(epoch + 1, cfg.max_epochs)
        if aug_acc_f <= cfg.gamma:
            break
    best.restore(model)
    history.append({"best_round": best.round, "best_proxy": best.score})
    return shrink(model)
