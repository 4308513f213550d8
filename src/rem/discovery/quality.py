"""How well a ranking finds a set of samples (e.g. the undiscovered corruption D_c \\ D_f): AUROC, precision and
recall at k. For benchmarks and reports: no score reads the set it is measured against."""

from __future__ import annotations

import numpy as np
import torch


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
