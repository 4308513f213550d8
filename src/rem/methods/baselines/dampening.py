"""Dampening baselines of SPEC §5: ``ssd`` (Foster et al. 2024), ``potion`` (Schoepf et al. 2024).

Both compute a per-parameter importance on D_f and on a reference set, select the entries that matter
much more for D_f than for the reference, and scale them down by min(λ·imp_r / imp_f, 1) ∈ [0, 1]: a
weight's magnitude never grows, and an entry that is not selected stays bit-identical. Both work on
the deployed model: an ETD model is shrunk first (``drop`` mode computes the same function, and the
removed θ_o2 gets no gradient in ``drop`` mode anyway).

Importances are computed on non-augmented images (triggers stamped as trained) with the model in
eval mode, so batch-norm statistics are used, not changed **[choice]**. Two estimators
(:func:`importances`): the mean over *samples* of per-sample squared / absolute gradients (the
definition; independent of the batch size) or, as SSD's and Potion's code, the mean over *batches* of
the squared / absolute gradient of the batch-mean loss. The latter depends strongly on the batch size:
on a well-fitted D_r the batch-mean gradient nearly cancels while a D_f smaller than one batch does
not, so at batch 512 SSD then selects a large share of all weights and destroys the model (measured on
generated data: 31 % of entries, test accuracy 98 % → 10 %; per-sample: 0.06 %, accuracy kept).
Defaults: per-sample for SSD (SPEC's "diagonal Fisher"), per-batch for Potion (its threshold schedule
was calibrated with its code's estimator, and it adapts the threshold anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rem.errors import ConfigError
from rem.methods.base import Method, MethodConfig, register, setting
from rem.methods.common import plain_batches
from rem.metrics import accuracy
from rem.models import shrink


def _loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean cross-entropy (``fisher``) or mean L2 norm of the logits (``logit-norm``, label-free)."""
    out = out.float()
    return F.cross_entropy(out, y) if kind == "fisher" else out.norm(dim=1).mean()


def _accumulate(imp: dict[str, torch.Tensor], grads, kind: str, dim: int | None = None) -> None:
    for n, g in grads:
        if g is not None:
            v = g.pow(2) if kind == "fisher" else g.abs()
            imp[n] += v if dim is None else v.sum(dim)


def importances(
    model: nn.Module,
    task,
    idx: torch.Tensor,
    batch_size: int,
    device,
    kind: str = "fisher",
    per_sample: bool = True,
    chunk: int = 32,
    on_batch=None,
) -> dict[str, torch.Tensor]:
    """Per-entry importance of every parameter on D_tr[idx] (model in eval mode, ``drop`` mode).

    ``kind="fisher"``: squared gradient of the cross-entropy (labels as trained), the diagonal Fisher
    of SSD; ``kind="logit-norm"``: absolute gradient of the logits' L2 norm, label-free (Potion).

    ``per_sample=True``: the mean over samples of each sample's own squared / absolute gradient, the
    literal definition, independent of the batch size (per-sample gradients by ``torch.func.vmap``
    in chunks of ``chunk`` samples). ``per_sample=False``: as SSD's and Potion's code, the mean over
    batches of the squared / absolute gradient of each batch's mean loss; this depends strongly on
    the batch size (a well-fitted set's batch-mean gradient nearly cancels, a small D_f's does not).
    ``on_batch()`` is called after each batch (progress).
    """
    if kind not in ("fisher", "logit-norm"):
        raise ConfigError(f"unknown importance kind {kind!r}")
    was_training = model.training
    model.eval()
    imp = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    count = 0
    if per_sample:
        from torch.func import functional_call, grad, vmap

        params = {n: p.detach() for n, p in model.named_parameters()}
        buffers = {n: b.detach() for n, b in model.named_buffers()}

        def one(pr, x, y):
            out = functional_call(model, (pr, buffers), (x.unsqueeze(0),), {"mode": "drop"})
            return _loss(out, y.unsqueeze(0), kind)

        per_sample_grad = vmap(grad(one), in_dims=(None, 0, 0), chunk_size=chunk)
        for x, y, _ in plain_batches(task, idx, batch_size, device):
            _accumulate(imp, per_sample_grad(params, x, y).items(), kind, dim=0)
            count += len(y)
            if on_batch is not None:
                on_batch()
    else:
        for x, y, _ in plain_batches(task, idx, batch_size, device):
            model.zero_grad(set_to_none=True)
            _loss(model(x, mode="drop"), y, kind).backward()
            _accumulate(imp, ((n, p.grad) for n, p in model.named_parameters()), kind)
            count += 1
            if on_batch is not None:
                on_batch()
        model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: v / max(1, count) for n, v in imp.items()}


def _batch_ticker(ctx, index_sets, batch_size: int):
    """A callback reporting importance batches as the method's steps (``ctx.step``), over all ``index_sets``."""
    total = sum(math.ceil(len(i) / batch_size) for i in index_sets)
    done = [0]

    def tick() -> None:
        done[0] += 1
        ctx.step(done[0], total)

    return tick


@torch.no_grad()
def dampen_(
    model: nn.Module, imp_f: dict[str, torch.Tensor], imp_r: dict[str, torch.Tensor], alpha: float, lam: float
) -> int:
    """SSD's selection and dampening, in place: where imp_f > α·imp_r, θ ← θ·min(λ·imp_r/imp_f, 1).

    Returns the number of selected entries. Unselected entries are not touched; a selected entry is
    multiplied by a factor in [0, 1], so no weight's magnitude ever increases.
    """
    if alpha < 0 or lam < 0:
        raise ConfigError(f"dampening needs alpha >= 0 and lambda >= 0, got {alpha}, {lam}")
    selected = 0
    for n, p in model.named_parameters():
        f, r = imp_f[n], imp_r[n]
        sel = f > alpha * r  # f > 0 wherever selected, since α·imp_r >= 0
        if not bool(sel.any()):
            continue
        factor = (lam * r[sel] / f[sel]).clamp(0.0, 1.0)
        p[sel] = p[sel] * factor.to(p.dtype)
        selected += int(sel.sum())
    return selected


@dataclass(frozen=True)
class SSDConfig(MethodConfig):
    """SSD's settings: selection weighting ``alpha`` (α = 10) and dampening constant ``lam`` (λ = 1);
    ``reference``: the set of the reference importance, ``retain`` (D_r, as SPEC §5 and the
    corrective-unlearning benchmark) or ``train`` (all of D_tr, as the SSD paper's D); ``per_sample``:
    which importance estimator (:func:`importances`)."""

    alpha: float = setting(10.0, "selection weighting α: dampen entries with imp_f > α·imp_r")
    lam: float = setting(1.0, "dampening constant λ: scale by min(λ·imp_r/imp_f, 1)")
    reference: str = setting(
        "retain", "set of the reference importance: 'retain' (D_r, SPEC §5) or 'train' (all of D_tr, the SSD paper's D)"
    )
    per_sample: bool = setting(
        True,
        "importance as the mean of per-sample squared gradients (the diagonal "
        "Fisher proper); False: squared batch-mean gradients (SSD's code)",
    )

    def validate(self) -> None:
        if self.alpha < 0 or self.lam < 0:
            raise ConfigError(f"SSD: alpha and lam must be >= 0, got {self.alpha}, {self.lam}")
        if self.reference not in ("retain", "train"):
            raise ConfigError(f"SSD: reference must be 'retain' or 'train', got {self.reference!r}")


@register
class SSD(Method):
    """Selective Synaptic Dampening (Foster et al. 2024): diagonal-Fisher importances (mean squared
    gradient of CE, labels as trained) on D_f and on the reference set; every parameter entry with
    imp_f > α·imp_r is scaled by min(λ·imp_r/imp_f, 1). No training, no step budget.

    Uses D_f and D_r (``reference="train"``: all of D_tr). Departures: the importance is the mean of
    per-sample squared gradients (SSD's code squares batch-mean gradients, which makes the selection
    depend on the batch size; ``per_sample=False`` restores it), on non-augmented images; SSD's paper
    uses D = D_tr as the reference, SPEC §5 and the benchmark D_r (the default here).
    """

    name = "ssd"
    order = 14
    config_cls = SSDConfig
    summary = "Selective Synaptic Dampening: shrink weights far more important to D_f than to D_r"
    uses = "D_f, D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: SSDConfig = self.config
        dev = ctx.device
        model = shrink(model).to(dev)
        ref_idx = task.retain_idx(forget_idx) if cfg.reference == "retain" else torch.arange(task.n_train)
        tick = _batch_ticker(ctx, (forget_idx, ref_idx), cfg.batch_size)
        imp_f = importances(model, task, forget_idx, cfg.batch_size, dev, "fisher", cfg.per_sample, on_batch=tick)
        imp_r = importances(model, task, ref_idx, cfg.batch_size, dev, "fisher", cfg.per_sample, on_batch=tick)
        n_sel = dampen_(model, imp_f, imp_r, cfg.alpha, cfg.lam)
        total = sum(p.numel() for p in model.parameters())
        history.append({"phase": "dampen", "selected": n_sel, "selected_share": n_sel / max(1, total)})
        return model


@dataclass(frozen=True)
class PotionConfig(MethodConfig):
    """Potion's settings: at most ``max_tries`` tries; the share s starts at ``start_share`` (None:
    |D_f|/|D_tr|) and grows by ``growth`` per try until Acc(D_f) ≤ γ·Acc_start(D_f) (``relative``,
    Potion's code) or ≤ γ (``relative=False``); γ is the shared ``gamma`` (0.2); λ = ``lam`` = 1;
    ``per_sample``: which importance estimator (:func:`importances`)."""

    max_tries: int = setting(50, "at most this many tries of a growing share")
    growth: float = setting(1.1, "factor by which the share grows per try (> 1)")
    start_share: float | None = setting(None, "share of the first try (None: |D_f|/|D_tr|)")
    relative: bool = setting(True, "stop at Acc(D_f) <= γ·Acc_start(D_f) (Potion's code); False: at <= γ")
    lam: float = setting(1.0, "dampening constant λ")
    per_sample: bool = setting(False, "per-sample importance estimator; False: per-batch (Potion's code)")

    def validate(self) -> None:
        if self.max_tries < 1 or self.growth <= 1.0 or self.lam < 0:
            raise ConfigError(
                f"Potion: need max_tries >= 1, growth > 1, lam >= 0; got {self.max_tries}, {self.growth}, {self.lam}"
            )
        if self.start_share is not None and not 0 < self.start_share <= 1:
            raise ConfigError(f"Potion: start_share must be in (0, 1], got {self.start_share}")


def finite_ratios(imp_f: dict[str, torch.Tensor], imp_r: dict[str, torch.Tensor]) -> np.ndarray:
    """All finite ratios imp_f / imp_r over every parameter entry (0/0 and x/0 left out, as Potion's code)."""
    ratios = torch.cat([(imp_f[n] / imp_r[n]).flatten() for n in imp_f]).cpu()
    return ratios[torch.isfinite(ratios)].double().numpy()


def percentile_threshold(ratios: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0–100, linear interpolation) of ``ratios`` (inf when there are none)."""
    if ratios.size == 0:
        return float("inf")
    return float(np.percentile(ratios, min(100.0, max(0.0, q))))


@register
class Potion(Method):
    """Potion (Schoepf et al. 2024), a label-free, self-tuning SSD for poison unlearning.

    Importance = mean absolute gradient of the L2 norm of the logits (no labels) on D_f and on D_r.
    Selection threshold α = the percentile 100 − ln(1 + 100·s) of all ratios imp_f/imp_r; selected
    entries are dampened as SSD's (λ = 1). Starting at s = |D_f|/|D_tr| and multiplying s by 1.1, each
    try dampens the *starting* model anew until Acc(D_f) (against the corrupted labels) ≤ γ × its
    starting value, at most ``max_tries`` (50) tries; if the target is never met the last try is kept.
    Uses D_f and D_r (D_r's importance, D_f's accuracy). Importances as Potion's code (mean over
    batches of the absolute gradient of the batch-mean norm; ``per_sample=True`` for the per-sample
    mean). Departures: at most 50 tries (Potion's code allows 500); the plain L2 norm of the logits
    (Potion's code also has a squared-norm variant); Acc(D_f) on non-augmented images.
    """

    name = "potion"
    order = 15
    config_cls = PotionConfig
    summary = "Potion: label-free SSD with a percentile threshold grown until Acc(D_f) drops"
    uses = "D_f, D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: PotionConfig = self.config
        dev = ctx.device
        model = shrink(model).to(dev).eval()
        retain_idx = task.retain_idx(forget_idx)
        tick = _batch_ticker(ctx, (forget_idx, retain_idx), cfg.batch_size)
        imp_f = importances(model, task, forget_idx, cfg.batch_size, dev, "logit-norm", cfg.per_sample, on_batch=tick)
        imp_r = importances(model, task, retain_idx, cfg.batch_size, dev, "logit-norm", cfg.per_sample, on_batch=tick)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        ratios = finite_ratios(imp_f, imp_r)
        y = task.y_train.cpu()
        acc_start = accuracy(model, task, forget_idx, y, device=dev)
        target = cfg.gamma * acc_start if cfg.relative else cfg.gamma
        s = cfg.start_share if cfg.start_share is not None else len(forget_idx) / task.n_train
        for attempt in range(cfg.max_tries):
            model.load_state_dict(start)
            q = 100.0 - math.log(1.0 + 100.0 * s)
            alpha = percentile_threshold(ratios, q)
            n_sel = dampen_(model, imp_f, imp_r, alpha, cfg.lam)
            acc = accuracy(model, task, forget_idx, y, device=dev)
            history.append(
                {
                    "try": attempt,
                    "share": s,
                    "percentile": q,
                    "alpha": alpha,
                    "selected": n_sel,
                    "acc_f": acc,
                    "acc_f_start": acc_start,
                    "target": target,
                }
            )
            if acc <= target:
                break
            s *= cfg.growth
        return model
