"""``rem report``: heatmaps, tables and an HTML page from a run folder's results store."""

from __future__ import annotations

import sys

from rem.cli.settings import parse_settings


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="heatmaps, tables and an HTML page from a run folder",
        description="Build the report of <run-dir>/results.sqlite: heatmap_{uxh,healed,utility}.png (rows = "
        "regularity, columns = discovery rate, one panel per method, the starting model as reference "
        "column), table.md/table.csv (mean ± SEM per method, sorted by uxh), cells.csv and one "
        "self-contained report.html.",
    )
    p.add_argument("--run-dir", required=True, help="run folder written by `rem bench`")
    p.add_argument("--out", default=None, help="output folder (default <run-dir>/report)")
    p.add_argument("--methods", default=None, help="comma-separated methods to include (default all in the store)")
    p.add_argument(
        "--pretrain-types",
        default=None,
        help="comma-separated pretraining types to include, e.g. capacity-0.5 (default all in the store)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="[METHOD.]KEY=VALUE",
        help="only cells whose method has this setting at this value (methods without the setting pass), "
        "for one method (rem.beta=0.5) or every method that has it (expand_ratio=1); repeatable",
    )
    p.add_argument(
        "--expand-ratio",
        type=float,
        default=None,
        help="shortcut of --set expand_ratio=R: only cells of this REM extra-capacity ratio (and methods "
        "without one), e.g. 1 to leave out the cells benchmarks/capacity_ratio.py adds to a run folder "
        "(default all)",
    )
    p.add_argument(
        "--split-by",
        default=None,
        metavar="KEY[,KEY]",
        help="method settings shown in the method's label, so that cells differing in them are rows of their "
        "own, e.g. steps to compare unlearning budgets (default: none; such cells are averaged, with a warning)",
    )
    p.add_argument(
        "--metrics",
        default="uxh,healed,utility",
        help="comma-separated metrics to draw heatmaps of (default uxh,healed,utility)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from rem.bench.grid import parse_list
    from rem.paths import check_output_dir
    from rem.report import build_report
    from rem.run import shortcut_settings

    if args.out:
        check_output_dir(args.out, "report folder")
    metrics = parse_list(args.metrics) or ("uxh", "healed", "utility")
    methods = list(parse_list(args.methods) or ()) or None
    where = parse_settings(args.set)
    where["*"] = {**shortcut_settings(expand_ratio=args.expand_ratio), **where.get("*", {})}
    rep = build_report(
        args.run_dir,
        args.out,
        metrics=tuple(metrics),
        methods=methods,
        pretrain_types=list(parse_list(args.pretrain_types) or ()) or None,
        where={m: s for m, s in where.items() if s} or None,
        split_by=tuple(parse_list(args.split_by) or ()),
    )
    sys.stdout.write(rep.table_md.read_text())
    if rep.warning:
        print(rep.warning, file=sys.stderr)
    print(
        f"\n{rep.n_cells} cells ({rep.n_failed} failed); wrote {rep.html}, {rep.table_md}, {rep.table_csv}, "
        f"{rep.cells_csv} and {len(rep.heatmaps)} heatmaps"
    )
    return 0
