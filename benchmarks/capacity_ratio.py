"""REM with a fraction of the extra capacity: r ∈ {1, 1/2, 1/4, 1/8, 1/16}, relative to r = 1, in one run.

For a ``full`` and a ``capacity-0.5`` starting model of the profile, each task at one discovery rate:
uxh, healed, utility (in percent), unlearning wall time and peak memory for every ratio r, each also as
a ratio to the r = 1 run of the same model and task.

Every run is a cell of ``rem bench`` (one grid per r, methods = rem), written to the results store of
``--run-dir``: starting models are pretrained once and cached there (the capacity-0.5 ones are the
same files the ``rem bench --profile <p>`` grid uses when the run folder is shared), and an interrupted
benchmark resumes where it stopped. Wall time and peak memory are those of the unlearning alone.

    python benchmarks/capacity_ratio.py --profile cpu --run-dir runs/cpu [--tasks poison,interclass,random]
        [--rate 0.5] [--ptypes full,capacity-0.5] [--full-width W] [--ratios 1,0.5,0.25,0.125,0.0625]
        [--report-only]

``--report-only`` computes nothing and prints the table of the cells the store already holds (the
relative columns read "–" where the r = 1 cell of that model and task has not run, or where its value rounds
to 0.0 in the table, as uxh does where REM fails).

``--full-width`` is the ResNet-9 width multiplier of the ``full`` model (default: the profile's, i.e. a
model as wide as the capacity-0.5 model would be with its reserve). In ``rem`` a capacity-0.5 model
*is* an ordinary network of half that width, so a ``full`` model of width w/2 is the same network as
the capacity-0.5 model of width w.
"""

from __future__ import annotations

import argparse

from rem.bench.executors import run_grid
from rem.bench.grid import Grid, parse_list
from rem.bench.store import ResultStore
from rem.profiles import get_profile
from rem.units import percent_metrics

RATIOS = (1.0, 0.5, 0.25, 0.125, 0.0625)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--run-dir", default=None, help="run folder (default runs/capacity-<profile>)")
    ap.add_argument("--tasks", default="poison,interclass,random")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--ptypes", default="full,capacity-0.5")
    ap.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS))
    ap.add_argument("--full-width", type=float, default=None, help="width multiplier of the full model")
    ap.add_argument("--steps", type=int, default=None, help="override the unlearning step budget")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--report-only", action="store_true", help="compute nothing: print the table of the cells already in the store"
    )
    args = ap.parse_args()
    run_dir = args.run_dir or f"runs/capacity-{args.profile}"
    ratios = parse_list(args.ratios, float)
    tasks = parse_list(args.tasks)
    get_profile(args.profile)  # fail early on a bad name

    rows = []
    for ptype in parse_list(args.ptypes):
        width = args.full_width if ptype == "full" else None
        for kind in tasks:
            group = []
            for r in ratios:
                # r = 1 is REM's default: that cell is the same as the `rem` cell of the main grid
                grid = Grid(
                    profile=args.profile,
                    methods=("rem",),
                    tasks=(kind,),
                    rates=(args.rate,),
                    pretrain_types=(ptype,),
                    expand_ratio=None if r == 1 else r,
                    width=width,
                    steps=args.steps,
                )
                (cell,) = grid.cells()
                if not args.report_only:
                    run_grid(grid, run_dir, device=args.device, data_dir=args.data_dir, progress=False)
                with ResultStore.in_run_dir(run_dir) as store:
                    rec = store.get(cell.key)
                    start = store.model(cell.start_key)
                if rec is None and args.report_only:
                    print(f"{ptype} {kind} r={r:g}: not run yet", flush=True)
                    continue
                if rec is None:
                    raise SystemExit(f"cell {cell.label()} failed; see {run_dir}/results.sqlite")
                ev = percent_metrics(rec["metrics"])  # shown in percent
                group.append(
                    (
                        ptype,
                        kind,
                        r,
                        (ev["uxh"], ev["healed"], ev["utility"], rec["wall_s"], rec["peak_mem_mb"]),
                        start["metrics"]["params"] if start else "?",
                    )
                )
                print(
                    f"{ptype} {kind} r={r:g}: uxh {ev['uxh']:.1f} healed {ev['healed']:.1f} "
                    f"utility {ev['utility']:.1f} wall {rec['wall_s']:.0f} s",
                    flush=True,
                )
            ref = next((g[3] for g in group if g[2] == 1), None)  # relative to r = 1 when it ran
            rows += [(*g[:4], ref, g[4]) for g in sorted(group, key=lambda g: -g[2])]
    print()
    print(HEADER)
    for row in rows:
        print(_fmt(row))


HEADER = (
    "| model | params | task | r | uxh | healed | utility | wall s | peak MB | uxh/uxh(r=1) | time/time(r=1) "
    "| mem/mem(r=1) |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _fmt(entry) -> str:
    ptype, kind, r, row, ref, params = entry
    # a ratio to a reference that rounds to 0 in the table (e.g. uxh 0.0 where REM fails) would be noise: "–"
    rel = " | ".join(f"{row[i] / ref[i]:.2f}" if ref and round(ref[i], 1) > 0 else "–" for i in (0, 3, 4))
    return (
        f"| {ptype} | {params} | {kind} | {r:g} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.0f} | "
        f"{row[4]:.0f} | {rel} |"
    )


if __name__ == "__main__":
    main()
