"""Discovery: rank D_r by how likely each sample belongs with the corruption (see
:mod:`rem.discovery.base`); the scores are in :mod:`rem.discovery.scores`. The entry point,
:func:`rem.discover`, is in :mod:`rem.api` (it prepares the model and data as :func:`rem.unlearn` does)."""

from rem.discovery import scores as _scores  # noqa: F401  (importing it registers the scores)
from rem.discovery.base import SCORES, Score, ScoreConfig, get_score, register_score, score_names
from rem.discovery.quality import auroc, ranking_quality
from rem.discovery.ranking import Ranking

__all__ = [
    "SCORES",
    "Ranking",
    "Score",
    "ScoreConfig",
    "auroc",
    "get_score",
    "ranking_quality",
    "register_score",
    "score_names",
]
