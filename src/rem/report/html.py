"""``report.html``: the report's tables (:mod:`rem.report.model`) and images on one self-contained page."""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path

from rem.data.tasks import REGULARITY
from rem.report.heatmaps import LABELS
from rem.report.model import (
    BY_TASK_NOTE,
    REM_FAMILY_NOTE,
    SEEDS_NOTE,
    Table,
    best_per_task_lines,
    by_rate_views,
    by_task_view,
    cells_view,
    collapse_view,
    rem_against_rest_lines,
    summary_view,
)
from rem.report.tables import CELL_COLUMNS, COLLAPSE_UTILITY_DROP, COLLAPSE_UXH_GAIN
from rem.units import percent

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}
td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
code,pre{background:#f6f6f6;padding:1px 4px}
pre{padding:8px;overflow-x:auto;font-size:0.8em}
details{margin:1em 0}
"""


def _e(v) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.2f}"
    return html.escape("" if v is None else str(v))


def _is_text(v) -> bool:
    """A value shown as text (left-aligned): a string that is not a number or a "mean ± sem"."""
    if not isinstance(v, str) or not v.strip():
        return False
    try:
        float(v.split("±")[0].strip().replace("—", "nan"))
    except ValueError:
        return True
    return False


def html_table(t: Table) -> str:
    """``t`` as an HTML table: its row-label columns, and every column holding text, left-aligned."""
    text_cols = {i for line in t.rows for i, v in enumerate(line) if _is_text(v)}
    left_cols = set(range(t.left)) | text_cols
    th = "".join(
        f'<th class="l">{html.escape(h)}</th>' if i in left_cols else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(t.head)
    )
    rows = []
    for line in t.rows:
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="l">{_e(v)}</td>' if i in left_cols else f"<td>{_e(v)}</td>" for i, v in enumerate(line)
            )
            + "</tr>"
        )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _newest(records: list[dict]) -> str:
    """When the newest cell finished (UTC): from the records, so the same cells give the same bytes."""
    t = max((float(r.get("finished_at") or 0.0) for r in records), default=0.0)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "(unknown)"


def report_html(
    run_dir: Path,
    meta: dict,
    records: list[dict],
    rows: list[dict],
    failed: list[dict],
    table: list[dict],
    by_task: list[dict],
    by_rate: dict[str, list[dict]],
    collapsed: list[dict],
    pngs: dict[str, bytes],
    warning: str = "",
) -> str:
    env = records[0].get("env", {})
    profile = records[0].get("config", {}).get("profile", {})
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rem benchmark: "
        f"{html.escape(run_dir.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>rem benchmark: {html.escape(str(run_dir))}</h1>",
        f"<p>{len(records)} finished cells, {len(failed)} failed; profile <code>{_e(profile.get('name'))}"
        f"</code> ({_e(profile.get('dataset'))}, {_e(profile.get('arch'))}, |D_c| = "
        f"{_e(profile.get('n_corrupt'))}); rem {_e(env.get('rem'))}, torch {_e(env.get('torch'))}, "
        f"{_e(env.get('device'))}. Newest cell finished {_newest(records)}.</p>",
        f"<p style='color:#a00'><strong>{html.escape(warning)}</strong></p>" if warning else "",
        "<h2>Summary (Table 1)</h2><p>Mean ± SEM over cells (tasks × discovery rates × seeds), sorted by "
        f"uxh = healed × utility / 100. {html.escape(SEEDS_NOTE)}</p>",
        html_table(summary_view(table)),
        f"<h3>Mean uxh per task</h3><p>{html.escape(BY_TASK_NOTE).capitalize()}.</p>",
        html_table(by_task_view(by_task)),
        "<ul>" + "".join(f"<li>{html.escape(ln)}</li>" for ln in best_per_task_lines(by_task)) + "</ul>",
        *(
            [
                f"<p>The best REM method per task, against the best other method ({html.escape(REM_FAMILY_NOTE)}):</p>"
                "<ul>" + "".join(f"<li>{html.escape(ln)}</li>" for ln in rem_lines) + "</ul>"
            ]
            if (rem_lines := rem_against_rest_lines(by_task))
            else []
        ),
        "<h3>Where methods collapse</h3><p>A cell collapses when its uxh is less than "
        f"{percent(COLLAPSE_UXH_GAIN):g} points above the starting model's (no healing) or its utility more than "
        f"{percent(COLLAPSE_UTILITY_DROP):g} points below it (utility).</p>",
        html_table(collapse_view(collapsed)),
        "<h3>uxh per task and discovery rate</h3>",
        *(
            f"<h4>{html.escape(task)} ({html.escape(REGULARITY[task])} regularity)</h4>" + html_table(t)
            for task, t in by_rate_views(by_rate).items()
        ),
        "<h2>Heatmaps</h2><p>Rows: regularity of the corruption; columns: discovery rate; "
        "<em>start</em>: the starting model before unlearning. Each cell is the mean over seeds.</p>",
    ]
    for m, png in pngs.items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<h3>{html.escape(LABELS.get(m, m))}</h3>"
            f"<img alt='heatmap of {html.escape(m)}' src='data:image/png;base64,{b64}'>"
        )
    cols = [c for c in CELL_COLUMNS if c not in ("regularity", "test_acc", "corrupt_acc", "params", "key")]
    parts.append(
        f"<details><summary>All {len(rows)} cells</summary>" + html_table(cells_view(rows, cols)) + "</details>"
    )
    if failed:
        parts.append("<h2>Failed cells</h2><p>Rerun <code>rem bench</code> with the same run folder to retry.</p>")
        for f in failed:
            parts.append(
                f"<details><summary>{_e(f.get('method'))} {_e(f.get('pretrain_type'))} "
                f"{_e(f.get('task'))} rate {_e(f.get('rate'))} seed {_e(f.get('seed'))}</summary>"
                f"<pre>{html.escape(f.get('error', ''))}</pre></details>"
            )
    grid = meta.get("last_grid")
    parts.append(
        "<h2>Run</h2><details><summary>Environment and grid</summary><pre>"
        + html.escape(
            json.dumps(
                {
                    "env": env,
                    "last_grid": json.loads(grid) if grid else None,
                    "store": {k: v for k, v in meta.items() if k != "last_grid"},
                },
                indent=2,
                default=str,
            )
        )
        + "</pre></details></body></html>\n"
    )
    return "\n".join(parts)
