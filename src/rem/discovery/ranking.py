"""The result of a discovery score: :class:`Ranking`, D_r ordered most suspicious first, and its CSV / JSON files."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rem.discovery.quality import ranking_quality
from rem.errors import ConfigError


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

    def write(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the ranking to ``path``: CSV (``.csv``: rank, index, score) or JSON (``.json``: the
        ranking with the score's name, settings and info), with rem's one writer (:mod:`rem.output`); an
        existing file is refused unless ``overwrite``."""
        from rem.output import write_now

        p = Path(path)
        write_now({p: self.content(p)}, overwrite=overwrite, what="ranking file")
        return p

    def content(self, path: str | Path) -> bytes:
        """The bytes :meth:`write` writes to ``path`` (its suffix, ``.csv`` or ``.json``, chooses the format)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return self.to_csv().encode()
        if suffix == ".json":
            return (json.dumps(self.to_dict(), indent=1, default=_jsonable) + "\n").encode()
        raise ConfigError(f"a ranking is written as .csv or .json, not {Path(path).name!r}")

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
