"""Aggregates of a results store's cells: the paper's Table 1 (mean ± SEM over cells), per task, per
discovery rate, where methods collapse, and the list of cells. Building only: :mod:`rem.report.model` turns
them into tables, :mod:`rem.report.markdown` and :mod:`rem.report.html` render those.

Every aggregate here is in the records' unit, shares in [0, 1]; the views, CSV files and figures show
percent (:func:`rem.units.percent`)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable

from rem.data.tasks import KINDS, REGULARITY
from rem.methods.base import method_family, method_label
from rem.units import percent

METRICS = ("healed", "utility", "uxh")
CELL_COLUMNS = (
    "method",
    "pretrain_type",
    "task",
    "regularity",
    "rate",
    "seed",
    "uxh",
    "healed",
    "utility",
    "healed_test",
    "forget_acc",
    "asr",
    "test_acc",
    "corrupt_acc",
    "params",
    "wall_s",
    "peak_mem_mb",
    "split_hash",
    "key",
)


def flatten(record: dict, split_by: tuple[str, ...] = ()) -> dict:
    """One record as a flat row: cell coordinates, metrics, wall time and memory.

    ``split_by``: method settings appended to the method's label (``rem [steps=250]``), so that cells that
    differ in them are rows of their own (a method without the setting keeps its plain label)."""
    row = {
        k: record.get(k)
        for k in (
            "method",
            "pretrain_type",
            "task",
            "rate",
            "seed",
            "wall_s",
            "peak_mem_mb",
            "split_hash",
            "key",
        )
    }
    row["method"] = method_label(record)
    row["method_name"] = record.get("method")  # the registered name (``method`` is the label)
    config = {**_absent_settings(record.get("method"), split_by), **(record.get("method_config") or {})}
    shown = [f"{k}={config[k]}" for k in split_by if k in config]
    if shown:
        row["method"] += f" [{', '.join(shown)}]"
    row["regularity"] = REGULARITY.get(record.get("task"), "")
    row.update(record.get("metrics", {}))
    return row


def _absent_settings(method: str | None, names: tuple[str, ...]) -> dict:
    """The values a record stored before a ``keyed_when_set`` setting existed ran at (its ``absent`` value),
    for those of ``names`` the registered ``method`` has: a split row then names them too."""
    import dataclasses

    from rem.methods.base import REGISTRY, absent_value

    cls = REGISTRY.get(method or "")
    if cls is None or not names:
        return {}
    fields = {f.name: f for f in dataclasses.fields(cls.config_cls)}
    return {k: absent_value(fields[k]) for k in names if k in fields and fields[k].metadata.get("keyed_when_set")}


def mean_sem(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (sample std / √n; NaN below 2 values) and the count, NaNs skipped."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    m = sum(v) / n
    if n < 2:
        return m, math.nan, n
    var = sum((x - m) ** 2 for x in v) / (n - 1)
    return m, math.sqrt(var / n), n


def order_methods(names: Iterable[str]) -> list[str]:
    """Registered methods in their own order (:attr:`rem.methods.Method.order`), then the others (labels
    such as ``rem (r=0.25)``, methods no longer registered) alphabetically."""
    from rem.methods import method_names

    names, known = set(names), method_names()
    return [m for m in known if m in names] + sorted(names - set(known))


def seed_spread(rows: list[dict], metric: str = "uxh") -> tuple[int, float, float]:
    """(seeds, mean, SEM) of the per-seed grid means of ``metric``: each seed's mean over the (task, rate)
    cells that *every* seed of ``rows`` has (so that a seed still half run is compared on the same cells),
    then mean ± SEM over the seeds: the seed-to-seed noise of a method's grid mean (SEM NaN for one seed)."""
    by_seed, common = _seed_cells(rows, metric)
    means = [mean_sem(v for c in sorted(common) for v in cells[c])[0] for cells in by_seed.values()]
    mean, sem, _ = mean_sem(means)
    return len(by_seed), mean, sem


def _seed_cells(rows: list[dict], metric: str = "uxh"):
    """``(by_seed, common)``: per seed, ``metric`` per (task, rate) cell; and the cells every seed has."""
    by_seed: dict[int, dict[tuple[str, float], list[float]]] = {}
    for r in rows:
        by_seed.setdefault(r.get("seed"), {}).setdefault((r["task"], round(float(r["rate"]), 6)), []).append(
            r.get(metric)
        )
    common = set.intersection(*(set(c) for c in by_seed.values())) if by_seed else set()
    return by_seed, common


def summary_table(rows: list[dict]) -> list[dict]:
    """Table 1: per (method, pretraining type), mean ± SEM over cells of healed, utility and uxh,
    the seeds and the spread of the per-seed uxh means (:func:`seed_spread`), mean wall time, the number
    of cells and tasks; sorted by mean uxh, best first."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["pretrain_type"]), []).append(r)
    out = []
    for (method, ptype), rs in groups.items():
        row = {
            "method": method,
            "pretrain_type": ptype,
            "cells": len(rs),
            "tasks": ",".join(k for k in KINDS if any(r["task"] == k for r in rs)),
        }
        for m in METRICS:
            mean, sem, _ = mean_sem(r.get(m) for r in rs)
            row[f"{m}_mean"], row[f"{m}_sem"] = mean, sem
        row["seeds"], row["uxh_seeds_mean"], row["uxh_seeds_sem"] = seed_spread(rs)
        row["wall_s_mean"] = mean_sem(r.get("wall_s") for r in rs)[0]
        out.append(row)
    out.sort(key=lambda r: (-(r["uxh_mean"] if not math.isnan(r["uxh_mean"]) else -math.inf), r["method"]))
    return out


def by_task_table(rows: list[dict], metric: str = "uxh") -> list[dict]:
    """Mean of ``metric`` per (method, pretraining type) and task (over rates and seeds).

    Both come from the per-seed means over the rates every seed has (:func:`seed_spread` on the task's
    rows): ``<task>_sem`` is the seed-to-seed SEM, the noise a difference between two methods must exceed
    (NaN for one seed, whose ``<task>`` is then the mean over the task's cells)."""
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["pretrain_type"]), {}).setdefault(r["task"], []).append(r)
    out = []
    for (method, ptype), per in groups.items():
        first = next(iter(per.values()))[0]
        row = {"method": method, "method_name": first.get("method_name", method), "pretrain_type": ptype}
        for k in KINDS:
            rs = per.get(k, [])
            row[f"{k}_seeds"], row[k], row[f"{k}_sem"] = seed_spread(rs, metric)
            row[f"{k}_rates"] = _common_rates(rs)
        out.append(row)
    rank = {m: i for i, m in enumerate(order_methods(r["method"] for r in out))}
    out.sort(key=lambda r: (rank[r["method"]], r["pretrain_type"]))
    return out


def _common_rates(rows: list[dict]) -> tuple[float, ...]:
    """The discovery rates that every seed of ``rows`` (one task's) has: those the mean of :func:`seed_spread`
    is over."""
    return tuple(sorted(rate for _, rate in _seed_cells(rows)[1]))


def is_rem_method(name: str) -> bool:
    """REM or a registered variant a user can run: an unlearning method whose registered name starts with
    ``rem`` (not the oracle ``rem-ideal`` nor the ablation ``rem-no-remove``)."""
    return method_family(name) == "unlearning" and name.startswith("rem")


def best_per_task(by_task: list[dict]) -> list[dict]:
    """Per task, the row with the best mean and the runner-up: ``task, best, best_mean, best_sem, next,
    next_mean, next_sem, margin, beyond_sem`` (``beyond_sem``: the margin exceeds the larger of the two
    SEMs; None when either has a single seed), ``rates``. Only rows measured at the same discovery rates
    compare: those with the most rates of the task. Tasks with fewer than two such rows are left out."""
    out = []
    for k, rates, have in _comparable(by_task):
        if len(have) >= 2:
            out.append(_against(k, rates, *sorted(have, key=lambda r: -r[k])[:2]))
    return out


def rem_against_rest(by_task: list[dict]) -> list[dict]:
    """Per task, the best REM method (:func:`is_rem_method`: the paper's and its variants) against the best
    of the other methods (the oracle and the ablations of REM included), among the rows measured at the same rates as in
    :func:`best_per_task`; the same keys, ``margin`` negative where the other method is ahead. Tasks
    without a row on both sides are left out."""
    out = []
    for k, rates, have in _comparable(by_task):
        ours = [r for r in have if is_rem_method(r["method_name"])]
        rest = [r for r in have if not is_rem_method(r["method_name"])]
        if ours and rest:
            out.append(_against(k, rates, max(ours, key=lambda r: r[k]), max(rest, key=lambda r: r[k])))
    return out


def _comparable(by_task: list[dict]):
    """Per task: ``(task, rates, rows)``, the rows measured at the most discovery rates of the task, when they
    are the same rates (as many rates, but not the same ones: nothing compares, and the task is left out)."""
    for k in KINDS:
        have = [r for r in by_task if not math.isnan(r[k])]
        most = max((len(r[f"{k}_rates"]) for r in have), default=0)
        rates = {r[f"{k}_rates"] for r in have if len(r[f"{k}_rates"]) == most}
        if len(rates) == 1:
            (rates,) = rates
            yield k, rates, [r for r in have if r[f"{k}_rates"] == rates]


def _against(k: str, rates: tuple, a: dict, b: dict) -> dict:
    sems = (a[f"{k}_sem"], b[f"{k}_sem"])
    margin = a[k] - b[k]
    return {
        "task": k,
        "best": a["method"],
        "best_mean": a[k],
        "best_sem": sems[0],
        "next": b["method"],
        "next_mean": b[k],
        "next_sem": sems[1],
        "margin": margin,
        "beyond_sem": None if any(math.isnan(x) for x in sems) else abs(margin) > max(sems),
        "rates": rates,
    }


def fmt_pm(mean: float, sem: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.2f}" if math.isnan(sem) else f"{mean:.2f} ± {sem:.2f}"


#: Decimals of the percentages in the CSV files: 1e-6 as a share, finer than any accuracy the data sets
#: give (1 of 10,000 test images is 0.01 %), coarse enough to drop the float32 noise of the measurements.
CSV_DECIMALS = 4


def in_percent(rows: Iterable[dict], columns: Iterable[str], digits: int = 9) -> list[dict]:
    """``rows`` with the share-valued ``columns`` in percent (:func:`rem.units.percent`), for people to read."""
    cols = set(columns)
    return [{k: percent(v, digits) if k in cols else v for k, v in r.items()} for r in rows]


def _cell(v):
    """A CSV field: blank for a missing value (None) or one that has no figure (NaN, e.g. the SEM of one seed)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def to_csv(rows: list[dict], columns: Iterable[str] | None = None) -> str:
    """``rows`` as CSV text; a missing or NaN value is a blank field in every file ``rem report`` writes."""
    rows = list(rows)
    columns = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    return buf.getvalue()


# --- per discovery rate, and where methods collapse --------------------------------------------------

#: A cell *collapses* (SPEC §7's "collapse region") when it heals no better than doing nothing, i.e. its uxh
#: is less than this much (0.05: 5 points of percent) above the starting model's, or when it destroys the
#: model: utility more than ``COLLAPSE_UTILITY_DROP`` below the starting model's. The paper draws its collapse
#: regions from the heatmaps by eye; these thresholds are ours, chosen so that a reader of the heatmaps would
#: agree.
COLLAPSE_UXH_GAIN = 0.05
COLLAPSE_UTILITY_DROP = 0.10
#: Float noise of the thresholds' arithmetic (0.8 − 0.1 is 0.7000000000000001): a value this close to the
#: threshold is on it, and a value on the threshold is not a collapse.
_TOLERANCE = 1e-12


def _start_value(starts: list[dict], task: str, ptype: str, metric: str) -> float:
    """Mean ``metric`` of the starting models of (task, pretraining type), over seeds; NaN if none."""
    return _start_stats(starts, task, ptype, metric)[0]


def _start_stats(starts: list[dict], task: str, ptype: str, metric: str) -> tuple[float, float, int]:
    """Mean, SEM and count of ``metric`` over the starting models (seeds) of (task, pretraining type)."""
    return mean_sem(s["metrics"].get(metric) for s in starts if s["task"] == task and s["pretrain_type"] == ptype)


def rates_of(rows: list[dict]) -> list[float]:
    """The discovery rates of the rows, sorted."""
    return sorted({round(float(r["rate"]), 6) for r in rows})


def grid_stats(
    rows: list[dict],
    starts: list[dict],
    method: str,
    ptype: str,
    metric: str,
    tasks: list[str],
    rates: list[float],
) -> list[list[tuple[float, float, int]]]:
    """Matrix [task][start + rates] of (mean, SEM, seeds) of ``metric`` over seeds (SEM NaN for one seed):
    one heatmap panel."""
    out = []
    for t in tasks:
        line = [_start_stats(starts, t, ptype, metric)]
        for rate in rates:
            vals = [
                r.get(metric)
                for r in rows
                if r["method"] == method
                and r["pretrain_type"] == ptype
                and r["task"] == t
                and abs(r["rate"] - rate) < 1e-9
            ]
            line.append(mean_sem(vals))
        out.append(line)
    return out


def by_rate_table(rows: list[dict], starts: list[dict], metric: str = "uxh") -> dict[str, list[dict]]:
    """Per task, one row per (method, pretraining type): the starting model's ``metric`` (``start``) and,
    in ``by_rate``, its mean over seeds at each discovery rate (their SEMs over seeds in ``start_sem`` and
    ``by_rate_sem``, NaN for one seed). The heatmap panels as numbers."""
    rates = rates_of(rows)
    out: dict[str, list[dict]] = {}
    for task in KINDS:
        pairs = {(r["method"], r["pretrain_type"]) for r in rows if r["task"] == task}
        if not pairs:
            continue
        lines = []
        for method in order_methods(m for m, _ in pairs):
            for ptype in sorted(p for m, p in pairs if m == method):
                (start, start_sem, _), *stats = grid_stats(rows, starts, method, ptype, metric, [task], rates)[0]
                lines.append(
                    {
                        "method": method,
                        "pretrain_type": ptype,
                        "start": start,
                        "start_sem": start_sem,
                        "by_rate": {r: m for r, (m, _, _) in zip(rates, stats)},
                        "by_rate_sem": {r: e for r, (_, e, _) in zip(rates, stats)},
                    }
                )
        out[task] = lines
    return out


def collapses(
    rows: list[dict],
    starts: list[dict],
    *,
    uxh_gain: float = COLLAPSE_UXH_GAIN,
    utility_drop: float = COLLAPSE_UTILITY_DROP,
) -> list[dict]:
    """Per (method, pretraining type) except ``none``: the (task, rate) cells, mean over seeds, that
    collapse (see :data:`COLLAPSE_UXH_GAIN`), each with its reason: ``no healing`` and/or ``utility``.

    Cells whose starting model is not in the records cannot be judged and are left out."""
    groups: dict[tuple[str, str], dict[tuple[str, float], list[dict]]] = {}
    for r in rows:
        if r["method"] != "none":
            groups.setdefault((r["method"], r["pretrain_type"]), {}).setdefault(
                (r["task"], float(r["rate"])), []
            ).append(r)
    out = []
    rank = {m: i for i, m in enumerate(order_methods(m for m, _ in groups))}
    for (method, ptype), cells in sorted(groups.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1])):
        where, judged = [], 0
        for (task, rate), rs in sorted(cells.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1])):
            s_uxh = _start_value(starts, task, ptype, "uxh")
            s_util = _start_value(starts, task, ptype, "utility")
            if math.isnan(s_uxh) or math.isnan(s_util):
                continue
            judged += 1
            uxh = mean_sem(r.get("uxh") for r in rs)[0]
            util = mean_sem(r.get("utility") for r in rs)[0]
            reasons = []
            if not uxh >= s_uxh + uxh_gain - _TOLERANCE:  # NaN counts as collapsed
                reasons.append("no healing")
            if not util >= s_util - utility_drop - _TOLERANCE:
                reasons.append("utility")
            if reasons:
                where.append({"task": task, "rate": rate, "uxh": uxh, "utility": util, "reasons": reasons})
        out.append({"method": method, "pretrain_type": ptype, "cells": judged, "collapsed": where})
    return out


def collapse_where(entry: dict) -> str:
    """``interclass 0.1, 0.3 (no healing); random 1 (utility)``: the collapsed cells of one method."""
    by: dict[tuple[str, str], list[float]] = {}
    for c in entry["collapsed"]:
        by.setdefault((c["task"], " and ".join(c["reasons"])), []).append(c["rate"])
    return "; ".join(f"{t} {', '.join(f'{r:g}' for r in rs)} ({why})" for (t, why), rs in by.items()) or "none"
