"""What the methods share: batches, a frozen copy, the training-step loop, losses, the proxy, seeds.

- data: :func:`batches` (augmented, shuffled, over D_tr[idx]; :func:`forget_batches` over D_f keeps every
  sample), :func:`plain_batches` (non-augmented, in order: importances), :func:`cycle` (steps over epochs);
- training: :func:`optimizer_for`, :func:`train_steps` (the one training-step loop), :func:`train_logged`
  (a step budget of it with the loss logged per epoch), :func:`cross_entropy_loss`, :class:`LossLog`;
- models: :func:`frozen_copy` (a teacher or reference), :func:`fresh_model`, :func:`derived_seed`,
  :func:`forward` in a forward mode, :func:`train_forward_mode`;
- losses and selection: :func:`per_sample_ce`, :func:`npo_loss`, :func:`distill_kl`, :func:`proxy`,
  :class:`BestState`.

**Forward mode [choice].** On a starting model without extra units every baseline trains and measures
in ``drop`` mode (the ordinary network). On an ``etd`` starting model (one with extra units θ_o2) the
methods that train keep Example-Tied Dropout's training regime: each sample goes through its own
fixed mask (``mask`` mode, key = its index), exactly as during pretraining, and θ_o2 is dropped at
the end (:func:`rem.models.shrink`), so the deployed model is the kept part in ``drop`` mode.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rem.data.loader import Batches, train_batches
from rem.data.tasks import Task
from rem.methods.base import Context, MethodConfig
from rem.metrics import accuracy
from rem.models import CapacityNet
from rem.models.capacity import mask_keys
from rem.runtime import autocast
from rem.train import make_optimizer

#: A batch's loss (or target) from its images, labels (or targets) and sample indices: ``fn(x, y, idx)``.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# --- data -----------------------------------------------------------------------------------------


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


def forget_batches(task: Task, forget_idx: torch.Tensor, cfg: MethodConfig, device, seed_offset: int = 0):
    """Augmented, shuffled batches over D_f with the labels as trained (the corrupted ones), every sample each
    epoch (the last batch kept): :func:`batches` over ``forget_idx``."""
    return batches(task, forget_idx, cfg, device, seed_offset=seed_offset, drop_last=False)


def plain_batches(task: Task, idx: torch.Tensor, batch_size: int, device) -> Batches:
    """Non-augmented, unshuffled batches over D_tr[idx] (triggers stamped as trained): for importances."""
    return train_batches(task, idx, device=device, batch_size=batch_size, augment=False, shuffle=False)


def cycle(batches, steps: int) -> Iterator[tuple[int, tuple]]:
    """(step, batch) for ``steps`` steps, starting new epochs as needed."""
    step = 0
    while step < steps:
        empty = True
        for b in batches:
            empty = False
            yield step, b
            step += 1
            if step >= steps:
                return
        if empty:
            return


# --- training -------------------------------------------------------------------------------------


def optimizer_for(model: CapacityNet, cfg: MethodConfig, params=None) -> torch.optim.Optimizer:
    return make_optimizer(model.parameters() if params is None else params, cfg.recipe())


def train_steps(
    steps: Iterable[tuple[int, tuple]],
    opt: torch.optim.Optimizer,
    loss_fn: LossFn,
    device,
    *,
    targets_fn: LossFn | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[float, int]:
    """The training-step loop every method that trains runs: one optimiser step per ``(step, (x, y, idx))``
    of ``steps`` on ``loss_fn(x, target, idx)`` (mixed precision on CUDA), ``target`` being the batch's
    labels or ``targets_fn(x, y, idx)`` (computed before, outside mixed precision: e.g. a teacher's
    distributions); ``on_step(step, loss)`` after each step. Returns (the sum of the losses, the steps run).
    """
    total, n = 0.0, 0
    for step, (x, y, idx) in steps:
        target = y if targets_fn is None else targets_fn(x, y, idx)
        with autocast(device):
            loss = loss_fn(x, target, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n = total + loss.item(), n + 1
        if on_step is not None:
            on_step(step, loss)
    return total, n


def cross_entropy_loss(model: nn.Module, mode: str) -> LossFn:
    """The loss of plain training for :func:`train_steps`: cross-entropy of ``model``'s logits in ``mode``."""

    def loss(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(forward(model, x, idx, mode).float(), y)

    return loss


def train_logged(
    data: Batches,
    opt: torch.optim.Optimizer,
    cfg: MethodConfig,
    ctx: Context,
    history: list[dict],
    loss_fn: LossFn,
    *,
    targets_fn: LossFn | None = None,
) -> None:
    """``cfg.steps`` steps of :func:`train_steps` over ``data`` (new epochs as needed), the mean loss of every
    epoch of ``data`` appended to ``history`` (:class:`LossLog`) and each step reported to ``ctx``."""
    log = LossLog(history, len(data))

    def after(step: int, loss: torch.Tensor) -> None:
        log.add(step, loss.item())
        ctx.step(step + 1, cfg.steps, loss)

    train_steps(cycle(data, cfg.steps), opt, loss_fn, ctx.device, targets_fn=targets_fn, on_step=after)
    log.flush(cfg.steps - 1)


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


# --- models ---------------------------------------------------------------------------------------


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen copy (a teacher, a reference): a deep copy in eval mode without gradients (never updated)."""
    return copy.deepcopy(model).eval().requires_grad_(False)


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


def train_forward_mode(model: CapacityNet, ctx: Context) -> str:
    """``mask`` for an ETD model (its own per-sample masks, as in pretraining), else ``drop``."""
    return "mask" if (model.has_extra or ctx.pretrain_type == "etd") else "drop"


def forward(model: nn.Module, x: torch.Tensor, idx: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits of ``model`` in ``mode``; in ``mask`` mode each sample uses its own mask (key = its index)."""
    return model(x, mode=mode, keys=mask_keys(idx) if mode == "mask" else None)


# --- losses and selection -------------------------------------------------------------------------


def per_sample_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def npo_loss(ce: torch.Tensor, ce_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-sample NPO loss −(2/β)·log σ(β·(CE_θ − CE_ref)) (SPEC §4 step 2): minimising raises CE_θ."""
    return -(2.0 / beta) * F.logsigmoid(beta * (ce - ce_ref))


def proxy(
    model: CapacityNet, task: Task, forget_idx: torch.Tensor, retain_idx: torch.Tensor, gamma: float, device
) -> tuple[float, float, float]:
    """Model-selection proxy of SPEC §4 step 4, from training labels only (never test data or true labels).

    Returns (proxy, Acc_drop(D_r), Acc_drop(D_f)) with accuracies as shares in [0, 1].
    """
    y = task.y_train.cpu()
    acc_r = accuracy(model, task, retain_idx, y, device=device)
    acc_f = accuracy(model, task, forget_idx, y, device=device)
    return acc_r * (1 - max(acc_f, gamma)), acc_r, acc_f


def distill_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(p_teacher ‖ p_student) at temperature T, mean over the batch (Hinton et al.'s distillation loss).

    This is the "KL(student‖teacher)" of SCRUB's paper notation and its code's ``DistillKL``: the
    divergence of the student's softened distribution from the teacher's.
    """
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p, teacher_probs.float(), reduction="batchmean") * temperature**2


class BestState:
    """Keeps a CPU copy of the best-scoring model state (model selection by the proxy)."""

    def __init__(self) -> None:
        self.score, self.state, self.round = -float("inf"), None, -1

    def offer(self, score: float, model: torch.nn.Module, rnd: int) -> None:
        if score > self.score:
            self.score, self.round = score, rnd
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def restore(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.state is not None:
            model.load_state_dict(self.state)
        return model


@torch.no_grad()
def estimate_bn_stats(model: nn.Module, batches, n_batches: int, forward) -> None:
    """Batch-norm running statistics re-estimated as the cumulative average of ``n_batches`` training-mode
    passes ``forward(x)`` over the images of ``batches``; parameters unchanged, momenta restored, nothing done
    for ``n_batches=0``."""
    if n_batches == 0:
        return
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = None  # cumulative average over the passes
        m.reset_running_stats()
    was = model.training
    model.train()
    for i, (x, _, _) in enumerate(batches):
        if i == n_batches:
            break
        forward(x)
    model.train(was)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
