"""Discovery: rank the retained samples D_r by how likely they belong with the corruption.

In practice only part of the corrupted set D_c is found: D_f. The rest, D_c \\ D_f, sits in the retain
set D_r with its wrong labels (or its trigger), and every method that trains on D_r re-learns it. A
*score* looks at the starting model, the training data **with the labels it was trained with** and D_f,
and gives every sample of D_r a number: the higher, the more it looks like the corruption. The
result is a :class:`Ranking` (most suspicious first), written as CSV or JSON by ``rem discover``,
read by ``rem-discover`` (REM that adds the top of the ranking to its shared mask).

Scores are classes in a small registry, as methods are (:mod:`rem.methods.base`): a frozen config
dataclass whose fields carry their help text (``rem discover --score NAME --set KEY=VALUE``), a name,
a one-line summary and :meth:`Score._score`. The registered ones live in :mod:`rem.discovery.scores`.

Every score sees only what a practitioner has: the model, the images and labels as trained (triggers
stamped where the task stamped them) and D_f. None reads D_c, true labels or test data; those are
only for :meth:`Ranking.evaluate` in benchmarks.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rem.data.loader import Batches
from rem.errors import ConfigError, DataError, IndexSetError
from rem.methods.base import Context, setting
from rem.runtime import autocast
from rem.settings import coerce_fields


@dataclass(frozen=True)
class ScoreConfig:
    """Settings every score shares."""

    infer_batch_size: int = setting(1000, "batch size of the inference passes over D_tr")
    seed: int = setting(0, "seed of everything random in the score (batches, folds, initialisations)")

    def __post_init__(self) -> None:
        if self.infer_batch_size < 1:
            raise ConfigError(f"{type(self).__name__}: infer_batch_size must be >= 1, got {self.infer_batch_size}")
        self.validate()

    def validate(self) -> None:
        """Score-specific checks (override)."""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- the ranking ----------------------------------------------------------------------------------


@dataclass
class Ranking:
    """D_r ordered by a score, most suspicious first (ties: lower index first).

    ``idx`` are indices into D_tr (the data's own order), ``score`` their scores (higher = more
    suspicious, in the score's own units), ``info`` what the score found out on the way (for instance
    the spectral signature's target class), ``files`` the image files of an image folder (if any).
    """

    score_name: str
    settings: dict
    idx: torch.Tensor
    score: torch.Tensor
    n_train: int
    n_forget: int
    wall_s: float = 0.0
    info: dict = dataclasses.field(default_factory=dict)
    files: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.idx)

    def top(self, k: int, threshold: float | None = None) -> torch.Tensor:
        """The (at most) ``k`` most suspicious indices, only those scoring ``>= threshold`` if one is given."""
        idx = self.idx[: max(0, int(k))]
        if threshold is not None:
            idx = idx[self.score[: len(idx)] >= threshold]
        return idx

    def rows(self) -> list[dict]:
        """One dict per ranked sample: rank (1 = most suspicious), index, score (and file)."""
        out = []
        for r, (i, s) in enumerate(zip(self.idx.tolist(), self.score.tolist()), start=1):
            row = {"rank": r, "index": i, "score": s}
            if self.files is not None:
                row["file"] = self.files[i]
            out.append(row)
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        rows = self.rows()
        fields = ["rank", "index", "score"] + (["file"] if self.files is not None else [])
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({**row, "score": repr(float(row["score"]))})
        return buf.getvalue()

    def to_dict(self) -> dict:
        return {
            "score": self.score_name,
            "settings": self.settings,
            "n_train": self.n_train,
            "n_forget": self.n_forget,
            "n_ranked": len(self),
            "wall_s": self.wall_s,
            "info": self.info,
            "ranking": self.rows(),
        }

    def write(self, path: str | Path) -> Path:
        """Write the ranking to ``path``: CSV (``.csv``: rank, index, score) or JSON (``.json``: the
        ranking with the score's name, settings and info), atomically."""
        from rem.paths import write_atomic

        p = Path(path)
        if p.suffix.lower() == ".csv":
            write_atomic(p, self.to_csv().encode())
        elif p.suffix.lower() == ".json":
            write_atomic(p, (json.dumps(self.to_dict(), indent=1, default=_jsonable) + "\n").encode())
        else:
            raise ConfigError(f"a ranking is written as .csv or .json, not {p.name!r}")
        return p

    def evaluate(self, positives) -> dict:
        """How well the ranking finds ``positives`` (e.g. the undiscovered corruption D_c \\ D_f):
        AUROC, and precision and recall among the top k = number of positives in D_r (equal at that k)."""
        return ranking_quality(self.idx, self.score, positives)


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for the bool ``labels`` (ties count one half; the
    Mann–Whitney statistic). NaN when either class is empty."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def ranking_quality(idx: torch.Tensor, score: torch.Tensor, positives) -> dict:
    """AUROC and precision / recall at k = |positives among the ranked| of a ranking (see :class:`Ranking`)."""
    idx = torch.as_tensor(idx, dtype=torch.int64)
    pos = torch.isin(idx, torch.as_tensor(positives, dtype=torch.int64).reshape(-1))
    k = int(pos.sum())
    hits = int(pos[:k].sum())
    return {
        "auroc": auroc(score.numpy(), pos.numpy()),
        "k": k,
        "precision_at_k": hits / k if k else float("nan"),
        "recall_at_k": hits / k if k else float("nan"),
    }


# --- shared pieces --------------------------------------------------------------------------------


def check_inputs(task, forget_idx) -> tuple[torch.Tensor, torch.Tensor]:
    """(D_f, D_r) after the checks every score needs: labels as trained, a non-empty D_f that leaves
    something to rank. Raises :class:`~rem.errors.DataError` / :class:`~rem.errors.IndexSetError`
    naming what is wrong."""
    y = getattr(task, "y_train", None)
    if y is None:
        raise DataError("discovery needs the labels the model was trained with (labels as trained): the data has none")
    n = int(len(y))
    raw = torch.as_tensor(forget_idx).reshape(-1)
    if raw.numel() == 0:
        raise IndexSetError("the discovered set D_f is empty: discovery needs at least one found sample")
    if raw.numel() > n:
        raise IndexSetError(
            f"the discovered set D_f has {raw.numel()} indices but the training set D_tr only {n} samples"
        )
    fi = task.check_forget_idx(raw)
    if len(fi) >= n:
        raise IndexSetError(f"the discovered set D_f covers all {n} training samples: D_r is empty, nothing to rank")
    return fi, task.retain_idx(fi)


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The classifier: the last ``nn.Linear`` registered in ``model`` (ResNet-9's ``fc``, the ViT's
    ``head``, a user's model's last layer, as :mod:`rem.models.generic` assumes too)."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear classifier: penultimate features are its input")
    return last


@torch.no_grad()
def forward_pass(
    model: nn.Module,
    task,
    *,
    device,
    batch_size: int = 1000,
    features: bool = False,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample cross-entropy on the labels as trained (or ``labels``) of every sample of D_tr and,
    with ``features``, the penultimate features (the classifier's input), both on CPU.

    Inference mode, ``drop`` mode (the deployed θ_o1), non-augmented images with the trigger stamped
    where the task stamped it during training, a user's data set normalised by its own statistics.
    """
    dev = torch.device(device)
    was = model.training
    model.eval()
    y_all = (task.y_train if labels is None else labels).to(dev)
    pre = getattr(task, "preprocess", None)
    norm = {} if pre is None else {"mean": pre.mean, "std": pre.std}
    batches = Batches(
        task.data.x_train.to(dev),
        y_all,
        batch_size=batch_size,
        trigger=task.trigger,
        triggered=task.triggered,
        channels_last=True,
        **norm,
    )
    captured: list[torch.Tensor] = []
    hook = None
    if features:
        hook = classifier_layer(model).register_forward_pre_hook(
            lambda _m, args: captured.append(args[0].detach().float().flatten(1).cpu())
        )
    ces = []
    try:
        for x, y, _ in batches:
            with autocast(dev):
                logits = model(x, mode="drop")
            ces.append(torch.nn.functional.cross_entropy(logits.float(), y, reduction="none").cpu())
    finally:
        if hook is not None:
            hook.remove()
        model.train(was)
    ce = torch.cat(ces).double() if ces else torch.zeros(0, dtype=torch.float64)
    feats = torch.cat(captured).double() if features and captured else None
    return ce, feats


def robust_z(values: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """(v − median) / IQR over ``values[ref]`` (all if None): a unit-free scale that one far outlier
    cannot squash; falls back to the standard deviation, then 1, when the spread is zero."""
    v = values.double()
    r = v if ref is None else v[ref]
    q = torch.quantile(r, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    spread = float(q[2] - q[0])
    if not spread > 0:
        spread = float(r.std()) if len(r) > 1 else 0.0
    if not spread > 0:
        spread = 1.0
    return (v - q[1]) / spread


# --- the registry ---------------------------------------------------------------------------------


class Score:
    """Base class of a discovery score: subclasses set ``name``, ``config_cls``, ``summary``, ``order``
    and implement :meth:`_score`."""

    name: str = ""
    config_cls: type[ScoreConfig] = ScoreConfig
    summary: str = ""
    order: int = 1000

    def __init__(self, config: ScoreConfig | None = None, **overrides) -> None:
        cfg = config or self.config_cls()
        if overrides:  # each value checked and parsed by its field's declared type (rem.settings)
            cfg = dataclasses.replace(cfg, **coerce_fields(type(cfg), overrides, f"score {self.name!r}"))
        self.config = cfg

    def rank(self, model: nn.Module, task, forget_idx, ctx: Context | None = None) -> Ranking:
        """Score every sample of D_r = D_tr \\ D_f and rank them (the model is not modified)."""
        ctx = ctx or Context()
        fi, ri = check_inputs(task, forget_idx)
        t0 = time.perf_counter()
        model = copy.deepcopy(model).to(ctx.device)  # the caller's model stays as it is
        scores, info = self._score(model, task, fi, ri, ctx)
        wall = time.perf_counter() - t0
        scores = torch.as_tensor(scores, dtype=torch.float64).cpu().reshape(-1)
        if len(scores) != len(ri):
            raise AssertionError(f"score {self.name} gave {len(scores)} values for {len(ri)} samples of D_r")
        finite = torch.isfinite(scores)
        if not bool(finite.all()):  # a NaN / inf would sort anywhere: rank it last
            low = float(scores[finite].min()) - 1.0 if bool(finite.any()) else 0.0
            scores = torch.where(finite, scores, torch.full_like(scores, low))
        order = torch.sort(scores, descending=True, stable=True).indices  # ties keep index order
        return Ranking(
            score_name=self.name,
            settings=self.config.as_dict(),
            idx=ri[order],
            score=scores[order],
            n_train=int(len(task.y_train)),
            n_forget=len(fi),
            wall_s=wall,
            info=info,
            files=getattr(task, "files", None),
        )

    def _score(
        self, model: nn.Module, task, forget_idx: torch.Tensor, retain_idx: torch.Tensor, ctx: Context
    ) -> tuple[torch.Tensor, dict]:
        """Scores of ``retain_idx`` (in that order; higher = more suspicious) and an info dict."""
        raise NotImplementedError


SCORES: dict[str, type[Score]] = {}


def register_score(cls: type[Score]) -> type[Score]:
    """Class decorator adding a score to the registry; a second score of the same name is refused."""
    from rem.methods.base import add_to_registry

    return add_to_registry(SCORES, cls, "score")


def score_names() -> list[str]:
    """Every registered score, by :attr:`Score.order`, then by name."""
    import rem.discovery.scores  # noqa: F401  (importing it registers the scores)

    return sorted(SCORES, key=lambda n: (SCORES[n].order, n))


def get_score(name: str, config: ScoreConfig | None = None, **overrides) -> Score:
    import rem.discovery.scores  # noqa: F401

    if name not in SCORES:
        raise ConfigError(f"unknown discovery score {name!r}; registered: {', '.join(score_names())}")
    return SCORES[name](config, **overrides)
