"""SalUn (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rem.data.tasks import generator
from rem.errors import ConfigError
from rem.methods.base import Method, MethodConfig, register, setting
from rem.methods.common import (
    batches,
    cross_entropy_loss,
    forward,
    plain_batches,
    train_forward_mode,
    train_logged,
)
from rem.models import shrink


class MaskedOptimizer(torch.optim.Optimizer):
    """SGD (momentum, L2 weight decay) or Adam (L2 weight decay) that updates only masked entries.

    Each parameter has a bool mask; entries outside it keep their value *and* their optimiser state
    (momentum buffer, Adam moments) bit-for-bit: the new values are computed for the whole tensor and
    written back with ``torch.where``, so weight decay and momentum never leak outside the mask.
    """

    def __init__(
        self,
        params_and_masks: list[tuple[nn.Parameter, torch.Tensor]],
        kind: str = "sgd",
        lr: float = 0.005,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if kind not in ("sgd", "adam"):
            raise ConfigError(f"MaskedOptimizer: kind must be 'sgd' or 'adam', got {kind!r}")
        params = [p for p, _ in params_and_masks]
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "betas": betas, "eps": eps}
        )
        self.kind = kind
        for p, m in params_and_masks:
            if m.shape != p.shape or m.dtype != torch.bool:
                raise ConfigError(
                    f"mask of shape {tuple(m.shape)} / {m.dtype} for a parameter of "
                    f"shape {tuple(p.shape)}: need a bool mask of the same shape"
                )
            self.state[p]["mask"] = m.to(p.device)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - see the class docstring
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                m = st["mask"]
                g = p.grad.float() if p.dtype != p.grad.dtype else p.grad
                if wd:
                    g = g + wd * p
                if self.kind == "sgd":
                    mu = group["momentum"]
                    if mu:
                        buf = st.setdefault("momentum_buffer", torch.zeros_like(p))
                        buf.copy_(torch.where(m, buf * mu + g, buf))
                        g = buf
                    p.copy_(torch.where(m, p - lr * g, p))
                else:
                    b1, b2 = group["betas"]
                    st["step"] = st.get("step", 0) + 1
                    t = st["step"]
                    ea = st.setdefault("exp_avg", torch.zeros_like(p))
                    eas = st.setdefault("exp_avg_sq", torch.zeros_like(p))
                    ea.copy_(torch.where(m, ea * b1 + (1 - b1) * g, ea))
                    eas.copy_(torch.where(m, eas * b2 + (1 - b2) * g * g, eas))
                    denom = (eas / (1 - b2**t)).sqrt() + group["eps"]
                    p.copy_(torch.where(m, p - lr * (ea / (1 - b1**t)) / denom, p))
        return None


def saliency_mask(
    model: nn.Module, task, forget_idx: torch.Tensor, batch_size: int, mode: str, device, share: float = 0.5
) -> dict[str, torch.Tensor]:
    """SalUn's weight saliency: the top ``share`` of all parameter entries by |∂(−CE)/∂θ| on D_f.

    The gradient of the forget loss −CE (labels as trained) is accumulated over non-augmented batches of
    D_f with the model in eval mode; the threshold is global over all parameters and exactly
    round(share · #entries) entries are selected (ties broken by position).
    """
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for x, y, idx in plain_batches(task, forget_idx, batch_size, device):
        (-F.cross_entropy(forward(model, x, idx, mode).float(), y)).backward()
    named = list(model.named_parameters())
    flat = torch.cat([(p.grad.abs() if p.grad is not None else torch.zeros_like(p)).flatten() for _, p in named])
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    k = int(round(share * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        chosen[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    out, start = {}, 0
    for n, p in named:
        out[n] = chosen[start : start + p.numel()].view_as(p)
        start += p.numel()
    return out


def random_other_labels(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """For each label, a class drawn uniformly from the *other* num_classes − 1 classes."""
    shift = torch.randint(1, num_classes, (len(y),), generator=generator(seed, "salun", "random-labels"))
    return (y.cpu() + shift) % num_classes


@dataclass(frozen=True)
class SalUnConfig(MethodConfig):
    """SalUn's settings: ``share``, the share of weights in the saliency mask (50 % in the paper)."""

    share: float = setting(0.5, "share of weights in the saliency mask, in (0, 1]")

    def validate(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ConfigError(f"SalUn: share must be in (0, 1], got {self.share}")


@register
class SalUn(Method):
    """SalUn (Fan et al. 2024) with random labelling: the saliency mask keeps the top 50 % of weights by
    |∂(−CE)/∂θ| on D_f; then only those entries are trained, for ``steps`` steps of CE over batches of
    D_tr where each sample of D_f carries a fixed random label (uniform over the classes other than its
    training label) and every other sample its training label. Weights outside the mask and their
    optimiser state stay exactly unchanged (:class:`MaskedOptimizer`, weight decay included).

    Uses D_f and D_r. Departures: random labels exclude the training label (SalUn draws from all
    classes); SGD at the shared settings and step budget; batch-norm running statistics are buffers,
    not weights, and follow the training batches as in SalUn's code.
    """

    name = "salun"
    order = 16
    config_cls = SalUnConfig
    summary = "SalUn: train only the D_f-salient half of the weights, random labels on D_f"
    uses = "D_f, D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: SalUnConfig = self.config
        dev = ctx.device
        mode = train_forward_mode(model, ctx)
        masks = saliency_mask(model, task, forget_idx, cfg.batch_size, mode, dev, cfg.share)
        labels = task.y_train.cpu().clone()
        labels[forget_idx] = random_other_labels(labels[forget_idx], task.data.num_classes, cfg.seed)
        data = batches(task, None, cfg, dev, labels=labels)
        opt = MaskedOptimizer(
            [(p, masks[n]) for n, p in model.named_parameters()],
            cfg.optimizer,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        history.append(
            {
                "phase": "mask",
                "masked": int(sum(int(m.sum()) for m in masks.values())),
                "total": sum(m.numel() for m in masks.values()),
            }
        )
        model.train()
        train_logged(data, opt, cfg, ctx, history, cross_entropy_loss(model, mode))
        return shrink(model)
