"""``table.md``: the report's tables (:mod:`rem.report.model`) rendered as Markdown."""

from __future__ import annotations

import math

from rem.data.tasks import REGULARITY
from rem.report.model import (
    BY_TASK_NOTE,
    REM_FAMILY_NOTE,
    SEEDS_NOTE,
    Table,
    best_per_task_lines,
    by_rate_views,
    by_task_view,
    collapse_view,
    rem_against_rest_lines,
    summary_view,
)
from rem.report.tables import COLLAPSE_UTILITY_DROP, COLLAPSE_UXH_GAIN
from rem.units import percent


def cell(v) -> str:
    """A value as Markdown shows it: floats with two decimals, NaN as —, None as nothing."""
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.2f}"
    return "" if v is None else str(v)


def markdown_table(t: Table) -> str:
    """``t`` as a Markdown table (ending in a newline)."""
    lines = ["| " + " | ".join(t.head) + " |", "|" + "".join("---|" if a == "l" else "---:|" for a in t.align)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in t.rows]
    return "\n".join(lines) + "\n"


def report_markdown(
    table: list[dict],
    by_task: list[dict],
    by_rate: dict[str, list[dict]],
    collapsed: list[dict],
    warning: str = "",
    metric: str = "uxh",
) -> str:
    """The whole ``table.md``."""
    rate_parts = [
        f"{metric} on {task} ({REGULARITY[task]} regularity) by discovery rate (start: before unlearning; "
        "mean ± SEM over seeds where there are several):\n\n" + markdown_table(t)
        for task, t in by_rate_views(by_rate).items()
    ]
    return (
        "# Benchmark results\n\nMean ± SEM over cells (tasks × discovery rates × seeds), sorted by uxh. "
        + SEEDS_NOTE
        + "\n\n"
        + (f"**{warning}**\n\n" if warning else "")
        + markdown_table(summary_view(table))
        + "\n"
        + f"Mean {metric} per task ({BY_TASK_NOTE}):\n\n"
        + markdown_table(by_task_view(by_task))
        + "\n"
        + _best_lines(by_task, metric)
        + "\n".join(rate_parts)
        + "\n"
        + f"Collapsed cells: uxh less than {percent(COLLAPSE_UXH_GAIN):g} points above the starting model's "
        f"(no healing) or utility more than {percent(COLLAPSE_UTILITY_DROP):g} points below it (utility):\n\n"
        + markdown_table(collapse_view(collapsed))
    )


def _best_lines(by_task: list[dict], metric: str) -> str:
    out = ""
    for title, lines in (
        (f"Best mean {metric} per task, against the runner-up:", best_per_task_lines(by_task)),
        (
            f"The best REM method per task, against the best other method ({REM_FAMILY_NOTE}):",
            rem_against_rest_lines(by_task),
        ),
    ):
        if lines:
            out += f"{title}\n\n" + "".join(f"- {ln}\n" for ln in lines) + "\n"
    return out
