"""Distillation baselines of SPEC §5: ``scrub`` (Kurmanji et al. 2023), ``badt`` (Chundawat et al. 2023)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rem.errors import ConfigError
from rem.methods.base import Method, MethodConfig, register, setting
from rem.methods.common import (
    batches,
    cycle,
    derived_seed,
    distill_kl,
    forget_batches,
    forward,
    fresh_model,
    frozen_copy,
    optimizer_for,
    train_forward_mode,
    train_logged,
    train_steps,
)
from rem.models import shrink


@torch.no_grad()
def _probs(model: nn.Module, x: torch.Tensor, idx: torch.Tensor, mode: str, temperature: float) -> torch.Tensor:
    return F.softmax(forward(model, x, idx, mode).float() / temperature, dim=1)


@dataclass(frozen=True)
class SCRUBConfig(MethodConfig):
    """SCRUB's settings. ``alpha``: weight of the KL term in the min-steps (paper grid 0.001, 0.01, 0.1, 10;
    SPEC reports 0.01). ``rounds``: the min-step budget ``steps`` is split into this many equal chunks
    (10: one chunk is about one epoch of D_r at the paper's budget). ``msteps``: how many of the first
    rounds start with one epoch of max-steps over D_f."""

    alpha: float = setting(0.01, "weight of the KL term in the min-steps")
    temperature: float = setting(4.0, "distillation temperature T")
    rounds: int = setting(10, "the min-step budget `steps` is split into this many equal chunks")
    msteps: int = setting(3, "how many of the first rounds start with one epoch of max-steps over D_f")

    def validate(self) -> None:
        if self.alpha < 0 or self.temperature <= 0:
            raise ConfigError(f"SCRUB: alpha must be >= 0 and temperature > 0, got {self.alpha}, {self.temperature}")
        if self.rounds < 1 or self.msteps < 0:
            raise ConfigError(f"SCRUB: rounds must be >= 1 and msteps >= 0, got {self.rounds}, {self.msteps}")


@register
class SCRUB(Method):
    """SCRUB (Kurmanji et al. 2023): a student (the model) moves away from a frozen teacher (a copy of
    the starting model) on D_f and stays close to it on D_r.

    - max-step, one batch of D_f: maximise T²·KL(p_teacher ‖ p_student) at temperature T = 4;
    - min-step, one batch of D_r: minimise CE (labels as trained) + α·T²·KL(p_teacher ‖ p_student).

    Schedule: ``rounds`` rounds; each of the first ``msteps`` rounds starts with one epoch of max-steps
    over D_f, and every round then does its share (``steps`` / ``rounds``) of min-steps, as in SCRUB's
    epoch loop (max-epochs only early, min-steps throughout). Only min-steps count toward ``steps``
    (like REM's removal steps, max-steps over the small D_f are extra). Uses D_f and D_r.
    Departures: SGD at the shared settings and the step budget instead of SCRUB's per-set tuning and
    epochs; CE weight 1 instead of 0.99; no model selection on a validation set. The KL is the SCRUB
    code's distillation loss (KL of the student from the teacher, scaled by T²).
    """

    name = "scrub"
    order = 12
    config_cls = SCRUBConfig
    summary = "SCRUB: max KL to a frozen teacher on D_f, min CE + alpha KL on D_r"
    uses = "D_f, D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: SCRUBConfig = self.config
        dev = ctx.device
        mode = train_forward_mode(model, ctx)
        teacher = frozen_copy(model)
        T = cfg.temperature
        fb = forget_batches(task, forget_idx, cfg, dev, seed_offset=1)  # every D_f sample
        rb = batches(task, task.retain_idx(forget_idx), cfg, dev)
        retain_steps = cycle(rb, cfg.steps)
        chunk = math.ceil(cfg.steps / cfg.rounds)
        opt = optimizer_for(model, cfg)

        def max_loss(x, _, idx):  # minus the KL: the step pushes the student's D_f predictions away
            return -distill_kl(forward(model, x, idx, mode), _probs(teacher, x, idx, mode, T), T)

        def min_loss(x, y, idx):  # CE on D_r plus the KL that keeps the student close to the teacher
            logits = forward(model, x, idx, mode)
            kl = distill_kl(logits, _probs(teacher, x, idx, mode, T), T)
            return F.cross_entropy(logits.float(), y) + cfg.alpha * kl

        def min_step(step, loss) -> None:
            done[0] = step + 1
            ctx.step(done[0], cfg.steps, loss)

        model.train()
        done = [0]
        for rnd in range(cfg.rounds):
            rec: dict = {"round": rnd}
            if rnd < cfg.msteps:  # max-steps: one epoch over D_f
                total, n = train_steps(enumerate(fb), opt, max_loss, dev)
                rec.update(max_steps=n, max_kl=-total / n if n else 0.0)
            chunk_steps = itertools.islice(retain_steps, chunk)  # min-steps on D_r
            total, n = train_steps(chunk_steps, opt, min_loss, dev, on_step=min_step)
            rec.update(min_steps=n, min_loss=total / max(1, n), steps=done[0])
            history.append(rec)
            if rnd + 1 >= cfg.msteps and done[0] >= cfg.steps:
                break
        return shrink(model)


@dataclass(frozen=True)
class BadTConfig(MethodConfig):
    """Bad Teacher's settings: the distillation temperature (1 in the paper)."""

    temperature: float = setting(1.0, "distillation temperature (1 in the paper)")

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"BadT: temperature must be positive, got {self.temperature}")


@torch.no_grad()
def teacher_targets(
    x: torch.Tensor,
    idx: torch.Tensor,
    in_forget: torch.Tensor,
    competent: nn.Module,
    incompetent: nn.Module,
    mode: str,
    temperature: float,
) -> torch.Tensor:
    """Per-sample teacher distributions: the incompetent (random) teacher's for samples of D_f
    (``in_forget`` true), the competent (original) teacher's for the others. Each teacher only ever
    sees its own samples."""
    parts = []
    for teacher, rows in ((incompetent, in_forget), (competent, ~in_forget)):
        if bool(rows.any()):
            parts.append((rows, _probs(teacher, x[rows], idx[rows], mode, temperature)))
    out = torch.empty(len(x), parts[0][1].shape[1], device=x.device, dtype=parts[0][1].dtype)
    for rows, p in parts:
        out[rows] = p
    return out


@register
class BadTeacher(Method):
    """Bad Teacher (Chundawat et al. 2023): distil into the student (the model) from the competent
    teacher (a frozen copy of the starting model) on retain samples and from an incompetent teacher
    (a randomly initialised model of the same architecture) on samples of D_f, with
    KL(p_teacher ‖ p_student) at temperature 1, over batches of all of D_tr for ``steps`` steps.

    Uses D_tr (with D_f marked). Departures: SGD at the shared settings and step budget over all of D_tr
    instead of one epoch of Adam over D_f plus a 30 % subset of D_r; the KL is averaged over the batch
    (the original code averages over batch × classes, a constant factor).
    """

    name = "badt"
    order = 13
    config_cls = BadTConfig
    summary = "Bad Teacher: distil from the original on D_r and from a random network on D_f"
    uses = "D_tr"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: BadTConfig = self.config
        dev = ctx.device
        mode = train_forward_mode(model, ctx)
        competent = frozen_copy(model)
        incompetent = fresh_model(model, derived_seed(cfg.seed, "badt-incompetent"))  # random init
        incompetent.eval().requires_grad_(False)
        is_forget = task.membership(forget_idx).to(dev)
        data = batches(task, None, cfg, dev)
        opt = optimizer_for(model, cfg)

        def targets(x, _, idx):  # each teacher's distributions on its own samples
            return teacher_targets(x, idx, is_forget[idx], competent, incompetent, mode, cfg.temperature)

        model.train()
        train_logged(
            data,
            opt,
            cfg,
            ctx,
            history,
            lambda x, target, idx: distill_kl(forward(model, x, idx, mode), target, cfg.temperature),
            targets_fn=targets,
        )
        return shrink(model)
