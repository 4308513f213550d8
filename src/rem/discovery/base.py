"""Discovery: rank the retained samples D_r by how likely they belong with the corruption.

In practice only part of the corrupted set D_c is found: D_f. The rest, D_c \\ D_f, sits in the retain
set D_r with its wrong labels (or its trigger), and every method that trains on D_r re-learns it. A
*score* looks at the starting model, the training data **with the labels it was trained with** and D_f,
and gives every sample of D_r a number: the higher, the more it looks like the corruption. The
result is a :class:`Ranking` (most suspicious first), written as CSV or JSON by ``rem discover``,
read by ``rem-discover`` (REM that adds the top of the ranking to its shared mask).

Scores are classes in a small registry, as methods are (:mod:`rem.methods.base`): a frozen config
dataclass whose fields carry their help text (``rem discover --score NAME --set KEY=VALUE``), a name,
a one-line summary and :meth:`Score._score`. This module holds the config, the base class and the
registry; the registered scores live in :mod:`rem.discovery.scores`, the passes over the data they share
in :mod:`rem.discovery.passes`, the :class:`~rem.discovery.ranking.Ranking` and its files in
:mod:`rem.discovery.ranking`, and how well a ranking finds a set in :mod:`rem.discovery.quality`.

Every score sees only what a practitioner has: the model, the images and labels as trained (triggers
stamped where the task stamped them) and D_f. None reads D_c, true labels or test data; those are
only for :meth:`Ranking.evaluate` in benchmarks.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import torch
from torch import nn

from rem.discovery.passes import check_inputs
from rem.discovery.ranking import Ranking
from rem.errors import ConfigError
from rem.methods.base import Context, setting
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
