"""Seed-to-seed noise of a grid (issue 15's results guard): per method, seed ``--seed-b`` against seed
``--seed-a`` on the (task, rate) cells both have: mean uxh of each, and mean / largest |Δ| of one cell.

    python benchmarks/seed_noise.py --run-dir runs/cpu [--methods rem,npo] [--seed-a 0 --seed-b 1]

Only the grid's own cells are compared: capacity-0.5 starting models and, by default, the settings filter
of the README's ``cpu`` report (expand_ratio 1, extra_init default, select_on clean, forget_bn_frozen
false), which leaves out the measurement cells that share ``runs/cpu``; ``--set KEY=VALUE`` replaces it
(``rem report``'s filter, :func:`rem.report.build.settings_match`).
"""

from __future__ import annotations

import argparse

from rem.bench.store import ResultStore
from rem.cli.settings import parse_settings
from rem.report.build import settings_match

DEFAULT_METHODS = "rem,npo,eu-4,retrain,scrub,potion"
DEFAULT_SETS = ["expand_ratio=1", "extra_init=default", "select_on=clean", "forget_bn_frozen=false"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--seed-a", type=int, default=0)
    ap.add_argument("--seed-b", type=int, default=1)
    ap.add_argument("--pretrain-type", default="capacity-0.5")
    ap.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", help="settings filter, repeatable")
    a = ap.parse_args()
    methods = a.methods.split(",")
    where = parse_settings(a.set if a.set is not None else DEFAULT_SETS)
    cells: dict[tuple, dict[int, list[float]]] = {}
    with ResultStore.in_run_dir(a.run_dir, create=False) as s:
        for rec in s.records("done"):
            if rec["method"] in methods and rec.get("pretrain_type") == a.pretrain_type and settings_match(rec, where):
                key = (rec["method"], rec["task"], round(float(rec["rate"]), 6))
                cells.setdefault(key, {}).setdefault(rec["seed"], []).append(100 * rec["metrics"]["uxh"])
    print(f"uxh %, seed {a.seed_b} vs seed {a.seed_a} on the cells both have")
    for m in methods:
        both = [(k, v) for k, v in sorted(cells.items()) if k[0] == m and a.seed_a in v and a.seed_b in v]
        if not both:
            print(f"{m:8s} no cell with both seeds")
            continue
        xa = [sum(v[a.seed_a]) / len(v[a.seed_a]) for _, v in both]
        xb = [sum(v[a.seed_b]) / len(v[a.seed_b]) for _, v in both]
        d = [abs(p - q) for p, q in zip(xa, xb)]
        print(
            f"{m:8s} cells {len(both):2d}  seed {a.seed_a} {sum(xa) / len(xa):5.1f}  seed {a.seed_b} "
            f"{sum(xb) / len(xb):5.1f}  |Δ| per cell mean {sum(d) / len(d):4.1f} max {max(d):4.1f}"
        )


if __name__ == "__main__":
    main()
