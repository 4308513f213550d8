"""``rem report``: heatmaps, tables and an HTML page from a run folder's results store."""

from __future__ import annotations

import sys

from rem.cli.args import number_in
from rem.cli.settings import parse_settings


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="heatmaps, tables and an HTML page from a run folder",
        description="Build the report of <run-dir>/results.sqlite: heatmap_{uxh,healed,utility}.png (rows = "
        "regularity, columns = discovery rate, one panel per method, the starting model as reference "
        "column), table.md/table.csv (mean ± SEM per method, sorted by uxh), cells.csv and one "
        "self-contained report.html; relearn.csv when cells have the relearning check, defences.csv (and a "
        "'Backdoor defences' section) when the poison cells include a backdoor defence's.",
    )
    p.add_argument("--run-dir", required=True, help="run folder written by `rem bench`")
    p.add_argument("--out", default=None, help="output folder (default <run-dir>/report)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace report files already in --out (the run folder's own report/ is always rebuilt)",
    )
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
        type=number_in(0),
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


def _check_filters(where: dict) -> None:
    """Refuse a ``--set`` filter that no cell could ever match: an unknown method, or a setting that the
    method (or, without a method, every method) does not have. It would otherwise pass every cell."""
    from rem.errors import ConfigError
    from rem.methods import REGISTRY, method_names
    from rem.settings import field_types

    fields = {m: set(field_types(cls.config_cls)) for m, cls in REGISTRY.items()}
    for method, settings in where.items():
        if method != "*" and method not in REGISTRY:
            raise ConfigError(f"--set {method}.…: no method {method!r}; known: {', '.join(method_names())}")
        for key in settings:
            has = fields[method] if method != "*" else set().union(*fields.values())
            if key not in has:
                owner = f"method {method!r}" if method != "*" else "no method"
                raise ConfigError(f"--set {key}: {owner} has no setting {key!r} (`rem methods --settings NAME`)")


def _listed(text: str | None, option: str):
    """A comma-separated option (None: not given); an empty list is refused."""
    from rem.bench.grid import parse_list
    from rem.errors import ConfigError

    items = parse_list(text)
    if items is not None and not items:
        raise ConfigError(f"{option} {text!r} lists nothing: name at least one, or leave {option} out for all")
    return list(dict.fromkeys(items)) if items else None


def run(args) -> int:
    from rem.report import build_report
    from rem.run import shortcut_settings

    metrics = _listed(args.metrics, "--metrics")
    methods = _listed(args.methods, "--methods")
    where = parse_settings(args.set)
    _check_filters(where)
    where["*"] = {**shortcut_settings(expand_ratio=args.expand_ratio), **where.get("*", {})}
    rep = build_report(
        args.run_dir,
        args.out,
        metrics=tuple(metrics),
        methods=methods,
        pretrain_types=_listed(args.pretrain_types, "--pretrain-types"),
        where={m: s for m, s in where.items() if s} or None,
        overwrite=True if args.overwrite or args.out is None else None,
        split_by=tuple(_listed(args.split_by, "--split-by") or ()),
    )
    sys.stdout.write(rep.table_md.read_text())
    if rep.warning:
        print(rep.warning, file=sys.stderr)
    print(
        f"\n{rep.n_cells} cells ({rep.n_failed} failed); wrote {rep.html}, {rep.table_md}, {rep.table_csv}, "
        f"{rep.cells_csv} and {len(rep.heatmaps)} heatmaps"
    )
    return 0
