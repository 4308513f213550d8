"""``rem report``: heatmaps, tables and one self-contained HTML page from a run folder's results store.

Writes into the output folder (default ``<run_dir>/report``):

- ``heatmap_uxh.png``, ``heatmap_healed.png``, ``heatmap_utility.png``: SPEC §2's Figure 1 (rows =
  regularity, columns = discovery rate, one panel per method, the starting model as reference column);
- ``table.md`` / ``table.csv``: Table 1, mean ± SEM over cells of healed, utility and uxh per method
  and pretraining type, sorted by uxh (plus, in the Markdown, mean uxh per task, uxh per task and
  discovery rate, and the cells where each method collapses, see :func:`rem.report.tables.collapses`);
- ``redirection.png``: REM's per-round history per task (the paper's Fig. 5), when its cells track it;
- ``cells.csv``: every finished cell's metrics (the relearning check's as their own columns, blank for
  cells stored without it);
- ``relearn.csv`` and a "Relearning check" section of ``table.md`` / ``report.html``, when cells have the
  check's figures (:mod:`rem.run.relearn`): per method, task and rate, each with its gap to ``retrain`` at rate 1.0;
- ``defences.csv`` and a "Backdoor defences" section of ``table.md`` / ``report.html``, when the poison cells
  include a backdoor defence's (:mod:`rem.report.defences`): per rate, every method's clean accuracy, ASR and
  healed side by side, and sentences computed from them saying where a defence beats REM;
- ``report.html``: all of it on one page, images embedded (base64), nothing fetched from anywhere.

Everything shows the metrics in percent (the store holds shares), the CSV files to
:data:`~rem.report.tables.CSV_DECIMALS` decimals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rem.report.curves import redirection_png
from rem.report.defences import COLUMNS as DEFENCE_COLUMNS
from rem.report.defences import defence_csv_rows, defence_html, defence_markdown, defence_table
from rem.report.heatmaps import heatmap_png
from rem.report.html import report_html
from rem.report.markdown import report_markdown
from rem.report.relearn import (
    prefer_relearned,
    relearn_columns,
    relearn_html,
    relearn_markdown,
    relearn_share_columns,
    relearn_table,
)
from rem.report.tables import (
    CELL_COLUMNS,
    CSV_DECIMALS,
    METRICS,
    by_rate_table,
    by_task_table,
    collapses,
    flatten,
    in_percent,
    summary_table,
    to_csv,
)
from rem.run.relearn import is_relearn_metric
from rem.units import SHARE_METRICS

HEATMAP_METRICS = ("uxh", "healed", "utility")  # also any relearning metric (relearn_asr_50, ...) on request
KNOWN_METRICS = SHARE_METRICS


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
    defences: list[dict] = field(default_factory=list)  # the "Backdoor defences" table (rem.report.defences)
    warning: str = ""  # set when records of several grids share a run folder
    files: dict[Path, bytes | str] = field(default_factory=dict, repr=False)  # what is written, by path


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
    from rem.methods.base import absent_value
    from rem.settings import coerce_fields

    if not where:
        return True
    method, mc = record.get("method"), record.get("method_config") or {}
    wanted = {**where.get("*", {}), **where.get(method, {})}
    cls = REGISTRY.get(method)
    fields = {f.name: f for f in dataclasses.fields(cls.config_cls)} if cls is not None else {}
    for key, value in wanted.items():
        if key not in mc and not (key in fields and fields[key].metadata.get("keyed_when_set")):
            continue
        if key in fields:
            value = coerce_fields(cls.config_cls, {key: value}, f"method {method!r}")[key]
        # a keyed_when_set setting absent from the record ran at its absent_value
        if mc.get(key, absent_value(fields[key]) if key in fields else None) != value:
            return False
    return True


def _records(run_dir: Path, methods, pretrain_types, where) -> tuple[list[dict], list[dict], dict]:
    """(finished, failed, store meta) of the run folder's store: the records that pass the filters."""
    from rem.bench.store import ResultStore
    from rem.errors import StoreError

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

    records = prefer_relearned([r for r in records if keep(r)])  # a cell once, with the relearning check if any
    failed = [r for r in failed if keep(r)]
    if not records:
        filters = [
            f"methods {methods}" if methods else "",
            f"pretraining types {pretrain_types}" if pretrain_types else "",
            f"settings {where}" if where else "",
        ]
        raise StoreError(
            f"{run_dir / 'results.sqlite'} holds no finished cell"
            + (" of " + ", ".join(f for f in filters if f) if any(filters) else "")
            + ": nothing to report"
        )
    return records, failed, meta


def _mixed_grids_warning(rows: list[dict]) -> str:
    """A warning when records of several grids (other settings, same coordinates) share the run folder."""
    coords: dict[tuple, int] = {}
    for r in rows:
        c = (r["method"], r["pretrain_type"], r["task"], r["rate"], r["seed"])
        coords[c] = coords.get(c, 0) + 1
    mixed = sum(n > 1 for n in coords.values())
    return (
        f"Warning: {mixed} (method, pretraining, task, rate, seed) cells have several records with different "
        "settings (several grids in one run folder); they are averaged together. Use one run folder per grid."
        if mixed
        else ""
    )


def _write_figures(rep: Report, rows, starts, records, metrics) -> dict[str, bytes]:
    """The heatmaps of ``metrics`` and REM's per-round curve (the paper's Fig. 5, when its cells track it);
    returns the PNGs by name for the HTML page."""
    pngs = {}
    for m in metrics:
        pngs[m] = heatmap_png(rows, starts, m, collapsed=rep.collapses)
        rep.heatmaps[m] = rep.out_dir / f"heatmap_{m}.png"
        rep.files[rep.heatmaps[m]] = pngs[m]
    curve = redirection_png(records)
    if curve is not None:
        pngs["redirection"] = curve
        rep.heatmaps["redirection"] = rep.out_dir / "redirection.png"
        rep.files[rep.heatmaps["redirection"]] = curve
    return pngs


def _write_tables(rep: Report, rows, by_task, by_rate, relearned: list[dict]) -> None:
    """table.md (every table), table.csv (Table 1), cells.csv (every cell), relearn.csv (the relearning
    check, when cells have it) and defences.csv (the backdoor defences, when there are any), in percent."""
    md = report_markdown(rep.table, by_task, by_rate, rep.collapses, rep.warning) + relearn_markdown(relearned)
    md += defence_markdown(rep.defences)
    rep.files[rep.table_md] = md
    shares = [f"{m}_{s}" for m in METRICS for s in ("mean", "sem")]
    table_cols = ["method", "pretrain_type", "cells", "tasks", *shares, "seeds", "uxh_seeds_mean", "uxh_seeds_sem"]
    table_cols.append("wall_s_mean")
    shares += ["uxh_seeds_mean", "uxh_seeds_sem"]
    rep.files[rep.table_csv] = to_csv(in_percent(rep.table, shares, CSV_DECIMALS), table_cols)
    relearn_cols = relearn_columns(rows)  # their own columns, blank for cells stored without the check
    rep.files[rep.cells_csv] = to_csv(
        in_percent(rows, (*SHARE_METRICS, *relearn_cols), CSV_DECIMALS), (*CELL_COLUMNS, *relearn_cols)
    )
    if relearned:
        shares = relearn_share_columns(relearned)
        rep.files[rep.out_dir / "relearn.csv"] = to_csv(in_percent(relearned, shares, CSV_DECIMALS))
    if rep.defences:
        rep.files[rep.out_dir / "defences.csv"] = to_csv(defence_csv_rows(rep.defences), DEFENCE_COLUMNS)


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    metrics: tuple[str, ...] = HEATMAP_METRICS,
    methods: list[str] | None = None,
    pretrain_types: list[str] | None = None,
    where: dict[str, dict] | None = None,
    split_by: tuple[str, ...] = (),
    overwrite: bool | None = None,
) -> Report:
    """Build the report of ``<run_dir>/results.sqlite`` into ``out_dir`` (default ``<run_dir>/report``).

    ``methods`` and ``pretrain_types`` restrict it to some methods and pretraining types; ``where`` to the
    cells whose method settings have these values, given as ``rem bench --set`` gives them
    (``{"*": {"expand_ratio": 1}}``: every method that has the setting; ``{"rem": {...}}``: one method),
    cells of methods without the setting passing — e.g. ``expand_ratio`` 1 for a grid's own cells in a
    run folder that ``benchmarks/capacity_ratio.py`` shares. ``split_by``: method settings shown in the
    method's label, making cells that differ in them rows of their own (e.g. ``("steps",)`` to compare
    unlearning budgets). Raises
    :class:`~rem.errors.StoreError` if there is no store, or no finished cell passes the filters.

    Every file is written together by rem's one writer (:mod:`rem.output`). ``overwrite``: replace report
    files already in ``out_dir`` (default: yes for the run folder's own ``report/``, which rem rebuilds
    from the store; no for another folder, where files of that name are refused).
    """
    from rem.errors import ConfigError
    from rem.output import check_folder, write_now

    bad = [m for m in metrics if m not in KNOWN_METRICS and not is_relearn_metric(m)]
    if bad:
        raise ConfigError(f"unknown metric(s) {bad}; known: {', '.join(KNOWN_METRICS)}")
    run_dir = Path(run_dir)
    out = check_folder(Path(out_dir) if out_dir is not None else run_dir / "report", "report folder")
    if overwrite is None:
        overwrite = out_dir is None
    records, failed, meta = _records(run_dir, methods, pretrain_types, where)
    rows = [flatten(r, split_by) for r in records]
    starts = _starts(records)
    by_task, by_rate = by_task_table(rows), by_rate_table(rows, starts)
    rep = Report(
        warning=_mixed_grids_warning(rows),
        out_dir=out,
        html=out / "report.html",
        table_md=out / "table.md",
        table_csv=out / "table.csv",
        cells_csv=out / "cells.csv",
        table=summary_table(rows),
        n_cells=len(records),
        n_failed=len(failed),
        collapses=collapses(rows, starts),
        defences=defence_table(rows),  # the backdoor defences beside the other methods, when there are any
    )
    pngs = _write_figures(rep, rows, starts, records, metrics)
    relearned = relearn_table(rows)  # the relearning check's figures, when cells have them (rem.run.relearn)
    _write_tables(rep, rows, by_task, by_rate, relearned)
    page = report_html(
        run_dir, meta, records, rows, failed, rep.table, by_task, by_rate, rep.collapses, pngs, rep.warning
    )
    # the relearning and defences sections go before the heatmaps (each empty without its figures)
    sections = relearn_html(relearned) + defence_html(rep.defences)
    rep.files[rep.html] = page.replace("<h2>Heatmaps</h2>", sections + "<h2>Heatmaps</h2>", 1)
    write_now(rep.files, overwrite=overwrite, what="report folder")
    return rep
