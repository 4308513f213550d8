"""Tables from a results store: the paper's Table 1 (mean ± SEM over cells) and the list of cells."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable

from rem.data.tasks import KINDS, REGULARITY

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


def flatten(record: dict) -> dict:
    """One record as a flat row: cell coordinates, metrics, wall time and memory."""
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
    row["regularity"] = REGULARITY.get(record.get("task"), "")
    row.update(record.get("metrics", {}))
    return row


def method_label(record: dict) -> str:
    """The method's name, with its non-default extra capacity or soft mask, e.g. ``rem (r=0.25)``.

    Cells of one method with another expansion ratio are another row of the table and another panel.
    """
    mc = record.get("method_config") or {}
    tags = []
    if mc.get("expand_ratio", 1.0) != 1.0:
        tags.append(f"r={mc['expand_ratio']:g}")
    if mc.get("soft_mask"):
        tags.append("soft mask")
    return f"{record.get('method')} ({', '.join(tags)})" if tags else record.get("method")


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
    from rem.bench.grid import DEFAULT_ORDER

    names = set(names)
    return [m for m in DEFAULT_ORDER if m in names] + sorted(names - set(DEFAULT_ORDER))


def summary_table(rows: list[dict]) -> list[dict]:
    """Table 1: per (method, pretraining type), mean ± SEM over cells of healed, utility and uxh,
    mean wall time, the number of cells and tasks; sorted by mean uxh, best first."""
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
        row["wall_s_mean"] = mean_sem(r.get("wall_s") for r in rs)[0]
        out.append(row)
    out.sort(key=lambda r: (-(r["uxh_mean"] if not math.isnan(r["uxh_mean"]) else -math.inf), r["method"]))
    return out


def by_task_table(rows: list[dict], metric: str = "uxh") -> list[dict]:
    """Mean of ``metric`` per (method, pretraining type) and task (over rates and seeds)."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["pretrain_type"]), {}).setdefault(r["task"], []).append(
            r.get(metric)
        )
    out = []
    for (method, ptype), per in groups.items():
        row = {"method": method, "pretrain_type": ptype}
        for k in KINDS:
            row[k] = mean_sem(per.get(k, []))[0]
        out.append(row)
    rank = {m: i for i, m in enumerate(order_methods(r["method"] for r in out))}
    out.sort(key=lambda r: (rank[r["method"]], r["pretrain_type"]))
    return out


def fmt_pm(mean: float, sem: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.2f}" if math.isnan(sem) else f"{mean:.2f} ± {sem:.2f}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.2f}"
    return "" if v is None else str(v)


def summary_markdown(table: list[dict]) -> str:
    lines = [
        "| method | pretrain | cells | healed | utility | uxh | wall s (mean) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['pretrain_type']} | {r['cells']} | "
            f"{fmt_pm(r['healed_mean'], r['healed_sem'])} | {fmt_pm(r['utility_mean'], r['utility_sem'])} | "
            f"{fmt_pm(r['uxh_mean'], r['uxh_sem'])} | {_fmt(r['wall_s_mean'])} |"
        )
    return "\n".join(lines) + "\n"


def by_task_markdown(table: list[dict], metric: str = "uxh") -> str:
    head = " | ".join(f"{k} ({REGULARITY[k]})" for k in KINDS)
    lines = [f"| method | pretrain | {head} |", "|---|---|" + "---:|" * len(KINDS)]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['pretrain_type']} | " + " | ".join(_fmt(r[k]) for k in KINDS) + " |"
        )
    return f"Mean {metric} per task (over discovery rates and seeds):\n\n" + "\n".join(lines) + "\n"


def to_csv(rows: list[dict], columns: Iterable[str] | None = None) -> str:
    rows = list(rows)
    columns = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()
