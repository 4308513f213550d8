"""REM — Redirection for Erasing Memory (Schoepf et al., ICLR 2026; docs/spec.md §4), its oracle and ablation.

The corruption a model memorised is moved into extra units that are then cut off:

1. **Expand** θ_o1 by extra units θ_o2 (``expand_ratio`` r; an ETD model already has them) and freeze a
   copy as the reference θ_ref, whose logits are taken in ``mask`` mode (D_f through the shared mask).
2. **Remove**: with θ_o2 dropped, minimise NPO on D_f one epoch at a time until the dropped model's
   accuracy on D_f (corrupted labels, augmented images) is ≤ γ, at most ``max_epochs`` epochs. Not counted
   in the step budget.
3. **Redirect**: one epoch over all of D_tr minimising, per batch,
   mean[(2/β)·log σ(β·(CE_mask − CE_ref)) − 1[x∈D_f]·(2/β)·log σ(β·(CE_drop − CE_ref))],
   all of D_f routed through one shared mask, so the corruption settles in θ_o2.
4. Repeat 2–3 until ``steps`` redirect steps are done; after each round score the proxy
   Acc_drop(D_r)·(1 − max(Acc_drop(D_f), γ)) on training labels and keep the best round.
5. **Drop** θ_o2 physically and return θ_o1 of the best round (the original parameter count).

Registered here: ``rem``; ``rem-ideal`` (oracle: all of D_c shares the mask and is in the removal term of
step 3); ``rem-no-remove`` (no removal term in step 3). Step 2 lives in :mod:`rem.methods.forget`, shared
with ``npo``; ``rem-discover`` and the **[beyond]** ``rem-reinit`` / ``rem-sp`` subclass :class:`REM` through
its two hooks (:meth:`REM._grow`, :meth:`REM._reset`).

Batch norm follows the authors' code: training mode in steps 2 and 3 (step 3 runs the masked and the
dropped forward on the whole batch, the removal term zeroed outside D_f); inference mode for θ_ref and
every accuracy. ``forget_bn_frozen`` keeps it in inference mode in step 2 instead. **[choice], measured**:
the default stays the authors' training mode because it is the better of the two across the three tasks.
On the ``cpu`` profile (seed 0, 100 steps, mean uxh over rates 0.1 / 0.5 / 1.0) frozen against training
mode: backdoor 50.5 against 43.5 (ASR under 2 % at every rate), class swap 3.6 against 13.3, random labels
25.4 against 28.6; the mean over tasks is 26.5 against 28.5 (docs/results/screen.md). For a backdoor
the option is the better one, on a user's ResNet-18 too (docs/results/measurements.md).

Departures, **[choice]** where the paper leaves room: one SGD optimiser serves both phases (the momentum
it carries is the authors' behaviour); step 2's stopping accuracy is measured after each epoch; the last
redirect epoch stops when the budget is reached; the proxy reads clean images (``select_on``) and the
starting model is not a candidate (``keep_start``); θ_o2 starts from a fresh default initialisation
(``extra_init``). The last three have an option reproducing the authors' code; the comparisons are on the
method page of the documentation. **[beyond]** ``expand_ratio`` other than 1 and ``soft_mask``. On a ViT,
θ_o2 is by default extra tokens (``partition="auto"``), the authors' token axis.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from rem.data.loader import train_batches
from rem.data.tasks import Task
from rem.errors import ConfigError
from rem.methods.base import Context, Method, MethodConfig, register, setting
from rem.methods.common import (
    BestState,
    estimate_bn_stats,
    forget_batches,
    frozen_copy,
    npo_loss,
    optimizer_for,
    per_sample_ce,
    proxy,
)
from rem.methods.forget import aug_acc, npo_objective, remove_phase
from rem.metrics import accuracy, evaluate
from rem.models import CapacityNet, expand, shrink
from rem.models.capacity import MaskSpec, mask_keys
from rem.runtime import autocast


@dataclass(frozen=True)
class REMConfig(MethodConfig):
    """REM's settings with the paper's defaults (SPEC §4)."""

    beta: float = setting(1.0, "inverse temperature β of the NPO terms (steps 2 and 3)")
    p: float = setting(0.2, "keep probability of an extra unit in a sample's mask")
    expand_ratio: float = setting(
        1.0, "extra capacity r = |θ_o2| / |θ_o1| in (0, 8]; the paper's is 1 **[beyond]** any other r"
    )
    soft_mask: bool = setting(False, "**[beyond]** per-sample mask values uniform in [0, 1] instead of Bernoulli(p)")
    remove_term: bool = setting(True, "the removal term of step 3 (False: the `rem-no-remove` ablation)")
    ideal: bool = setting(False, "the oracle: all of D_c shares the mask and is in the removal term")
    track: bool = setting(
        True,
        "per round, for analysis only: healed / utility / Acc(D_f) of θ_o1, Acc(D_f) masked (does not change the "
        "result: rem bench tracks only the cells of the redirection curve)",
        neutral=True,
    )
    forget_bn_frozen: bool = setting(
        False, "batch norm in inference mode in step 2 (default: training mode, the authors'); better for backdoors"
    )
    partition: str = setting(
        "auto",
        "what θ_o2 adds: 'units' = channels / heads / MLP units of every partitioned layer; 'tokens' = "
        "round(r × tokens) extra tokens (ViT only; the authors' token axis, as we read it); 'auto' = "
        "'tokens' on a ViT (unless extra_init='pretrained'), 'units' on any other model",
        keyed_when_set=True,
        absent="units",  # cells stored before the setting existed ran with units
    )

    # -- the authors' code, emulated (their behaviour where ours is a [choice]) --
    extra_init: str = setting(
        "default",
        "θ_o2 at the start: 'default' = fresh default initialisation, BN "
        "statistics (0, 1); 'pretrained' = as the authors' reserved half arrives "
        "(default init shrunk by the pretraining's weight decay, BN statistics that "
        "tracked it), emulated from the pretraining recipe",
    )
    select_on: str = setting("clean", "images the proxy's accuracies use: 'clean' or 'augmented' (authors')")
    keep_start: bool = setting(False, "the starting model is a candidate of the selection (authors')")

    def validate(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"REM: beta must be positive, got {self.beta}")
        if not 0 < self.p <= 1:
            raise ConfigError(f"REM: p must be in (0, 1], got {self.p}")
        if not 0 < self.expand_ratio <= 8:
            raise ConfigError(f"REM: expand_ratio must be in (0, 8], got {self.expand_ratio}")
        if self.extra_init not in ("default", "pretrained"):
            raise ConfigError(f"REM: extra_init must be 'default' or 'pretrained', got {self.extra_init!r}")
        if self.select_on not in ("clean", "augmented"):
            raise ConfigError(f"REM: select_on must be 'clean' or 'augmented', got {self.select_on!r}")
        if self.partition not in ("auto", "units", "tokens"):
            raise ConfigError(f"REM: partition must be 'auto', 'units' or 'tokens', got {self.partition!r}")
        if self.partition == "tokens" and self.extra_init != "default":
            raise ConfigError("REM: partition='tokens' has no reserved half to emulate; use extra_init='default'")

    def for_arch(self, arch: str) -> REMConfig:
        """``partition='auto'`` resolved: the token axis on a ViT (the authors' split, and the better one
        measured in docs/results/vit.md), units on any other model; on a ViT
        with ``extra_init='pretrained'`` units too (only units have a reserved half to emulate)."""
        if self.partition != "auto":
            return self
        tokens = arch == "vit" and self.extra_init == "default"
        return dataclasses.replace(self, partition="tokens" if tokens else "units")


@register
class REM(Method):
    """REM (SPEC §4): expand, remove (NPO through θ_o1), redirect (shared mask into θ_o2), drop θ_o2."""

    name = "rem"
    order = 1
    config_cls = REMConfig
    summary = "Redirection for Erasing Memory: push D_f out of θ_o1, let corruption settle in extra units, cut them"
    uses = "D_f, D_tr"

    @classmethod
    def label(cls, config: dict) -> str:
        """The name, with a non-default extra capacity or a soft mask, e.g. ``rem (r=0.25)``: cells of
        another expansion ratio are another row of the report's tables and another panel."""
        tags = cls._tags(config)
        return f"{cls.name} ({', '.join(tags)})" if tags else cls.name

    @classmethod
    def _tags(cls, config: dict) -> list[str]:
        tags = []
        if config.get("expand_ratio", 1.0) != 1.0:
            tags.append(f"r={config['expand_ratio']:g}")
        if config.get("soft_mask"):
            tags.append("soft mask")
        if config.get("partition", "units") not in ("units", "auto"):
            tags.append(f"{config['partition']} axis")
        return tags

    def _grow(self, rnd, model, task, forget_idx, shared, removal, ctx) -> dict:
        """Called at the start of every round, before step 2: a variant may add samples to the shared
        mask (``shared``, bool over D_tr) and to step 3's removal term (``removal``, 0/1 floats), in place,
        and return what goes into the round's record. REM adds nothing (``rem-discover`` does)."""
        return {}

    def _reset(self, model, task, ctx) -> dict:
        """Called once after step 1 (θ_ref already frozen): a variant may make θ_o1 forget, whatever D_f
        is, in place, and return what goes into the history. REM does nothing (:mod:`rem.methods.rem_reset`)."""
        return {}

    def _reset_before_reference(self) -> bool:
        """Whether :meth:`_reset` runs before θ_ref is frozen (θ_ref is then the reset model). REM: no reset."""
        return False

    def _grow_before_reset(self) -> bool:
        """Whether round 0's :meth:`_grow` runs before :meth:`_reset`, on the expanded starting model (a
        discovery score reads what the starting model memorised, which a reset erases). REM: no growth."""
        return False

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: REMConfig = self.config
        dev = ctx.device
        # -- step 1: expand θ_o1 by θ_o2, freeze the reference ------------------------------------------
        model = expand_step(model, task, cfg, ctx)
        shared = task.membership(task.corrupt_idx if cfg.ideal else forget_idx).to(dev)  # who shares the mask
        removal = shared.float()  # who is in step 3's removal term (D_f; all of D_c for the oracle)
        # round 0's growth, where a variant ranks D_r on the starting model before its reset
        early = self._grow(0, model, task, forget_idx, shared, removal, ctx) if self._grow_before_reset() else None
        # a [beyond] variant's D_f-independent forgetting (REM: none), before or after θ_ref is frozen
        reset_first = self._reset_before_reference()
        reset = self._reset(model, task, ctx) if reset_first else {}
        ref_ce, keys = reference(model, shared, dev)
        if not reset_first:
            reset = self._reset(model, task, ctx)
        if reset:
            history.append({"phase": "reset", **reset})

        retain_idx = task.retain_idx(forget_idx)
        optimizer = optimizer_for(model, cfg)
        forget_set_batches = forget_batches(task, forget_idx, cfg, dev, seed_offset=1)
        all_batches = train_batches(task, None, device=dev, batch_size=cfg.batch_size, seed=cfg.seed)
        select = _Selection(task, forget_idx, retain_idx, cfg, dev)
        best = BestState()
        if cfg.keep_start:  # the starting model (θ_o2 dropped) is the bar to beat
            best.offer(select.score(model)[0], model, -1)
        step, rnd = 0, 0
        while rnd == 0 or step < cfg.steps:
            if rnd == 0 and early is not None:
                grown = early
            else:
                grown = self._grow(rnd, model, task, forget_idx, shared, removal, ctx)
            # -- step 2: remove D_f from θ_o1 with NPO (not counted in the budget) ------------------------
            remove_epochs, remove_steps, remove_acc = remove_phase(
                model,
                ref_ce,
                forget_set_batches,
                optimizer,
                cfg.max_epochs,
                cfg.gamma,
                npo_objective(cfg.beta),
                cfg.forget_bn_frozen,
            )
            # -- step 3: one epoch of redirection over all of D_tr ---------------------------------------
            step = redirect_epoch(model, all_batches, ref_ce, keys, removal, optimizer, cfg, ctx, step)
            # -- step 4: score the round by the proxy, keep the best --------------------------------------
            score, acc_r, acc_f = select.score(model)
            acc_mask = accuracy(model, task, forget_idx, task.y_train.cpu(), mode="mask", device=dev, keys_fn=keys)
            history.append(
                {
                    "round": rnd,
                    "steps": step,
                    "remove_epochs": remove_epochs,
                    "remove_steps": remove_steps,
                    "remove_acc": remove_acc,
                    "proxy": score,
                    "acc_drop_r": acc_r,
                    "acc_drop_f": acc_f,
                    "acc_mask_f": acc_mask,
                    **(_track(model, task, forget_idx, dev, acc_mask) if cfg.track else {}),
                    **grown,
                }
            )
            best.offer(score, model, rnd)
            rnd += 1
            if cfg.steps == 0:
                break
        # -- step 5: drop θ_o2, return θ_o1 of the best round -------------------------------------------
        best.restore(model)
        history.append({"best_round": best.round, "best_proxy": best.score})
        return shrink(model)


@register
class REMIdeal(REM):
    """REM (IDEAL), the oracle of docs/spec.md §4: all of D_c shares the mask and is in step 3's removal term."""

    name = "rem-ideal"
    order = 2
    family = "oracle"  # reads D_c: not a method a user can run
    summary = "REM oracle: the whole corrupted set D_c shares the mask and is pushed out of θ_o1 (needs D_c)"
    uses = "D_f, D_c, D_tr"

    def __init__(self, config=None, **overrides):
        super().__init__(config, **{"ideal": True, **overrides})


@register
class REMNoRemove(REM):
    """Ablation: REM without the removal term of step 3 (step 2 still runs every round)."""

    name = "rem-no-remove"
    order = 3
    family = "ablation"
    summary = "REM ablation: redirect without the removal term in step 3"

    def __init__(self, config=None, **overrides):
        super().__init__(config, **{"remove_term": False, **overrides})


# -- the steps' pieces ------------------------------------------------------------------------------


def redirect_epoch(model, batches, ref_ce, keys, removal, optimizer, cfg: REMConfig, ctx: Context, step: int) -> int:
    """Step 3: one epoch of the redirect loss over ``batches`` (all of D_tr), stopping when ``cfg.steps``
    steps are done in all; ``removal`` (0/1 over D_tr) marks the removal term's samples. Returns the step count.
    """
    model.train()
    for x, y, idx in batches:
        if step >= cfg.steps:
            break
        in_removal = removal[idx]
        with autocast(ctx.device):
            ce_ref = ref_ce(x, y, idx)
            ce_mask = per_sample_ce(model(x, mode="mask", keys=keys(idx)), y)
            loss = (2.0 / cfg.beta) * torch.nn.functional.logsigmoid(cfg.beta * (ce_mask - ce_ref))
            if cfg.remove_term:  # whole batch in training mode, loss zeroed outside D_f
                with torch.set_grad_enabled(bool(in_removal.any())):
                    ce_drop = per_sample_ce(model(x, mode="drop"), y)
                loss = loss + in_removal * npo_loss(ce_drop, ce_ref, cfg.beta)
            loss = loss.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        ctx.step(step, cfg.steps, loss.detach())
    return step


def expand_tokens(model: CapacityNet, ratio: float, seed: int = 0) -> CapacityNet:
    """Step 1 on the token axis: ``round(ratio × tokens)`` (at least 1) extra tokens as θ_o2 (ViT only)."""
    if getattr(model, "arch", "") != "vit":
        raise ConfigError(f"REM: partition='tokens' needs a ViT, not a {getattr(model, 'arch', '') or 'generic'} model")
    if model.has_extra:
        raise ConfigError("REM: partition='tokens' needs a model without extra units (not an ETD model)")
    return model.with_extra(model.extra, seed=seed, registers=max(1, round(ratio * model.n_tokens)))


def expand_step(model: CapacityNet, task: Task, cfg: REMConfig, ctx: Context) -> CapacityNet:
    """Step 1: θ_o1 expanded by θ_o2 (``cfg.expand_ratio``; an ETD model keeps its own), REM's masks
    (``cfg.p``, ``cfg.soft_mask``), θ_o2 initialised as ``cfg.extra_init`` says, channels-last on the device.

    Sets ``model.mask_spec`` of the ``model`` it is given (a method's own copy)."""
    dev = ctx.device
    cfg = cfg.for_arch(getattr(model, "arch", ""))
    model.mask_spec = MaskSpec(p=cfg.p, seed=model.mask_spec.seed, soft=cfg.soft_mask)
    was_expanded = model.has_extra
    if cfg.partition == "tokens":
        model = expand_tokens(model, cfg.expand_ratio, seed=cfg.seed).to(dev)
    else:
        model = expand(model, cfg.expand_ratio, seed=cfg.seed).to(dev)  # ETD models keep their own θ_o2
    if cfg.extra_init == "pretrained" and not was_expanded and ctx.pretrain_recipe is not None:
        _as_reserved(model, ctx.pretrain_recipe, task, dev, cfg.seed)
    return model.to(memory_format=torch.channels_last)


def reference(model: CapacityNet, shared: torch.Tensor, dev):
    """Freeze a copy of the expanded ``model`` as θ_ref (step 1). Returns ``(ref_ce, keys)``: the
    reference's per-sample CE in ``mask`` mode, and the batch's mask keys, the samples marked in
    ``shared`` (bool over D_tr, read at every call: it may grow) through the one shared mask."""
    ref = frozen_copy(model)

    def keys(idx: torch.Tensor) -> torch.Tensor:
        return mask_keys(idx, shared)

    @torch.no_grad()
    def ref_ce(x, y, idx):
        with autocast(dev):
            return per_sample_ce(ref(x, mode="mask", keys=keys(idx)), y)

    return ref_ce, keys


class _Selection:
    """Step 4's proxy (Acc_drop(D_r), Acc_drop(D_f) on training labels): on clean images, or augmented ones
    (``select_on="augmented"``, the authors'), whose batches are drawn once."""

    def __init__(self, task, forget_idx, retain_idx, cfg: REMConfig, dev) -> None:
        self.task, self.forget_idx, self.retain_idx, self.gamma, self.dev = task, forget_idx, retain_idx, cfg.gamma, dev
        self.augmented = (
            [train_batches(task, i, device=dev, batch_size=1000, seed=cfg.seed + 2) for i in (retain_idx, forget_idx)]
            if cfg.select_on == "augmented"
            else None
        )

    def score(self, model) -> tuple[float, float, float]:
        """(proxy, Acc_drop(D_r), Acc_drop(D_f)), shares."""
        if self.augmented is None:
            return proxy(model, self.task, self.forget_idx, self.retain_idx, self.gamma, self.dev)
        acc_r, acc_f = (aug_acc(model, b) for b in self.augmented)
        return acc_r * (1 - max(acc_f, self.gamma)), acc_r, acc_f


def _track(model, task, forget_idx, dev, acc_mask_f: float) -> dict:
    """Analysis-only figures of a round (read test data and true labels; never used for selection), shares.

    ``acc_mask_f`` is the masked model's accuracy on D_f, already measured for the round's record.
    """
    if getattr(task, "corrupt_idx", None) is None:  # no ground truth (a user's own data)
        return {}
    m = evaluate(model, task, forget_idx, device=dev)
    return {
        "track_healed": m["healed"],
        "track_utility": m["utility"],
        "track_acc_drop_f": m["forget_acc"],
        "track_acc_mask_f": acc_mask_f,
    }


# -- the authors' code, emulated ------------------------------------------------------------------


@torch.no_grad()
def _as_reserved(model: CapacityNet, recipe, task: Task, device, seed: int) -> None:
    """θ_o2 as the authors' reserved half arrives after pretraining (``extra_init="pretrained"``).

    In their capacity-0.5 model the reserved units get no loss gradient (their outputs are zeroed, and so
    are the inputs of their outgoing weights), so pretraining only shrinks them by weight decay: with SGD
    momentum μ, a factor exp(−wd/(1−μ)·Σ_t lr_t). Batch norm tracked their pre-gate statistics: a few
    training-mode passes in ``drop`` mode (computed at full width: a zero mask) recompute those, and the
    kept channels' statistics are put back.
    """
    device = torch.device(device)
    lr_sum = sum(recipe.lr_at(t) for t in range(recipe.steps))
    mom = recipe.momentum if recipe.optimizer == "sgd" else 0.0
    shrink_by = math.exp(-recipe.weight_decay / (1 - mom) * lr_sum)
    extra = model.extra_param_masks()
    for name, prm in model.named_parameters():
        prm[extra[name]] *= shrink_by
    bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    saved = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}
    batches = train_batches(task, None, device=device, batch_size=recipe.batch_size, seed=seed + 7)
    zeros = [torch.zeros(1, e, device=device) for e in model.extra]  # drop mode, computed at full width

    def forward(x):
        with autocast(device):
            model(x, mode="mask", masks=[z.expand(len(x), -1) for z in zeros])

    estimate_bn_stats(model, batches, 10, forward)
    for n, m in bns.items():
        mean, var = saved[n]
        kept = ~extra[f"{n}.weight"]
        m.running_mean[kept], m.running_var[kept] = mean[kept], var[kept]
