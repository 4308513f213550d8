"""REM with a fraction of the extra capacity: r ∈ {1/16, 1/8, 1/4, 1/2, 1}, relative to r = 1, in one run.

For a full-width and a capacity-0.5 starting model of the profile, each task at one discovery rate:
uxh, healed, utility, unlearning wall time and peak memory for every ratio r, each also as a ratio to
the r = 1 run of the same model and task.

    python benchmarks/capacity_ratio.py [--profile cpu] [--tasks poison,interclass,random] [--rate 0.5]
"""

from __future__ import annotations

import argparse

from rem.api import unlearn
from rem.metrics import evaluate
from rem.profiles import get_profile, profile_data, profile_task
from rem.runtime import measure, pick_device
from rem.train import pretrain

RATIOS = (1.0, 0.5, 0.25, 0.125, 0.0625)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--tasks", default="poison,interclass,random")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--ptypes", default="full,capacity-0.5")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    prof, dev = get_profile(args.profile), pick_device(args.device)
    data = profile_data(prof)
    u = prof.unlearn
    print("| model | task | r | uxh | healed | utility | wall s | peak MB | uxh/uxh(r=1) | time/time(r=1) "
          "| mem/mem(r=1) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ptype in args.ptypes.split(","):
        for kind in args.tasks.split(","):
            task = profile_task(prof, kind, 0, data=data)
            model = pretrain(task, prof.arch_spec(data.num_classes), ptype, prof.pretrain, device=dev)
            fi = task.forget_idx(args.rate)
            ref = None
            for r in RATIOS:
                with measure(dev) as m:
                    healed = unlearn(model, task, fi, "rem", device=dev, steps=u.steps, lr=u.lr,
                                     batch_size=u.batch_size, optimizer=u.optimizer, expand_ratio=r)
                ev = evaluate(healed, task, fi, device=dev)
                row = (ev["uxh"], ev["healed"], ev["utility"], m.wall_s, m.peak_mem_mb)
                ref = ref or row
                print(f"| {ptype} | {kind} | {r:g} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.0f} | "
                      f"{row[4]:.0f} | {row[0] / max(ref[0], 1e-9):.2f} | {row[3] / ref[3]:.2f} | "
                      f"{row[4] / max(ref[4], 1e-9):.2f} |", flush=True)


if __name__ == "__main__":
    main()
