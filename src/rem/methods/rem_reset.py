"""**[beyond]** REM variants that make θ_o1 forget what nobody found: ``rem-reinit`` and ``rem-sp``.

REM only ever pushes the *discovered* set D_f out of θ_o1 (step 2 and the removal term of step 3); the
undiscovered corrupted samples in D_r stay memorised in θ_o1 and step 3 trains them further with their
wrong labels. Exact unlearning-k (``eu-k``) heals them without being told, by re-initialising the last k
layers: a short retraining re-learns what generalises, not each memorised sample. These variants give
REM such a forgetting step that does not depend on D_f, once, right after step 1; steps 2–5 are REM's own:

- ``rem-reinit``: θ_o1's part of the last ``reinit_k`` layers (the layers of ``eu-k``) re-initialised
  (default initialisation; θ_o2 untouched);
- ``rem-sp``: every layer of θ_o1 shrunk towards a fresh initialisation,
  θ_o1 ← λ·θ_o1 + (1 − λ)·θ_fresh (shrink and perturb, Ash & Adams 2020, with ``shrink`` λ).

In both, batch-norm statistics of θ_o1 are then re-estimated on ``calib_batches`` batches of D_tr
(training-mode forward passes in ``drop`` mode, no gradient): the inference-mode accuracies of step 2's
stopping test would otherwise read a network whose statistics no longer match its weights. ``rem``
itself stays the paper's algorithm.

``reference`` says which model θ_ref is. ``"start"``: frozen before the reset, so the NPO terms compare
against the starting model. But step 3's retain term, (2/β)·log σ(β·(CE − CE_ref)), has the gradient
2·σ(−β·(CE − CE_ref)) in CE: where the reset model is far worse than the starting model it is nearly zero,
and the re-initialised layers re-learn slowly (a 100-step ``rem-reinit`` ended at 51–65 % test accuracy,
still rising). ``"reset"``: frozen after the reset, so the retain term starts at its full gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rem.data.loader import train_batches
from rem.errors import ConfigError
from rem.methods.base import register, setting
from rem.methods.baselines.layers import last_layers, layer_groups, under
from rem.methods.common import derived_seed, estimate_bn_stats, fresh_model
from rem.methods.rem import REM, REMConfig
from rem.runtime import autocast

REFERENCE_HELP = (
    "θ_ref of the NPO terms: 'start' = the expanded starting model (frozen before the reset); 'reset' = the "
    "model after the reset (frozen after it), so that step 3's retain term is not saturated"
)


@dataclass(frozen=True)
class REMResetConfig(REMConfig):
    """REM's settings and the reset of θ_o1 after step 1."""

    reinit_k: int = setting(4, "rem-reinit: θ_o1's last k layers re-initialised after step 1 (eu-k's layers)")
    shrink: float = setting(0.5, "rem-sp: θ_o1 ← shrink·θ_o1 + (1 − shrink)·θ_fresh, in [0, 1)")
    calib_batches: int = setting(10, "batches of D_tr re-estimating θ_o1's batch-norm statistics after the reset")
    reference: str = setting(
        "start",
        REFERENCE_HELP,
        keyed_when_set=True,  # cells stored before the setting ran at "start"
        absent="start",
    )

    def validate(self) -> None:
        super().validate()
        if self.reinit_k < 1:
            raise ConfigError(f"REM reset: reinit_k must be >= 1, got {self.reinit_k}")
        if not 0.0 <= self.shrink < 1.0:
            raise ConfigError(f"REM reset: shrink must be in [0, 1), got {self.shrink}")
        if self.calib_batches < 0:
            raise ConfigError(f"REM reset: calib_batches must be >= 0, got {self.calib_batches}")
        if self.reference not in ("start", "reset"):
            raise ConfigError(f"REM reset: reference must be 'start' or 'reset', got {self.reference!r}")


def _kept_masks(model) -> dict[str, torch.Tensor]:
    """Bool per state entry (parameters and batch-norm statistics): True on θ_o1's entries."""
    extra = model.extra_param_masks()
    kept = {n: ~m for n, m in extra.items()}
    for n, _ in model.named_buffers():
        owner, _, leaf = n.rpartition(".")
        if leaf in ("running_mean", "running_var") and f"{owner}.weight" in extra:
            kept[n] = ~extra[f"{owner}.weight"]
    return kept


@torch.no_grad()
def blend_theta_o1(model, names: list[str], keep: float, seed: int) -> int:
    """θ_o1's entries under ``names`` ← keep·θ_o1 + (1 − keep)·θ_fresh, in place (keep = 0: re-initialise;
    batch-norm statistics are taken from the fresh model then). Returns how many entries changed."""
    fresh = fresh_model(model, seed).state_dict()
    kept = _kept_masks(model)
    changed = 0
    for n, t in model.state_dict().items():
        if n not in kept or not under(n, names):
            continue
        m = kept[n].to(t.device)
        new = fresh[n].to(t.device, t.dtype)
        stats = n.endswith(("running_mean", "running_var"))
        t[m] = new[m] if (keep == 0.0 or stats) else keep * t[m] + (1.0 - keep) * new[m]
        changed += int(m.sum())
    return changed


def recalibrate_bn(model, task, device, batch_size: int, n_batches: int, seed: int) -> None:
    """Batch-norm running statistics re-estimated from ``n_batches`` training-mode forward passes of D_tr
    in ``drop`` mode; no parameter changes."""

    def forward(x):
        with autocast(device):
            model(x, mode="drop")

    batches = train_batches(task, None, device=device, batch_size=batch_size, seed=seed)
    estimate_bn_stats(model, batches, n_batches, forward)


class _REMReset(REM):
    config_cls = REMResetConfig
    uses = "D_f, D_tr"
    init_name: str | None = None  # whose fresh initialisation the reset draws (None: the method's own name)

    def _layers(self, model) -> list[str]:
        raise NotImplementedError

    def _keep(self) -> float:
        raise NotImplementedError

    def _reset_before_reference(self) -> bool:
        return self.config.reference == "reset"

    def _reset(self, model, task, ctx) -> dict:
        cfg: REMResetConfig = self.config
        names = self._layers(model)
        changed = blend_theta_o1(
            model, names, self._keep(), derived_seed(cfg.seed, f"{self.init_name or self.name}-init")
        )
        recalibrate_bn(model, task, ctx.device, cfg.batch_size, cfg.calib_batches, cfg.seed + 11)
        return {"reset_layers": names, "reset_entries": changed, "shrink": self._keep()}


@dataclass(frozen=True)
class REMReinitConfig(REMResetConfig):
    """rem-reinit's: θ_ref frozen after the reset by default (measured: docs/results/screen.md)."""

    reference: str = setting("reset", REFERENCE_HELP, keyed_when_set=True, absent="start")


@register
class REMReinit(_REMReset):
    """**[beyond]** REM with θ_o1's last ``reinit_k`` layers re-initialised after step 1 (eu-k's reset)."""

    name = "rem-reinit"
    order = 3
    config_cls = REMReinitConfig
    summary = "[beyond] REM + re-initialise theta_o1's last k layers first: forgets undiscovered corruption too"

    def _layers(self, model) -> list[str]:
        return last_layers(model, self.config.reinit_k)

    def _keep(self) -> float:
        return 0.0


@register
class REMShrinkPerturb(_REMReset):
    """**[beyond]** REM with all of θ_o1 shrunk towards a fresh initialisation after step 1."""

    name = "rem-sp"
    order = 3
    summary = "[beyond] REM + shrink-and-perturb all of theta_o1 first: forgets undiscovered corruption too"

    def _layers(self, model) -> list[str]:
        return [n for g in layer_groups(model) for n in g]

    def _keep(self) -> float:
        return self.config.shrink
