"""Neural Cleanse (Wang et al., IEEE S&P 2019): reverse-engineer a trigger per class, flag the classes whose
trigger is abnormally small, and unlearn the backdoor by fine-tuning with the reversed trigger.

1. **Reverse engineering** (paper §IV-B, Eq. 2–3), for every class y_t: a mask m ∈ [0,1]^{H×W} and a pattern
   p ∈ [0,1]^{C×H×W}, both parametrised by tanh (m = tanh(a)/(2−ε) + ½), minimise
   CE(f((1−m)·x + m·p), y_t) + λ·|m|₁ with Adam (lr 0.1, β = (0.5, 0.9)) on mini-batches of 32 clean samples.
   λ follows the authors' schedule: 0 until the attack succeeds (≥ 99 % of the batch to y_t) for
   ``patience`` = 5 epochs, then ``init_cost`` = 1e-3, multiplied by ``cost_multiplier`` = 2 after 5 epochs of
   success and divided by 2^1.5 after 5 epochs of failure; the smallest |m|₁ with success is kept; early stop
   after 25 epochs without a smaller one once λ has gone both up and down. An epoch is 1,000 samples (the
   authors' ``NB_SAMPLE``: 31 mini-batches).
2. **Outlier test** (§IV-C): anomaly index = (median − |m_y|₁) / (1.4826 · MAD) over the classes' L1 norms;
   a class below the median with index > 2 is flagged as infected.
3. **Unlearning** (§VI-C): fine-tune with cross-entropy, a share (20 %, the paper's) of every batch stamped
   with the reversed trigger of a flagged class, labels unchanged. Nothing flagged: the model is returned as
   it is (NC patches only a model it found infected).

**Budget [choice].** Step 1 gets, per class, as many samples as the unlearning budget (``steps`` ×
``batch_size``) times ``reverse_budget`` (default 1), in NC's mini-batches of 32 — the paper runs up to
1,000 epochs with early stopping; step 3 is the shared fine-tuning budget (``steps`` steps of the shared
recipe, as ``finetune``) — the paper fine-tunes one epoch on 10 % of the training data.

Uses D_r (see :mod:`rem.methods.defences.common` for ``clean_subset``). Hyper-parameters: the paper and the
authors' release (``INIT_COST``, ``LR``, ``PATIENCE``, ``COST_MULTIPLIER``, ``NB_SAMPLE``, ``BATCH_SIZE``);
BackdoorBench's NC config has the same init_cost, patience, cost multiplier, early-stop patience (25) and
unlearning share (0.2), with a success threshold of 98 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from rem.errors import ConfigError
from rem.methods.base import register, setting
from rem.methods.common import LossLog, batches, cycle, derived_seed, optimizer_for
from rem.methods.defences.common import (
    Defence,
    DefenceConfig,
    clean_pool,
    deployed,
    endless,
    plain_shuffled,
    stamp,
    to_normalised,
)
from rem.runtime import autocast

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of the standard deviation (normal data)
EPSILON = 1e-7


@dataclass(frozen=True)
class NeuralCleanseConfig(DefenceConfig):
    init_cost: float = setting(1e-3, "λ once the attack first succeeds (the authors' INIT_COST)")
    cost_multiplier: float = setting(2.0, "λ × this after `patience` epochs of success, ÷ this^1.5 after failure")
    patience: int = setting(5, "epochs of success / failure before λ changes")
    early_stop_patience: int = setting(25, "epochs without a smaller successful mask before stopping (5·patience)")
    success_threshold: float = setting(0.99, "share of a batch sent to the class for the reversed trigger to count")
    reverse_lr: float = setting(0.1, "Adam learning rate of the mask and pattern (betas 0.5, 0.9)")
    reverse_batch_size: int = setting(32, "mini-batch of the reverse engineering")
    epoch_samples: int = setting(1000, "samples per epoch of λ's schedule (the authors' NB_SAMPLE)")
    reverse_budget: float = setting(1.0, "samples per class for reversing, in units of steps × batch_size")
    anomaly_threshold: float = setting(2.0, "anomaly index above which a class is flagged")
    unlearn_share: float = setting(0.2, "share of each fine-tuning batch stamped with a reversed trigger")

    def validate(self) -> None:
        if not 0.0 <= self.unlearn_share <= 1.0:
            raise ConfigError(f"neural-cleanse: unlearn_share is a share in [0, 1], got {self.unlearn_share}")
        if not 0.0 < self.success_threshold <= 1.0:
            raise ConfigError(f"neural-cleanse: success_threshold must be in (0, 1], got {self.success_threshold}")
        if min(self.patience, self.early_stop_patience, self.reverse_batch_size, self.epoch_samples) < 1:
            raise ConfigError("neural-cleanse: patience, early_stop_patience, reverse_batch_size, epoch_samples >= 1")
        if self.cost_multiplier <= 1.0 or self.init_cost <= 0 or self.reverse_lr <= 0 or self.reverse_budget <= 0:
            raise ConfigError("neural-cleanse: cost_multiplier must be > 1; init_cost, reverse_lr, reverse_budget > 0")

    def reverse_steps(self) -> int:
        """Optimisation steps per class (at least one)."""
        return max(1, math.ceil(self.reverse_budget * self.steps * self.batch_size / self.reverse_batch_size))


def _atanh_param(u: torch.Tensor) -> torch.Tensor:
    """The tanh parameter whose squashed value tanh(a)/(2−ε) + ½ is ``u`` ∈ (0, 1)."""
    return torch.atanh(((u - 0.5) * (2 - EPSILON)).clamp(-1 + 1e-6, 1 - 1e-6))


def _squash(a: torch.Tensor) -> torch.Tensor:
    return torch.tanh(a) / (2 - EPSILON) + 0.5


def reverse_trigger(model, data, target: int, cfg: NeuralCleanseConfig, shape, gen: torch.Generator, ctx) -> dict:
    """NC's optimisation for class ``target`` on the batches ``data``: the smallest successful mask found
    (or the last one, flagged ``success=False``), its pattern (in [0, 1] pixel units) and |m|₁."""
    c, h, w = shape
    dev = ctx.device
    a_mask = _atanh_param(torch.rand(1, 1, h, w, generator=gen)).to(dev).requires_grad_(True)
    a_pat = _atanh_param(torch.rand(1, c, h, w, generator=gen)).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([a_mask, a_pat], lr=cfg.reverse_lr, betas=(0.5, 0.9))
    per_epoch = max(1, cfg.epoch_samples // cfg.reverse_batch_size)
    cost, best, best_l1 = 0.0, None, math.inf
    set_count = up_count = down_count = stop_count = 0
    went_up = went_down = False
    stop_best = math.inf
    acc_sum = reg_sum = 0.0
    n_epoch = epochs = 0
    it = endless(data)
    for step in range(cfg.reverse_steps()):
        x, _, _ = next(it)
        m, p = _squash(a_mask), _squash(a_pat)
        logits = model(stamp(x, m, to_normalised(data, p)))
        y = torch.full((len(x),), target, dtype=torch.int64, device=dev)
        ce = F.cross_entropy(logits.float(), y)
        l1 = m.sum()
        loss = ce + cost * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc_sum += (logits.argmax(1) == y).float().mean().item()
        reg_sum += l1.item()
        n_epoch += 1
        if n_epoch < per_epoch and step + 1 < cfg.reverse_steps():
            continue
        # end of an epoch: the authors' bookkeeping, on the epoch's mean attack success and |m|₁
        acc, reg = acc_sum / n_epoch, reg_sum / n_epoch
        acc_sum = reg_sum = 0.0
        n_epoch, epochs = 0, epochs + 1
        if acc >= cfg.success_threshold and reg < best_l1:
            best_l1 = reg
            best = (_squash(a_mask).detach().clone(), _squash(a_pat).detach().clone())
        if best_l1 < math.inf:
            stop_count = stop_count + 1 if best_l1 >= stop_best else 0
            stop_best = min(stop_best, best_l1)
        if went_up and went_down and stop_count >= cfg.early_stop_patience:
            break
        if cost == 0 and acc >= cfg.success_threshold:
            set_count += 1
            if set_count >= cfg.patience:
                cost, up_count, down_count, went_up, went_down = cfg.init_cost, 0, 0, False, False
        else:
            set_count = 0
        if acc >= cfg.success_threshold:
            up_count, down_count = up_count + 1, 0
        else:
            up_count, down_count = 0, down_count + 1
        if cost > 0 and up_count >= cfg.patience:
            up_count, cost, went_up = 0, cost * cfg.cost_multiplier, True
        elif cost > 0 and down_count >= cfg.patience:
            down_count, cost, went_down = 0, cost / cfg.cost_multiplier**1.5, True
        ctx.step(step + 1, cfg.reverse_steps(), loss)
    success = best is not None
    if not success:  # never reached the threshold: the last mask stands for the class
        best = (_squash(a_mask).detach().clone(), _squash(a_pat).detach().clone())
    mask, pattern = best
    return {"mask": mask, "pattern": pattern, "l1": float(mask.sum()), "success": success, "epochs": epochs}


def anomaly_indices(l1: list[float]) -> list[float]:
    """NC's anomaly index per class: (median − |m|₁) / (1.4826 · MAD); positive below the median."""
    t = torch.tensor(l1, dtype=torch.float64)
    med = t.median()
    mad = MAD_CONSISTENCY * (t - med).abs().median()
    if mad == 0:
        return [0.0 if v == med else math.copysign(math.inf, float(med - v)) for v in t.tolist()]
    return ((med - t) / mad).tolist()


@register
class NeuralCleanse(Defence):
    """Neural Cleanse (Wang et al. 2019): per-class trigger reverse engineering, MAD outlier test (anomaly
    index > 2), and unlearning by fine-tuning with the reversed trigger stamped on 20 % of each batch (labels
    unchanged). Uses D_r as its clean data (``clean_subset=true``: truly clean, an upper bound). Details and
    budget: :mod:`rem.methods.defences.neural_cleanse`."""

    name = "neural-cleanse"
    order = 40
    config_cls = NeuralCleanseConfig
    summary = "Neural Cleanse: reverse triggers per class, flag outliers (MAD), fine-tune with the reversed trigger"
    uses = "D_r"
    acts_on_detection = True  # returns the model unchanged when it finds nothing to prune / patch

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: NeuralCleanseConfig = self.config
        model = deployed(model)
        model.eval().requires_grad_(False)
        pool = clean_pool(task, forget_idx, cfg.clean_subset)
        shape = tuple(task.data.x_train.shape[1:])
        k = task.data.num_classes
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "nc-init"))
        triggers = []
        for target in range(k):
            data = plain_shuffled(
                task, pool, cfg.reverse_batch_size, ctx.device, derived_seed(cfg.seed, f"nc-{target}")
            )
            triggers.append(reverse_trigger(model, data, target, cfg, shape, gen, _phase(ctx, target, k, cfg)))
        l1 = [t["l1"] for t in triggers]
        index = anomaly_indices(l1)
        flagged = [y for y in range(k) if index[y] > cfg.anomaly_threshold]
        history.append(
            {
                "phase": "detect",
                "l1": l1,
                "anomaly_index": index,
                "success": [t["success"] for t in triggers],
                "epochs": [t["epochs"] for t in triggers],
                "flagged": flagged,
                "n_pool": len(pool),
                "reverse_steps_per_class": cfg.reverse_steps(),
            }
        )
        model.requires_grad_(True)
        if flagged:
            self._unlearn_with(model, task, pool, [triggers[y] for y in flagged], _phase(ctx, k, k, cfg), history)
        return model

    def _unlearn_with(self, model, task, pool, triggers, ctx, history) -> None:
        """Fine-tune ``steps`` steps, ``unlearn_share`` of each batch stamped with a flagged class's trigger."""
        cfg: NeuralCleanseConfig = self.config
        dev = ctx.device
        data = batches(task, pool, cfg, dev)
        masks = torch.stack([t["mask"][0] for t in triggers]).to(dev)  # [T,1,H,W]
        patterns = torch.cat([to_normalised(data, t["pattern"].to(dev)) for t in triggers])  # [T,C,H,W]
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "nc-unlearn"))
        opt = optimizer_for(model, cfg)
        model.train()
        log = LossLog(history, len(data), phase="unlearn")
        for step, (x, y, _) in cycle(data, cfg.steps):
            n = len(x)
            chosen = torch.randperm(n, generator=gen)[: round(cfg.unlearn_share * n)].to(dev)
            which = torch.randint(len(triggers), (len(chosen),), generator=gen).to(dev)
            x = x.clone()
            x[chosen] = stamp(x[chosen], masks[which], patterns[which])
            with autocast(dev):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.add(step, loss.item())
            ctx.step(step + 1, cfg.steps, loss)
        log.flush(cfg.steps - 1)


def _phase(ctx, index: int, n_classes: int, cfg: NeuralCleanseConfig):
    """``ctx`` reporting one phase's steps as steps of the whole run: phase ``index`` < ``n_classes`` is a
    class's reversal, phase ``n_classes`` the fine-tuning; the progress stays monotone over the phases."""
    offset = index * cfg.reverse_steps()
    total = n_classes * cfg.reverse_steps() + cfg.steps

    def on_step(done: int, _total: int, loss=None) -> None:
        ctx.step(offset + done, total, loss)

    return replace(ctx, on_step=on_step)


__all__ = ["NeuralCleanse", "NeuralCleanseConfig", "anomaly_indices", "reverse_trigger"]
