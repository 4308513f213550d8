"""The one table model of the report: each table is built once here and rendered by
:mod:`rem.report.markdown` (``table.md``) and :mod:`rem.report.html` (``report.html``). The aggregates
come in shares (:mod:`rem.report.tables`); the tables show percent."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rem.data.tasks import KINDS, REGULARITY
from rem.report.tables import best_per_task, collapse_where, fmt_pm, rem_against_rest
from rem.units import SHARE_METRICS, percent


@dataclass(frozen=True)
class Table:
    """A header, rows of values (floats are formatted by the renderer) and each column's alignment
    (``"l"`` or ``"r"``); the leading ``"l"`` columns are the row labels."""

    head: list[str]
    rows: list[list]
    align: str

    @property
    def left(self) -> int:
        """How many leading columns are row labels."""
        return len(self.align) - len(self.align.lstrip("l"))


#: What Table 1's seed columns mean (said under its title in table.md and report.html).
SEEDS_NOTE = (
    "seeds: how many; uxh: per-seed means: each seed's mean uxh over the (task, rate) cells every seed has, "
    "mean ± SEM over the seeds (the seed-to-seed noise of the method's grid mean; — for one seed)."
)


def summary_view(table: list[dict]) -> Table:
    """Table 1: mean ± SEM per method and pretraining type (:func:`rem.report.tables.summary_table`)."""
    return Table(
        ["method", "pretrain", "cells", "seeds", "healed", "utility", "uxh", "uxh: per-seed means", "wall s (mean)"],
        [
            [
                r["method"],
                r["pretrain_type"],
                r["cells"],
                r["seeds"],
                *(fmt_pm(percent(r[f"{m}_mean"]), percent(r[f"{m}_sem"])) for m in ("healed", "utility", "uxh")),
                fmt_pm(percent(r["uxh_seeds_mean"]), percent(r["uxh_seeds_sem"])) if r["seeds"] > 1 else "—",
                r["wall_s_mean"],
            ]
            for r in table
        ],
        "llrrrrrrr",
    )


def by_task_view(by_task: list[dict]) -> Table:
    """Mean of a metric per task (:func:`rem.report.tables.by_task_table`)."""
    return Table(
        ["method", "pretrain"] + [f"{k} ({REGULARITY[k]})" for k in KINDS],
        [
            [r["method"], r["pretrain_type"]] + [_value(r[k], r.get(f"{k}_sem", math.nan)) for k in KINDS]
            for r in by_task
        ],
        "ll" + "r" * len(KINDS),
    )


REM_FAMILY_NOTE = "a REM method: the paper's `rem` or a variant a user can run, not the oracle nor an ablation"

BY_TASK_NOTE = (
    "over discovery rates and seeds; with several seeds, mean ± SEM of the per-seed means over the rates every seed has"
)


def best_per_task_lines(by_task: list[dict]) -> list[str]:
    """Per task, one sentence: the best mean, the runner-up, the margin, and whether it exceeds the noise."""
    return [_against_line(b) for b in best_per_task(by_task)]


def rem_against_rest_lines(by_task: list[dict]) -> list[str]:
    """Per task, one sentence: the best REM method against the best other method, ahead or behind, and
    whether the gap exceeds the noise."""
    return [_against_line(b) for b in rem_against_rest(by_task)]


def _against_line(b: dict) -> str:
    fig = {w: fmt_pm(percent(b[f"{w}_mean"]), percent(b[f"{w}_sem"])) for w in ("best", "next")}
    ahead = b["margin"] >= 0
    if b["beyond_sem"] is None:
        verdict = "a single seed: no SEM to compare with"
    elif b["beyond_sem"]:
        verdict = "more than the larger SEM"
    else:
        verdict = "within the larger SEM: not a clear " + ("win" if ahead else "loss")
    return (
        f"{b['task']} ({REGULARITY[b['task']]}): {b['best']} {fig['best']} against {b['next']} {fig['next']}, "
        f"{percent(b['margin']):+.2f} ({verdict}; rates {', '.join(f'{r:g}' for r in b['rates'])})"
    )


def _value(mean: float, sem: float):
    """A share in percent: a number, or "mean ± SEM" over seeds where there are several."""
    return percent(mean) if math.isnan(sem) else fmt_pm(percent(mean), percent(sem))


def by_rate_views(by_rate: dict[str, list[dict]]) -> dict[str, Table]:
    """Per task, a metric per discovery rate (:func:`rem.report.tables.by_rate_table`)."""
    out = {}
    for task, lines in by_rate.items():
        rates = list(lines[0]["by_rate"])
        out[task] = Table(
            ["method", "pretrain", "start"] + [f"{r:g}" for r in rates],
            [
                [
                    ln["method"],
                    ln["pretrain_type"],
                    *(
                        _value(m, e)
                        for m, e in [
                            (ln["start"], ln["start_sem"]),
                            *zip(ln["by_rate"].values(), ln["by_rate_sem"].values()),
                        ]
                    ),
                ]
                for ln in lines
            ],
            "llr" + "r" * len(rates),
        )
    return out


def collapse_view(collapsed: list[dict]) -> Table:
    """Where each method collapses (:func:`rem.report.tables.collapses`)."""
    return Table(
        ["method", "pretrain", "collapsed / cells", "where"],
        [
            [e["method"], e["pretrain_type"], f"{len(e['collapsed'])} / {e['cells']}", collapse_where(e)]
            for e in collapsed
        ],
        "llrl",
    )


def cells_view(rows: list[dict], columns: list[str], left: int = 3) -> Table:
    """Every cell, the given columns (the metrics in percent)."""
    return Table(
        list(columns),
        [[percent(r.get(c)) if c in SHARE_METRICS else r.get(c) for c in columns] for r in rows],
        "l" * left + "r" * (len(columns) - left),
    )
