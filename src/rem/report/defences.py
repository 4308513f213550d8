"""The report's "Backdoor defences" section: on the poison task, per discovery rate, every method present side
by side — REM and its variants, the unlearning baselines and the post-training backdoor defences (the methods
of ``family = "defence"``, :class:`rem.methods.defences.common.Defence`) — with clean accuracy, ASR and healed,
mean ± SEM over seeds; then sentences computed from those figures: where a defence beats REM (or a REM
variant, a registered unlearning method whose name starts with ``rem``: not the oracle nor the ablation) by
more than the larger of the two SEMs, and where REM beats every defence on both ASR and healed.

Written only when the poison cells include a defence's. No figure is typed here: every number comes from the
stored cells.
"""

from __future__ import annotations

import math

from rem.methods.base import method_family
from rem.report.model import Table
from rem.report.tables import CSV_DECIMALS, fmt_pm, in_percent, is_rem_method, mean_sem, order_methods
from rem.units import percent

TASK = "poison"
DEFENCE = "defence"  # the family of the defences (rem.methods.base.Method.family)
METRICS = ("utility", "asr", "healed")  # clean test accuracy, attack success rate (lower is better), healed
#: The columns of ``defences.csv`` (shares in percent; a SEM blank for a single seed).
COLUMNS = (
    "rate",
    "method",
    "pretrain_type",
    "family",
    "seeds",
    "utility_mean",
    "utility_sem",
    "asr_mean",
    "asr_sem",
    "healed_mean",
    "healed_sem",
)
LABELS = {"utility": "clean accuracy", "asr": "ASR", "healed": "healed"}
SECTION = "defences"  # its snippet section in table.md: a docs page includes "results/<folder>/table.md:defences"

NOTE = (
    "Backdoor defences beside REM and the unlearning methods on the poison task, per discovery rate: clean test "
    "accuracy (utility), attack success rate (ASR, lower is better) and healed (higher is better), mean ± SEM over "
    "seeds in percent (no ± for a single seed). family: defence for the post-training backdoor defences. The "
    "defences take D_r as their clean data, contaminated as it really is (it still holds the undiscovered "
    "poisoned samples); a label ending in (clean subset) is a run with clean_subset=true, D_r without them, "
    "chosen with the ground truth: an upper bound no user has."
)
COMPARE_NOTE = (
    "Compared with REM, from the table above: a difference counts when it is larger than the larger of the two "
    "SEMs (any difference, when neither has a SEM: a single seed)."
)


def _family(row: dict) -> str:
    return method_family(row.get("method_name", row["method"])) or ""


def _is_rem(row: dict) -> bool:
    return is_rem_method(row["name"])


def defence_table(rows: list[dict]) -> list[dict]:
    """Per (discovery rate, pretraining type, method) of the poison cells: mean ± SEM over seeds of utility (clean
    accuracy), asr and healed, the number of seeds and the method's family; ``[]`` unless some of the cells are a
    defence's. Sorted by rate, pretraining type, then the methods' own order."""
    poison = [r for r in rows if r.get("task") == TASK]
    if not any(_family(r) == DEFENCE for r in poison):
        return []
    groups: dict[tuple, list[dict]] = {}
    for r in poison:
        groups.setdefault((round(float(r["rate"]), 6), r["pretrain_type"], r["method"]), []).append(r)
    rank = {m: i for i, m in enumerate(order_methods(m for _, _, m in groups))}
    out = []
    for (rate, ptype, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], rank[kv[0][2]])):
        row = {
            "rate": rate,
            "method": method,
            "pretrain_type": ptype,
            "family": _family(rs[0]),
            "seeds": len(rs),
            "name": rs[0].get("method_name", method),
        }
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_sem"], _ = mean_sem(r.get(m) for r in rs)
        out.append(row)
    return out


def defence_csv_rows(table: list[dict]) -> list[dict]:
    """:func:`defence_table`'s rows for ``defences.csv``: shares in percent (a single seed's SEM, NaN, is
    written blank by :func:`rem.report.tables.to_csv`)."""
    return in_percent(table, [c for c in COLUMNS if c.endswith(("_mean", "_sem"))], CSV_DECIMALS)


def _pm(row: dict, metric: str) -> str:
    return fmt_pm(percent(row[f"{metric}_mean"]), percent(row[f"{metric}_sem"])) + " %"


def _margin(a: dict, b: dict, metric: str) -> tuple[float, str]:
    """How much ``a`` must beat ``b`` by on ``metric`` (the larger of their SEMs, the known one, or 0 when
    neither has one) and how the sentence says so."""
    known = [(r[f"{metric}_sem"], r["method"]) for r in (a, b) if not math.isnan(r[f"{metric}_sem"])]
    if len(known) == 2:
        return max(s for s, _ in known), " by more than the larger SEM"
    if known:
        other = b["method"] if known[0][1] == a["method"] else a["method"]
        return known[0][0], f" by more than {_of(known[0][1], 'SEM')} ({other}: single seed)"
    return 0.0, " (single seed: no SEM)"


def beats(a: dict, b: dict, metric: str) -> bool:
    """Whether ``a`` is better than ``b`` on ``metric`` (ASR lower, healed or utility higher) by more than the
    larger of their SEMs (by anything, when neither has a SEM). False when either figure is missing."""
    margin, _ = _margin(a, b, metric)
    diff = a[f"{metric}_mean"] - b[f"{metric}_mean"]
    return (-diff if metric == "asr" else diff) > margin  # NaN compares False


def _of(label: str, what: str) -> str:
    """``anp's ASR``, or ``the ASR figure of anp (clean subset)`` for a label with a tag."""
    return f"the {what} figure of {label}" if " " in label else f"{label}'s {what}"


def _beaten(where: str, d: dict, rem: dict, metric: str) -> str:
    _, how = _margin(d, rem, metric)
    side = "below" if metric == "asr" else "above"
    theirs = f"that of {rem['method']}" if " " in rem["method"] else f"{rem['method']}'s"
    return (
        f"{where}, {_of(d['method'], LABELS[metric])} ({_pm(d, metric)}) is {side} {theirs} ({_pm(rem, metric)})"
        f"{how}; clean accuracy {_pm(d, 'utility')} against {_pm(rem, 'utility')}."
    )


def _by_more(rows: list[dict]) -> str:
    """How a sentence about several comparisons states their margin: the larger SEM, and which rows have none."""
    one = [r["method"] for r in rows if r["seeds"] < 2]
    if len(one) == len(rows):
        return " (single seed: no SEM)"
    return " by more than the larger SEM" + (f" ({', '.join(one)}: single seed, no SEM)" if one else "")


def sentences(table: list[dict]) -> list[str]:
    """Per rate (and pretraining type, when there are several), for REM and each REM variant: one sentence per
    defence and metric (ASR, healed) on which the defence beats it (:func:`beats`); else one that it beats every
    defence on both; else one that no defence beats it. Computed from :func:`defence_table`'s figures only."""
    groups: dict[tuple, list[dict]] = {}
    for r in table:
        groups.setdefault((r["rate"], r["pretrain_type"]), []).append(r)
    several = len({p for _, p in groups}) > 1
    out = []
    for (rate, ptype), rs in groups.items():
        where = f"At rate {rate:g}" + (f" ({ptype})" if several else "")
        defs = [r for r in rs if r["family"] == DEFENCE]
        rems = [r for r in rs if _is_rem(r)]
        if not defs:
            continue
        if not rems:
            out.append(f"{where}, there is no REM cell to compare the defences with.")
            continue
        names = ", ".join(d["method"] for d in defs)
        for rem in rems:
            lost = [_beaten(where, d, rem, m) for d in defs for m in ("asr", "healed") if beats(d, rem, m)]
            if lost:
                out += lost
            elif all(beats(rem, d, m) for d in defs for m in ("asr", "healed")):
                out.append(
                    f"{where}, {rem['method']} is better than every defence ({names}) on both ASR and healed"
                    f"{_by_more([rem, *defs])}."
                )
            else:
                out.append(
                    f"{where}, no defence ({names}) beats {rem['method']} on ASR or healed{_by_more([rem, *defs])}."
                )
    return out


def defence_view(table: list[dict]) -> Table:
    """:func:`defence_table` for people: the figures in percent, mean ± SEM over seeds."""
    head = ["rate", "method", "pretrain", "family", "seeds", "clean acc", "ASR", "healed"]
    rows = [
        [f"{r['rate']:g}", r["method"], r["pretrain_type"], r["family"], r["seeds"]]
        + [fmt_pm(percent(r[f"{m}_mean"]), percent(r[f"{m}_sem"])) for m in METRICS]
        for r in table
    ]
    return Table(head, rows, "llll" + "r" * 4)


def defence_markdown(table: list[dict]) -> str:
    """The Markdown section ("" without defence cells), between the snippet markers of :data:`SECTION`."""
    from rem.report.markdown import markdown_table

    if not table:
        return ""
    lines = "".join(f"- {s}\n" for s in sentences(table))
    return (
        f"\n<!-- --8<-- [start:{SECTION}] -->\n## Backdoor defences\n\n{NOTE}\n\n"
        + markdown_table(defence_view(table))
        + f"\n{COMPARE_NOTE}\n\n{lines}<!-- --8<-- [end:{SECTION}] -->\n"
    )


def defence_html(table: list[dict]) -> str:
    """The HTML section ("" without defence cells)."""
    import html

    from rem.report.html import html_table

    if not table:
        return ""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in sentences(table))
    return (
        f"<h2>Backdoor defences</h2><p>{html.escape(NOTE)}</p>"
        + html_table(defence_view(table))
        + f"<p>{html.escape(COMPARE_NOTE)}</p><ul>{items}</ul>"
    )


__all__ = [
    "COLUMNS",
    "beats",
    "defence_csv_rows",
    "defence_html",
    "defence_markdown",
    "defence_table",
    "defence_view",
    "sentences",
]
