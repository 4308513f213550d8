"""REM through the generic wrapper (side branches, :mod:`rem.models.generic`) against today's channel
expansion, on the same starting models, in one run.

For each task at one discovery rate: the starting model of the profile (pretrained once and cached in
``--run-dir/models``, the same files ``rem bench`` uses), then REM with its built-in expansion
(``capacity="native"``: every block gets r·width new channels) and REM through the generic wrapper
(``capacity="generic"``: every Conv2d / Linear but the classifier gets a gated, zero-initialised side
branch of r·width units), both with the profile's unlearning budget. Printed as a Markdown table:
uxh, healed, utility, ASR, unlearning wall time. Each finished row is appended to ``--out`` (JSON
lines, metrics as shares like every rem record), and a rerun skips the rows already there.

    python benchmarks/generic_vs_native.py --profile cpu --run-dir runs/cpu [--tasks poison,interclass,random]
        [--capacities native,generic] [--branch-init zero|default]
        [--rate 0.5] [--pretrain-type capacity-0.5] [--out runs/cpu/generic_vs_native.jsonl]

The ``cpu`` profile's starting models are ``capacity-0.5`` ResNet-9s: block outputs at half width, the
residual blocks' hidden layers at full width (since issue 13), never gated; in ``drop`` mode an ordinary
network, so this compares the two on the grid's own models (``--pretrain-type full`` pretrains
full-width ones, about four times the cost). The settings are the ones ``rem bench`` gives REM
(:func:`rem.run.method_settings`: the profile's unlearning recipe and ``--seed``). Rows are keyed by the
starting model's key (which holds the model layout version), so rows of older code are not reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rem.bench.cell import StartSpec, ensure_start, make_cell_task
from rem.checkpoint import load_checkpoint
from rem.cli.settings import settings_for
from rem.metrics import evaluate
from rem.profiles import get_profile
from rem.run import method_settings, shortcut_settings
from rem.runtime import measure, pick_device
from rem.units import percent_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--run-dir", required=True, help="run folder (starting models cached in RUN/models)")
    ap.add_argument("--tasks", default="poison,interclass,random")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--pretrain-type", default="capacity-0.5", choices=["capacity-0.5", "full"])
    ap.add_argument("--expand-ratio", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--branch-init",
        default="zero",
        choices=["zero", "default"],
        help="the generic branches' up projection: zero (LoRA's B, the default) or default-initialised",
    )
    ap.add_argument("--capacities", default="native,generic", help="which of native,generic to run")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a REM setting, repeatable")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="JSON-lines file of the rows (default RUN/generic_vs_native.jsonl)")
    args = ap.parse_args()

    import rem

    profile = get_profile(args.profile)
    dev = pick_device(args.device)
    out = Path(args.out or Path(args.run_dir) / "generic_vs_native.jsonl")
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            key = (r.get("start_key"), r["rate"], r["capacity"], r["expand_ratio"], r.get("branch_init", "zero"))
            done[key + (json.dumps(r.get("sets", {}), sort_keys=True),)] = r
    sets = settings_for(args.set, "rem")  # the same keys as before for plain KEY=VALUE items: cached rows stay
    overrides = method_settings(
        "rem", profile, args.seed, {"rem": sets}, shortcut_settings(expand_ratio=args.expand_ratio)
    )
    rows = []
    for kind in [t for t in args.tasks.split(",") if t]:
        spec = StartSpec(profile, args.pretrain_type, kind, args.seed)
        start_rec = ensure_start(spec, args.run_dir, device=dev, data_dir=args.data_dir)
        model, _ = load_checkpoint(spec.path(args.run_dir), dev)
        task = make_cell_task(spec, args.data_dir)
        fi = task.forget_idx(args.rate)
        for capacity in [c for c in args.capacities.split(",") if c]:
            binit = args.branch_init if capacity == "generic" else "zero"
            key = (spec.key, args.rate, capacity, args.expand_ratio, binit, json.dumps(sets, sort_keys=True))
            if key in done:
                rows.append(done[key])
                continue
            print(f"{kind}: REM {capacity} (branch init {binit}) ...", flush=True)
            with measure(dev) as m:
                healed, history = rem.unlearn(
                    model,
                    task,
                    fi,
                    "rem",
                    device=dev,
                    pretrain_type=args.pretrain_type,
                    capacity=capacity,
                    branch_init=binit,  # only the generic path has branches
                    **overrides,
                )
            met = evaluate(healed, task, fi, device=dev)
            row = {
                "profile": profile.name,
                "start_key": spec.key,
                "task": kind,
                "rate": args.rate,
                "pretrain_type": args.pretrain_type,
                "seed": args.seed,
                "capacity": capacity,
                "expand_ratio": args.expand_ratio,
                "branch_init": binit,
                "sets": sets,
                "metrics": met,
                "start_metrics": start_rec["metrics"],
                "wall_s": m.wall_s,
                "peak_mem_mb": m.peak_mem_mb,
                "best_round": history[-1].get("best_round"),
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(json.dumps(row, default=float) + "\n")
            rows.append(row)
    print(
        f"\nREM at discovery {args.rate}, profile {profile.name}, {args.pretrain_type} starting models, "
        f"r = {args.expand_ratio}\n"
    )
    print("| task | capacity | uxh | healed | utility | ASR | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["capacity"] == "native":
            s = percent_metrics(r["start_metrics"])
            print(
                f"| {r['task']} | start | {s['uxh']:.1f} | {s['healed']:.1f} | {s['utility']:.1f} | "
                f"{s.get('asr', float('nan')):.1f} | – |".replace("nan", "–")
            )
        m = percent_metrics(r["metrics"])
        binit = r.get("branch_init", "zero")
        name = r["capacity"] + (f" (up init {binit})" if binit != "zero" else "")
        print(
            f"| {r['task']} | {name} | {m['uxh']:.1f} | {m['healed']:.1f} | {m['utility']:.1f} | "
            f"{m.get('asr', float('nan')):.1f} | {r['wall_s']:.0f} |".replace("nan", "–")
        )


if __name__ == "__main__":
    main()
