"""The retain-set baselines of SPEC §5: ``none``, ``retrain``, ``finetune``, ``cf-k`` and ``eu-k``.

All of them touch D_r only (``none`` touches nothing). Since D_r still holds the undiscovered
corrupted samples with their wrong labels, these methods re-learn the corruption at partial discovery:
that is what the benchmark shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from rem.errors import ConfigError
from rem.methods.base import Method, MethodConfig, register, setting
from rem.methods.baselines.layers import last_layers, under
from rem.methods.common import (
    batches,
    cross_entropy_loss,
    derived_seed,
    fresh_model,
    optimizer_for,
    train_forward_mode,
    train_logged,
)
from rem.models import shrink
from rem.train import fit


@register
class NoUnlearning(Method):
    """The starting model itself (the reference column of every table), its reserve θ_o2 removed.

    Uses no data. On an ETD model the returned model is the deployed (``drop`` mode) kept part.
    """

    name = "none"
    order = 0
    family = "reference"
    summary = "No unlearning: the starting model as deployed"
    uses = "—"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        return shrink(model)


@register
class Retrain(Method):
    """Retraining from scratch on D_r: the same architecture, freshly initialised, trained with the
    pretraining recipe (``ctx.pretrain_recipe``: its steps, batch size, learning-rate schedule) in the
    pretraining type's forward mode (``mask`` with per-sample masks for an ``etd`` model).

    Uses D_r only; never sees a sample of D_f. The step budget ``steps`` and ``lr`` of the config are not
    used (the recipe's are); ``seed`` keys the initialisation and the batch order. Departure from the
    usual "gold standard" framing: here D_r still holds undiscovered corrupted samples, so the retrained
    model learns them again (SPEC §7, "Retrained").
    """

    name = "retrain"
    order = 6
    summary = "Retrain from scratch on D_r with the pretraining recipe"
    uses = "D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        if ctx.pretrain_recipe is None:
            raise ConfigError(
                "retrain needs the pretraining recipe: set Context.pretrain_recipe "
                "(the Recipe the starting model was trained with)"
            )
        cfg = self.config
        new = fresh_model(model, derived_seed(cfg.seed, "retrain-init"))
        retain_idx = task.retain_idx(forget_idx)
        mode = train_forward_mode(model, ctx)
        fit(
            new, task, retain_idx, ctx.pretrain_recipe, mode=mode, device=ctx.device, seed=cfg.seed, on_step=ctx.on_step
        )
        history.append(
            {"phase": "retrain", "steps": ctx.pretrain_recipe.steps, "mode": mode, "n_retain": len(retain_idx)}
        )
        return shrink(new)


def _train_ce(model, task, idx, cfg: MethodConfig, ctx, history, params=None, train_modules=None) -> None:
    """``cfg.steps`` SGD steps of cross-entropy on D_tr[idx] (labels as trained) over ``params``.

    ``train_modules`` (names): only these modules are put in train mode, every other module stays in
    eval mode, so frozen layers' batch-norm running statistics never change.
    """
    dev = ctx.device
    mode = train_forward_mode(model, ctx)
    data = batches(task, idx, cfg, dev)
    if train_modules is None:
        model.train()
    else:
        model.eval()
        for name, mod in model.named_modules():
            if name and under(name, train_modules):
                mod.train()
    opt = optimizer_for(model, cfg, params)
    train_logged(data, opt, cfg, ctx, history, cross_entropy_loss(model, mode))


@register
class Finetune(Method):
    """Fine-tuning: continue training the whole model with cross-entropy on D_r for ``steps`` steps
    (SGD lr 0.005, momentum 0.9, weight decay 5e-4, constant learning rate).

    Uses D_r. As in the corrective-unlearning benchmark, no learning-rate schedule.
    """

    name = "finetune"
    order = 7
    summary = "Fine-tune on D_r with cross-entropy"
    uses = "D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        _train_ce(model, task, task.retain_idx(forget_idx), self.config, ctx, history)
        return shrink(model)


@dataclass(frozen=True)
class LastLayersConfig(MethodConfig):
    """``k``: how many of the last layers (:func:`last_layers`) are trained."""

    k: int = setting(2, "how many of the last layers are trained")

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError(f"{type(self).__name__}: k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class LastLayers4Config(LastLayersConfig):
    k: int = setting(4, "how many of the last layers are trained")


class _LastLayers(Method):
    """Train only the last k layers on D_r; ``reinit`` re-initialises them first (eu-k) or not (cf-k)."""

    reinit = False
    uses = "D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg = self.config
        names = last_layers(model, cfg.k)
        if self.reinit:  # fresh default initialisation of the trained layers, buffers (BN statistics) too
            fresh = fresh_model(model, derived_seed(cfg.seed, f"eu-{cfg.k}-init")).state_dict()
            state = model.state_dict()
            model.load_state_dict({n: (fresh[n] if under(n, names) else t) for n, t in state.items()})
        params = []
        for n, p in model.named_parameters():
            p.requires_grad_(under(n, names))
            if p.requires_grad:
                params.append(p)
        history.append(
            {
                "phase": "setup",
                "trained_layers": names,
                "reinit": self.reinit,
                "trained_params": sum(p.numel() for p in params),
            }
        )
        _train_ce(model, task, task.retain_idx(forget_idx), cfg, ctx, history, params=params, train_modules=names)
        model.requires_grad_(True)
        return shrink(model)


@register
class CF2(_LastLayers):
    """Catastrophic forgetting-k (Goel et al. 2022), k = 2: fine-tune only the last k layers on D_r
    (CE, the shared SGD settings); all other layers, batch-norm statistics included, stay bit-identical.

    Uses D_r. Layers as in :func:`rem.methods.baselines.layers.layer_groups`.
    """

    name = "cf-2"
    order = 8
    config_cls = LastLayersConfig
    summary = "Catastrophic forgetting-k: fine-tune only the last k layers on D_r"


@register
class CF4(CF2):
    __doc__ = CF2.__doc__.replace("k = 2", "k = 4")
    name = "cf-4"
    order = 9
    config_cls = LastLayers4Config


@register
class EU2(_LastLayers):
    """Exact unlearning-k (Goel et al. 2022), k = 2: re-initialise the last k layers (default init,
    batch-norm statistics reset) and train only them on D_r; all other layers stay bit-identical.

    Uses D_r. Departure: the budget is the shared step budget, not training to convergence.
    """

    name = "eu-2"
    order = 10
    config_cls = LastLayersConfig
    summary = "Exact unlearning-k: re-initialise the last k layers and train only them on D_r"
    reinit = True


@register
class EU4(EU2):
    __doc__ = EU2.__doc__.replace("k = 2", "k = 4")
    name = "eu-4"
    order = 11
    config_cls = LastLayers4Config


__all__ = ["CF2", "CF4", "EU2", "EU4", "Finetune", "LastLayersConfig", "NoUnlearning", "Retrain"]
