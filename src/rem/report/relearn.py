"""The relearning check in the report (:mod:`rem.run.relearn`): which records count, which columns exist, and
the table of relearning figures with the gap to the clean reference (``retrain`` at rate 1.0)."""

from __future__ import annotations

import json
import math

from rem.report.model import Table
from rem.report.tables import fmt_pm, mean_sem
from rem.run.relearn import BATCH, LR, POOL, STEPS, is_relearn_metric, relearn_settings
from rem.units import percent

NOTE = (
    f"Relearning check (rem.run.relearn): a copy of the healed model re-tuned {STEPS} SGD steps (batch {BATCH}, "
    f"lr {LR:g}) on {POOL:,} samples, k of them corrupted and the rest clean, then measured again; mean ± SEM "
    "over seeds, in percent. Δ clean: the gap to the clean reference, retrain at rate 1.0 put through the same "
    "re-tuning (— without one): a healing that holds relearns no more than the clean model (Δ relearned ASR ≈ 0, "
    "Δ relearned healed ≈ 0)."
)


def _design(relearn_cfg: dict) -> dict:
    """A cell's relearning settings but for its sample counts: how the re-tuning was done."""
    return {k: v for k, v in relearn_cfg.items() if k != "ks"}


def _rank(record: dict, current: dict) -> int:
    """2: the check as :mod:`rem.run.relearn` runs it now; 1: no check; 0: the check of an earlier design."""
    cfg = record.get("config") or {}
    if "relearn" not in cfg:
        return 1
    return 2 if _design(cfg["relearn"]) == current else 0


def _without_relearn(record: dict) -> dict:
    """``record`` with its relearning figures dropped (they came from an earlier design of the check)."""
    metrics = {k: v for k, v in (record.get("metrics") or {}).items() if not is_relearn_metric(k)}
    return {**record, "metrics": metrics}


def prefer_relearned(records: list[dict]) -> list[dict]:
    """``records`` without those superseded by a record of the same cell (same configuration but for
    ``relearn``) computed with the relearning check as it runs now, so a run folder holding both counts each
    cell once. A record of an earlier design of the check (other re-tuning settings) is superseded by any
    other record of its cell, and counts without its relearning figures, which do not compare."""
    current = _design(relearn_settings(()))
    keyed = [(_base_key(r["config"]) if r.get("config") else None, _rank(r, current)) for r in records]
    checked = {base for (base, _), r in zip(keyed, records) if "relearn" in (r.get("config") or {})}
    best: dict[str, int] = {}  # per cell that has a record with the check: the best rank among its records
    for base, rank in keyed:
        if base in checked:
            best[base] = max(best.get(base, 0), rank)
    return [
        r if base not in best or best[base] else _without_relearn(r)
        for (base, rank), r in zip(keyed, records)
        if base not in best or rank == best[base]
    ]


def _base_key(cfg: dict) -> str:
    return json.dumps({k: v for k, v in cfg.items() if k != "relearn"}, sort_keys=True, default=str)


def relearn_columns(rows: list[dict]) -> list[str]:
    """The relearning metric columns present in ``rows`` (ordered by k, healed before asr)."""
    names = {k for r in rows for k, v in r.items() if is_relearn_metric(k) and v is not None}

    def order(n: str) -> tuple[int, int]:
        return int(n.rsplit("_", 1)[1]), 0 if "healed" in n else 1

    return sorted(names, key=order)


def _reference(label: str, refs: dict[str, dict]) -> dict | None:
    """The clean reference of the row labelled ``label`` among ``retrain``'s rows at rate 1.0: the one with the
    same split of settings (``retrain [steps=250]`` for ``rem [steps=250]``), else the only one there is."""
    same = "retrain" + label[len(label.split(" ", 1)[0]) :]
    if same in refs:
        return refs[same]
    return next(iter(refs.values())) if len(refs) == 1 else None


def relearn_table(rows: list[dict]) -> list[dict]:
    """Per (method, pretraining type, task, rate): the mean ± SEM over seeds of healed, asr and every
    relearning metric, and each relearning metric's gap to the clean reference (``retrain`` at rate 1.0 on
    the same task and pretraining type, ``gap_<metric>`` = method − reference; NaN without a reference)."""
    cols = relearn_columns(rows)
    if not cols:
        return []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if any(r.get(c) is not None for c in cols):
            groups.setdefault((r["method"], r["pretrain_type"], r["task"], float(r["rate"])), []).append(r)
    means = {}
    for key, rs in groups.items():
        means[key] = {m: mean_sem(r.get(m) for r in rs) for m in ("healed", "asr", *cols)}
    refs: dict[tuple, dict[str, dict]] = {}  # (pretraining type, task) -> retrain's rows at rate 1.0, by label
    for (method, ptype, task, rate), stats in means.items():
        if method.split(" ", 1)[0] == "retrain" and rate == 1.0:
            refs.setdefault((ptype, task), {})[method] = stats
    out = []
    for (method, ptype, task, rate), stats in means.items():
        ref = _reference(method, refs.get((ptype, task), {}))
        row = {"method": method, "pretrain_type": ptype, "task": task, "rate": rate, "seeds": stats["healed"][2]}
        for m, (mean, sem, _) in stats.items():
            row[f"{m}_mean"], row[f"{m}_sem"] = mean, sem
        for c in cols:
            row[f"gap_{c}"] = stats[c][0] - ref[c][0] if ref is not None else math.nan
        out.append(row)
    out.sort(key=lambda r: (r["task"], r["rate"], r["pretrain_type"], r["method"]))
    return out


def relearn_share_columns(table: list[dict]) -> list[str]:
    """The share-valued columns of :func:`relearn_table`'s rows (means, SEMs and gaps), for the CSV's percent."""
    return [k for k in table[0] if k.endswith(("_mean", "_sem")) or k.startswith("gap_")] if table else []


def _gap(v: float) -> str:
    return "—" if math.isnan(v) else f"{percent(v):+.2f}"


def relearn_view(table: list[dict]) -> Table:
    """The relearning table (:func:`relearn_table`) for people: healed / ASR, each relearning figure and its
    gap to the clean reference, in percent."""
    cols = sorted(
        {k[: -len("_mean")] for r in table for k in r if k.endswith("_mean") and is_relearn_metric(k)},
        key=lambda n: (int(n.rsplit("_", 1)[1]), 0 if "healed" in n else 1),
    )
    has_asr = any(not math.isnan(r.get("asr_mean", math.nan)) for r in table)
    base = ["healed", "asr"] if has_asr else ["healed"]
    head = ["method", "pretrain", "task", "rate", "seeds", *base]
    for c in cols:
        short = c.replace("relearn_healed_", "relearned healed k=").replace("relearn_asr_", "relearned ASR k=")
        head += [short, "Δ clean"]
    rows = []
    for r in table:
        line = [r["method"], r["pretrain_type"], r["task"], f"{r['rate']:g}", r["seeds"]]
        line += [fmt_pm(percent(r[f"{m}_mean"]), percent(r[f"{m}_sem"])) for m in base]
        for c in cols:
            line += [fmt_pm(percent(r.get(f"{c}_mean", math.nan)), percent(r.get(f"{c}_sem", math.nan)))]
            line += [_gap(r.get(f"gap_{c}", math.nan))]
        rows.append(line)
    return Table(head, rows, "llll" + "r" * (len(head) - 4))


def relearn_markdown(table: list[dict]) -> str:
    """The Markdown section of the relearning table ("" without relearning figures)."""
    from rem.report.markdown import markdown_table

    if not table:
        return ""
    return "\n## Relearning check\n\n" + NOTE + "\n\n" + markdown_table(relearn_view(table))


def relearn_html(table: list[dict]) -> str:
    """The HTML section of the relearning table ("" without relearning figures)."""
    import html

    from rem.report.html import html_table

    if not table:
        return ""
    return f"<h2>Relearning check</h2><p>{html.escape(NOTE)}</p>" + html_table(relearn_view(table))


__all__ = [
    "prefer_relearned",
    "relearn_columns",
    "relearn_html",
    "relearn_markdown",
    "relearn_share_columns",
    "relearn_table",
    "relearn_view",
]
