"""``rem report``: heatmaps, tables and one self-contained HTML page from a run folder's results store.

Writes into the output folder (default ``<run_dir>/report``):

- ``heatmap_uxh.png``, ``heatmap_healed.png``, ``heatmap_utility.png``: SPEC §2's Figure 1 (rows =
  regularity, columns = discovery rate, one panel per method, the starting model as reference column);
- ``table.md`` / ``table.csv``: Table 1, mean ± SEM over cells of healed, utility and uxh per method
  and pretraining type, sorted by uxh (plus, in the Markdown, mean uxh per task, uxh per task and
  discovery rate, and the cells where each method collapses, see :func:`rem.report.tables.collapses`);
- ``redirection.png``: REM's per-round history per task (the paper's Fig. 5), when its cells track it;
- ``cells.csv``: every finished cell's metrics;
- ``report.html``: all of it on one page, images embedded (base64), nothing fetched from anywhere.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from rem.paths import write_atomic
from rem.report.curves import redirection_png
from rem.report.heatmaps import LABELS, heatmap_png
from rem.report.tables import (
    CELL_COLUMNS,
    by_rate_markdown,
    by_rate_table,
    by_task_markdown,
    by_task_table,
    collapse_markdown,
    collapse_where,
    collapses,
    flatten,
    fmt_pm,
    summary_markdown,
    summary_table,
    to_csv,
)

HEATMAP_METRICS = ("uxh", "healed", "utility")
KNOWN_METRICS = ("uxh", "healed", "utility", "healed_test", "forget_acc", "asr", "test_acc", "corrupt_acc")


@dataclass
class Report:
    """Paths of what :func:`build_report` wrote, and the summary table."""

    out_dir: Path
    html: Path
    table_md: Path
    table_csv: Path
    cells_csv: Path
    heatmaps: dict[str, Path] = field(default_factory=dict)
    table: list[dict] = field(default_factory=list)
    n_cells: int = 0
    n_failed: int = 0
    collapses: list[dict] = field(default_factory=list)  # per method: the (task, rate) cells that collapse
    warning: str = ""  # set when records of several grids share a run folder


def _starts(records: list[dict]) -> list[dict]:
    """The distinct starting models of the records (their metrics before unlearning)."""
    seen: dict[str, dict] = {}
    for r in records:
        if r.get("start_metrics") and r.get("start_key") not in seen:
            seen[r["start_key"]] = {
                "task": r["task"],
                "pretrain_type": r["pretrain_type"],
                "seed": r["seed"],
                "metrics": r["start_metrics"],
            }
    return list(seen.values())


def settings_match(record: dict, where: dict[str, dict] | None) -> bool:
    """Whether ``record``'s method settings have the values of ``where`` (``{"*" or method: {key: value}}``,
    each value parsed by the method's field type); a setting the method does not have is no obstacle."""
    from rem.methods import REGISTRY
    from rem.settings import coerce_fields

    if not where:
        return True
    method, mc = record.get("method"), record.get("method_config") or {}
    wanted = {**where.get("*", {}), **where.get(method, {})}
    cls = REGISTRY.get(method)
    for key, value in wanted.items():
        if key not in mc:
            continue
        if cls is not None and key in {f.name for f in dataclasses.fields(cls.config_cls)}:
            value = coerce_fields(cls.config_cls, {key: value}, f"method {method!r}")[key]
        if mc[key] != value:
            return False
    return True


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    metrics: tuple[str, ...] = HEATMAP_METRICS,
    methods: list[str] | None = None,
    pretrain_types: list[str] | None = None,
    where: dict[str, dict] | None = None,
) -> Report:
    """Build the report of ``<run_dir>/results.sqlite`` into ``out_dir`` (default ``<run_dir>/report``).

    ``methods`` and ``pretrain_types`` restrict it to some methods and pretraining types; ``where`` to the
    cells whose method settings have these values, given as ``rem bench --set`` gives them
    (``{"*": {"expand_ratio": 1}}``: every method that has the setting; ``{"rem": {...}}``: one method),
    cells of methods without the setting passing — e.g. ``expand_ratio`` 1 for a grid's own cells in a
    run folder that ``benchmarks/capacity_ratio.py`` shares. Raises
    :class:`~rem.errors.StoreError` if there is no store, or no finished cell passes the filters.
    """
    from rem.bench.store import ResultStore
    from rem.errors import ConfigError, StoreError

    bad = [m for m in metrics if m not in KNOWN_METRICS]
    if bad:
        raise ConfigError(f"unknown metric(s) {bad}; known: {', '.join(KNOWN_METRICS)}")
    from rem.paths import check_output_dir

    run_dir = Path(run_dir)
    out = check_output_dir(Path(out_dir) if out_dir is not None else run_dir / "report", "report folder")
    with ResultStore.in_run_dir(run_dir, create=False) as store:
        records = store.records("done")
        failed = store.records("failed")
        meta = store.meta()
    def keep(r: dict) -> bool:
        if methods and r.get("method") not in methods:
            return False
        if pretrain_types and r.get("pretrain_type") not in pretrain_types:
            return False
        return settings_match(r, where)

    records = [r for r in records if keep(r)]
    failed = [r for r in failed if keep(r)]
    if not records:
        filters = [f"methods {methods}" if methods else "", f"pretraining types {pretrain_types}"
                   if pretrain_types else "", f"settings {where}" if where else ""]
        raise StoreError(
            f"{run_dir / 'results.sqlite'} holds no finished cell"
            + (" of " + ", ".join(f for f in filters if f) if any(filters) else "")
            + ": nothing to report"
        )
    out.mkdir(parents=True, exist_ok=True)
    rows = [flatten(r) for r in records]
    coords: dict[tuple, int] = {}
    for r in rows:
        c = (r["method"], r["pretrain_type"], r["task"], r["rate"], r["seed"])
        coords[c] = coords.get(c, 0) + 1
    mixed = sum(n > 1 for n in coords.values())
    warning = (
        f"Warning: {mixed} (method, pretraining, task, rate, seed) cells have several records with different "
        "settings (several grids in one run folder); they are averaged together. Use one run folder per grid."
        if mixed
        else ""
    )
    starts = _starts(records)
    table = summary_table(rows)
    by_task = by_task_table(rows)
    by_rate = by_rate_table(rows, starts)
    collapsed = collapses(rows, starts)
    rep = Report(
        warning=warning,
        out_dir=out,
        html=out / "report.html",
        table_md=out / "table.md",
        table_csv=out / "table.csv",
        cells_csv=out / "cells.csv",
        table=table,
        n_cells=len(records),
        n_failed=len(failed),
        collapses=collapsed,
    )
    pngs = {}
    for m in metrics:
        pngs[m] = heatmap_png(rows, starts, m, collapsed=collapsed)
        rep.heatmaps[m] = write_atomic(out / f"heatmap_{m}.png", pngs[m])
    curve = redirection_png(records)
    if curve is not None:  # the paper's Fig. 5, from REM's per-round history
        pngs["redirection"] = curve
        rep.heatmaps["redirection"] = write_atomic(out / "redirection.png", curve)
    md = (
        "# Benchmark results\n\nMean ± SEM over cells (tasks × discovery rates × seeds), sorted by uxh.\n\n"
        + (f"**{warning}**\n\n" if warning else "")
        + summary_markdown(table)
        + "\n"
        + by_task_markdown(by_task)
        + "\n"
        + by_rate_markdown(by_rate)
        + "\n"
        + collapse_markdown(collapsed)
    )
    write_atomic(rep.table_md, md)
    write_atomic(
        rep.table_csv,
        to_csv(
            table,
            [
                "method",
                "pretrain_type",
                "cells",
                "tasks",
                "healed_mean",
                "healed_sem",
                "utility_mean",
                "utility_sem",
                "uxh_mean",
                "uxh_sem",
                "wall_s_mean",
            ],
        ),
    )
    write_atomic(rep.cells_csv, to_csv(rows, CELL_COLUMNS))
    write_atomic(rep.html, _html(run_dir, meta, records, rows, failed, table, by_task, by_rate, collapsed, pngs, warning))
    return rep


# --- HTML -----------------------------------------------------------------------------------------

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


def _html_table(head: list[str], body: list[list], left: int = 1) -> str:
    """A table whose first ``left`` columns, and every column holding text, are left-aligned."""
    text_cols = {i for line in body for i, v in enumerate(line) if _is_text(v)}
    left_cols = set(range(left)) | text_cols
    th = "".join(
        f'<th class="l">{html.escape(h)}</th>' if i in left_cols else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(head)
    )
    rows = []
    for line in body:
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="l">{_e(v)}</td>' if i in left_cols else f"<td>{_e(v)}</td>" for i, v in enumerate(line)
            )
            + "</tr>"
        )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html(
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
    from rem.data.tasks import KINDS, REGULARITY
    from rem.report.tables import COLLAPSE_UTILITY_DROP, COLLAPSE_UXH_GAIN

    env = records[0].get("env", {})
    profile = records[0].get("config", {}).get("profile", {})
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rem benchmark: "
        f"{html.escape(run_dir.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>rem benchmark: {html.escape(str(run_dir))}</h1>",
        f"<p>{len(records)} finished cells, {len(failed)} failed; profile <code>{_e(profile.get('name'))}"
        f"</code> ({_e(profile.get('dataset'))}, {_e(profile.get('arch'))}, |D_c| = "
        f"{_e(profile.get('n_corrupt'))}); rem {_e(env.get('rem'))}, torch {_e(env.get('torch'))}, "
        f"{_e(env.get('device'))}. Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>",
        f"<p style='color:#a00'><strong>{html.escape(warning)}</strong></p>" if warning else "",
        "<h2>Summary (Table 1)</h2><p>Mean ± SEM over cells (tasks × discovery rates × seeds), sorted by "
        "uxh = healed × utility / 100.</p>",
        _html_table(
            ["method", "pretrain", "cells", "healed", "utility", "uxh", "wall s (mean)"],
            [
                [
                    r["method"],
                    r["pretrain_type"],
                    r["cells"],
                    fmt_pm(r["healed_mean"], r["healed_sem"]),
                    fmt_pm(r["utility_mean"], r["utility_sem"]),
                    fmt_pm(r["uxh_mean"], r["uxh_sem"]),
                    r["wall_s_mean"],
                ]
                for r in table
            ],
            left=2,
        ),
        "<h3>Mean uxh per task</h3>",
        _html_table(
            ["method", "pretrain"] + [f"{k} ({REGULARITY[k]})" for k in KINDS],
            [[r["method"], r["pretrain_type"]] + [r[k] for k in KINDS] for r in by_task],
            left=2,
        ),
        f"<h3>Where methods collapse</h3><p>A cell collapses when its uxh is less than {COLLAPSE_UXH_GAIN:g} "
        f"points above the starting model's (no healing) or its utility more than {COLLAPSE_UTILITY_DROP:g} "
        "points below it (utility).</p>",
        _html_table(
            ["method", "pretrain", "collapsed / cells", "where"],
            [[e["method"], e["pretrain_type"], f"{len(e['collapsed'])} / {e['cells']}", collapse_where(e)]
             for e in collapsed],
            left=2,
        ),
        "<h3>uxh per task and discovery rate</h3>",
        *(
            f"<h4>{html.escape(task)} ({html.escape(REGULARITY[task])} regularity)</h4>"
            + _html_table(
                ["method", "pretrain", "start"] + [f"{k:g}" for k in lines[0]["by_rate"]],
                [[ln["method"], ln["pretrain_type"], ln["start"], *ln["by_rate"].values()] for ln in lines],
                left=2,
            )
            for task, lines in by_rate.items()
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
        f"<details><summary>All {len(rows)} cells</summary>"
        + _html_table(cols, [[r.get(c) for c in cols] for r in rows], left=3)
        + "</details>"
    )
    if failed:
        parts.append(
            "<h2>Failed cells</h2><p>Rerun <code>rem bench</code> with the same run folder to retry.</p>"
        )
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


__all__ = ["HEATMAP_METRICS", "Report", "build_report"]
