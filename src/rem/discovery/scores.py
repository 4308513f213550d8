"""The registered discovery scores (:mod:`rem.discovery.base`): ``rem``, ``features``, ``loss``,
``cleanlab``, ``spectral``. Each ranks D_r = D_tr \\ D_f; higher = more likely corrupted.

**``rem``: what REM's own removal leaves unexplained** (**[beyond]**, designed for rem). Run REM's steps 1–2 on
a copy of the starting model, exactly as REM runs them (expand, freeze the reference, NPO on D_f through
θ_o1 until Acc(D_f) ≤ γ; the same settings and seeds, so it is the θ_o1 that REM's first round
produces), then score every sample of D_r by

    score = z(log CE_after(x, y as trained))  +  feature_weight · z(contrast(x))

- ``CE_after``: the loss of θ_o1 *after* the removal on the label the sample was trained with. It is
  the starting loss plus the rise the removal caused. The rise carries the shared mechanism: samples
  that REM's removal forgets together with D_f (the trigger → target shortcut, the class swap) lose
  their fit with it; the starting loss carries atypicality (the small-loss trick: memorised wrong labels
  fit less well than clean ones). Their sum asks which samples θ_o1 no longer fits once the discovered
  corruption is pushed out, which are exactly those that REM's redirect step would re-teach through
  their own random masks. Why this and not the rise alone or the starting loss alone: measured in
  ``docs/results/measurements.md`` (``benchmarks/discovery.py``).
- ``contrast``: label-conditional feature similarity of the starting model's penultimate features:
  cos(f, mean of D_f's samples *with the same label as trained*) − cos(f, mean of D_r's samples of that
  label). A sample labelled c that looks like the found corruption labelled c, rather than like the
  clean class c, scores high; samples whose label never occurs in D_f get the lowest value. Plain
  similarity to D_f's overall mean fails on the class swap and random labels,
  where D_f's samples are spread over classes. The contrast alone is strong on the backdoor and the
  swap and weak on random labels, where the loss term carries it.
- ``z``: (v − median) / IQR over D_r, so the two terms add on one unit-free scale and neither dominates
  by its units. ``feature_weight=0`` leaves REM's removal alone.

Cost: one inference pass of the starting model, REM's step 2 (a few epochs over D_f), one inference
pass of the result.

**``features``**: the contrast term alone (no training).

**``loss``**: the starting model's per-sample cross-entropy on the labels as trained (the small-loss
trick: clean samples are learned first and fit best). The plain baseline.

**``cleanlab``**: confident learning (Northcutt et al. 2021) through the ``cleanlab`` package, on
*out-of-sample* predicted probabilities. **[choice]** Out-of-sample probabilities would need K
retrainings of the network (K-fold), too costly on a CPU; here they come from K-fold multinomial
logistic regression on the starting model's penultimate features (standardised), trained on D_r only
(D_f's labels are known to be wrong). Score = 1 − ``cleanlab.rank.get_label_quality_scores``; the info
records how many samples ``cleanlab.filter.find_label_issues`` flags.

**``spectral``**: spectral signatures (Tran et al. 2018) for backdoors: the suspected target class is
the label most over-represented in D_f (share in D_f / share in D_tr); the penultimate features of every
training sample with that label (D_f included, it sharpens the direction) are centred, and a D_r sample
of that class scores its squared projection on their top singular direction. Samples of other classes
score 0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from rem.discovery.base import Score, ScoreConfig, register_score
from rem.discovery.passes import forward_pass, robust_z
from rem.errors import ConfigError, DataError
from rem.methods.base import Context, setting
from rem.models import CapacityNet


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def feature_contrast(feats: torch.Tensor, y: torch.Tensor, forget_idx: torch.Tensor, retain_idx: torch.Tensor):
    """Label-conditional contrast of the ``rem`` / ``features`` scores, robust-z-scaled over D_r.

    For a sample of D_r labelled c (as trained): cos(f, mean unit feature of D_f labelled c) − cos(f, mean
    unit feature of D_r labelled c). Samples whose label has no D_f sample get the lowest contrast seen.
    Returns (z-scaled contrast of ``retain_idx``, share of D_r that was comparable).
    """
    fn = _unit(feats.double())
    yf, yr = y[forget_idx], y[retain_idx]
    raw = torch.full((len(retain_idx),), float("nan"), dtype=torch.float64)
    for c in yf.unique().tolist():
        rows = (yr == c).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        proto_f = _unit(fn[forget_idx[yf == c]].mean(0))
        proto_r = _unit(fn[retain_idx[rows]].mean(0))
        fr = fn[retain_idx[rows]]
        raw[rows] = fr @ proto_f - fr @ proto_r
    comparable = ~torch.isnan(raw)
    if not bool(comparable.any()):
        return torch.zeros(len(retain_idx), dtype=torch.float64), 0.0
    z = robust_z(torch.nan_to_num(raw, nan=0.0), comparable)
    z[~comparable] = float(z[comparable].min())
    return z, float(comparable.double().mean())


# --- rem ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class REMScoreConfig(ScoreConfig):
    """Settings of the ``rem`` score: REM's steps 1–2 (defaults = REM's, SPEC §4) and the feature term."""

    feature_weight: float = setting(1.0, "weight of the label-conditional feature term (0: REM's removal alone)")
    beta: float = setting(1.0, "REM: inverse temperature β of the NPO loss of step 2")
    p: float = setting(0.2, "REM: keep probability of an extra unit in a sample's mask (the reference's masks)")
    expand_ratio: float = setting(1.0, "REM: extra capacity r of step 1 (the reference's θ_o2)")
    soft_mask: bool = setting(False, "REM: soft masks (uniform in [0, 1]) instead of Bernoulli(p)")
    extra_init: str = setting("default", "REM: θ_o2 at the start, 'default' or 'pretrained' (see rem's settings)")
    lr: float = setting(0.005, "REM: learning rate of step 2")
    batch_size: int = setting(512, "REM: batch size of step 2")
    optimizer: str = setting("sgd", "REM: optimiser of step 2, sgd or adam")
    momentum: float = setting(0.9, "REM: SGD momentum")
    weight_decay: float = setting(5e-4, "REM: weight decay")
    gamma: float = setting(0.2, "REM: step 2 stops once the accuracy on D_f is <= gamma (a share)")
    max_epochs: int = setting(100, "REM: cap of step 2's epochs over D_f")
    forget_bn_frozen: bool = setting(False, "REM: batch norm in inference mode in step 2 (not the authors')")

    def validate(self) -> None:
        if not self.feature_weight >= 0:
            raise ConfigError(f"rem score: feature_weight must be >= 0, got {self.feature_weight}")
        self.rem_config()  # REM's own checks of the shared settings

    def rem_config(self):
        """The :class:`~rem.methods.rem.REMConfig` of REM's steps 1–2 with these settings."""
        from rem.methods.rem import REMConfig

        return REMConfig(**{k: getattr(self, k) for k in REM_SHARED})


#: Settings of the ``rem`` score that are REM's own (``rem-discover`` passes its values on).
REM_SHARED = (
    "beta",
    "p",
    "expand_ratio",
    "soft_mask",
    "extra_init",
    "lr",
    "batch_size",
    "optimizer",
    "momentum",
    "weight_decay",
    "gamma",
    "max_epochs",
    "seed",
    "forget_bn_frozen",
)


def removed_by_rem(model: CapacityNet, task, forget_idx: torch.Tensor, rem_cfg, ctx: Context):
    """θ_o1 after REM's steps 1–2 on a copy of ``model``: (the shrunk model, step 2's record)."""
    from rem.methods.common import forget_batches, optimizer_for
    from rem.methods.forget import npo_objective, remove_phase
    from rem.methods.rem import expand_step, reference
    from rem.models import shrink

    dev = ctx.device
    work = expand_step(copy.deepcopy(model), task, rem_cfg, ctx)
    ref_ce, _ = reference(work, task.membership(forget_idx).to(dev), dev)
    opt = optimizer_for(work, rem_cfg)
    batches = forget_batches(task, forget_idx, rem_cfg, dev, seed_offset=1)
    epochs, steps, acc = remove_phase(
        work,
        ref_ce,
        batches,
        opt,
        rem_cfg.max_epochs,
        rem_cfg.gamma,
        npo_objective(rem_cfg.beta),
        rem_cfg.forget_bn_frozen,
    )
    return shrink(work), {"remove_epochs": epochs, "remove_steps": steps, "remove_acc": acc}


def _capacity(model, what: str) -> CapacityNet:
    if not isinstance(model, CapacityNet):
        raise ConfigError(
            f"the {what} score needs one of rem's models or a wrapped one (rem.discover wraps any nn.Module)"
        )
    return model


@register_score
class REMScore(Score):
    """What REM's own removal of D_f leaves unexplained, plus a label-conditional feature contrast."""

    name = "rem"
    order = 1
    config_cls = REMScoreConfig
    summary = "loss after REM's NPO removal of D_f (steps 1-2) + label-conditional feature similarity to D_f"

    def _score(self, model, task, forget_idx, retain_idx, ctx):
        cfg: REMScoreConfig = self.config
        model = _capacity(model, "rem")
        dev = ctx.device
        info: dict = {}
        z_feat = torch.zeros(len(retain_idx), dtype=torch.float64)
        if cfg.feature_weight > 0:
            _, feats = forward_pass(model, task, device=dev, batch_size=cfg.infer_batch_size, features=True)
            z_feat, info["feature_comparable"] = feature_contrast(feats, task.y_train.cpu(), forget_idx, retain_idx)
        after, info_rm = removed_by_rem(model, task, forget_idx, cfg.rem_config(), ctx)
        info.update(info_rm)
        ce_after, _ = forward_pass(after, task, device=dev, batch_size=cfg.infer_batch_size)
        z_rem = robust_z(torch.log(ce_after[retain_idx] + 1e-6))
        return z_rem + cfg.feature_weight * z_feat, info


# --- features ------------------------------------------------------------------------------------


@register_score
class FeatureScore(Score):
    """The ``rem`` score's feature term alone: label-conditional similarity to D_f (no training)."""

    name = "features"
    order = 2
    summary = "label-conditional contrast: cos to D_f's mean feature of the same label minus cos to D_r's"

    def _score(self, model, task, forget_idx, retain_idx, ctx):
        _, feats = forward_pass(model, task, device=ctx.device, batch_size=self.config.infer_batch_size, features=True)
        z, share = feature_contrast(feats, task.y_train.cpu(), forget_idx, retain_idx)
        return z, {"feature_comparable": share}


# --- loss ----------------------------------------------------------------------------------------


@register_score
class LossScore(Score):
    """The small-loss trick: the starting model's per-sample loss on the labels as trained."""

    name = "loss"
    order = 3
    summary = "the starting model's per-sample cross-entropy on the labels as trained (small-loss baseline)"

    def _score(self, model, task, forget_idx, retain_idx, ctx):
        ce, _ = forward_pass(model, task, device=ctx.device, batch_size=self.config.infer_batch_size)
        return ce[retain_idx], {}


# --- cleanlab ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanlabConfig(ScoreConfig):
    """Settings of the ``cleanlab`` score (out-of-sample probabilities from K-fold logistic regression)."""

    folds: int = setting(5, "K of the K-fold cross-fitting of the logistic regression (>= 2)")
    c: float = setting(1.0, "inverse L2 regularisation strength C of the logistic regression")
    max_iter: int = setting(500, "iterations of the logistic regression's solver (lbfgs)")
    method: str = setting(
        "self_confidence",
        "cleanlab's label-quality score: self_confidence, normalized_margin or confidence_weighted_entropy",
    )

    def validate(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"cleanlab score: folds must be >= 2, got {self.folds}")
        if not self.c > 0 or self.max_iter < 1:
            raise ConfigError("cleanlab score: c must be positive and max_iter >= 1")
        if self.method not in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
            raise ConfigError(f"cleanlab score: unknown method {self.method!r}")


def out_of_sample_probs(x: np.ndarray, y: np.ndarray, folds: int, c: float, max_iter: int, seed: int) -> np.ndarray:
    """Predicted probabilities of every row of ``x`` by a logistic regression that never saw it (K-fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(y)
    k = min(folds, int(counts[counts > 0].min()))
    if k < 2:
        raise DataError("cleanlab score: every label in D_r needs at least two samples for the K-fold fit")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return cross_val_predict(clf, x, y, cv=cv, method="predict_proba")


@register_score
class CleanlabScore(Score):
    """Confident learning (cleanlab) on out-of-sample probabilities of a K-fold logistic regression."""

    name = "cleanlab"
    order = 4
    config_cls = CleanlabConfig
    summary = "cleanlab label-quality on out-of-sample probabilities (K-fold logistic regression on features)"

    def _score(self, model, task, forget_idx, retain_idx, ctx):
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        cfg: CleanlabConfig = self.config
        _, feats = forward_pass(model, task, device=ctx.device, batch_size=cfg.infer_batch_size, features=True)
        x = feats[retain_idx].numpy()
        labels = task.y_train.cpu()[retain_idx].numpy()
        classes, y = np.unique(labels, return_inverse=True)  # cleanlab wants labels 0..m-1, all present
        if len(classes) < 2:
            raise DataError("cleanlab score: D_r holds a single label; there is nothing to contrast it with")
        probs = out_of_sample_probs(x, y, cfg.folds, cfg.c, cfg.max_iter, cfg.seed)
        quality = get_label_quality_scores(y, probs, method=cfg.method)
        flagged = find_label_issues(y, probs)
        return torch.from_numpy(1.0 - np.asarray(quality, dtype=np.float64)), {"flagged": int(flagged.sum())}


# --- spectral ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectralConfig(ScoreConfig):
    """Settings of the ``spectral`` score."""

    target: int | None = setting(None, "the suspected target class (None: the label most over-represented in D_f)")


def suspected_target(y: torch.Tensor, forget_idx: torch.Tensor) -> int:
    """The label most over-represented in D_f: largest (share in D_f) / (share in D_tr); ties: lowest."""
    k = int(y.max()) + 1
    in_f = torch.bincount(y[forget_idx], minlength=k).double() / len(forget_idx)
    in_tr = torch.bincount(y, minlength=k).double() / len(y)
    ratio = torch.where(in_tr > 0, in_f / in_tr.clamp_min(1e-12), torch.zeros_like(in_f))
    return int(torch.argmax(ratio))


@register_score
class SpectralScore(Score):
    """Spectral signatures (Tran et al. 2018) in the suspected target class."""

    name = "spectral"
    order = 5
    config_cls = SpectralConfig
    summary = "spectral signatures: squared projection on the top singular direction of the target class"

    def _score(self, model, task, forget_idx, retain_idx, ctx):
        cfg: SpectralConfig = self.config
        y = task.y_train.cpu()
        target = suspected_target(y, forget_idx) if cfg.target is None else int(cfg.target)
        if not 0 <= target <= int(y.max()):
            raise ConfigError(f"spectral score: target class {target} is not a label of the data")
        _, feats = forward_pass(model, task, device=ctx.device, batch_size=cfg.infer_batch_size, features=True)
        members = (y == target).nonzero().squeeze(1)
        centred = feats[members] - feats[members].mean(0)
        top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        proj = torch.zeros(len(y), dtype=torch.float64)
        proj[members] = (centred @ top) ** 2
        return proj[retain_idx], {"target": target, "n_target": len(members)}
