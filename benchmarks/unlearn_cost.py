"""REM's cost relative to pretraining from scratch with the same profile, in one run.

Pretrains the profile's starting model (timed: this is what a retrain from scratch costs), then runs
REM on it at one discovery rate (timed), and prints wall time and peak memory of both and their ratios.

    python benchmarks/unlearn_cost.py [--profile smoke|cpu] [--task poison] [--rate 0.5] [--method rem]
"""

from __future__ import annotations

import argparse

import torch

from rem.bench.grid import Grid
from rem.profiles import profile_data, profile_task
from rem.run import unlearn_and_record
from rem.runtime import measure, pick_device
from rem.train import pretrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--task", default="poison")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--method", default="rem")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    # the cell `rem bench` would run (same settings, rem.run.method_settings), on a starting model timed here
    (cell,) = Grid(
        profile=args.profile,
        methods=(args.method,),
        tasks=(args.task,),
        rates=(args.rate,),
        seeds=(0,),
        pretrain_types=("capacity-0.5",),
    ).cells()
    prof, dev = cell.profile, pick_device(args.device)
    data = profile_data(prof)
    task = profile_task(prof, args.task, 0, data=data)
    with measure(dev) as pre:
        model = pretrain(task, prof.arch_spec(data.num_classes), "capacity-0.5", prof.pretrain, device=dev)
    _, rec = unlearn_and_record(cell, model, task, task.forget_idx(args.rate), start_meta={}, device=dev)
    print(
        f"profile {prof.name}, task {args.task}, rate {args.rate}, device {dev}, "
        f"{torch.get_num_threads()} threads; memory: {pre.mem_kind}"
    )
    print(f"pretraining from scratch: {pre.wall_s:8.1f} s  {pre.peak_mem_mb:8.1f} MB")
    print(f"{args.method:<24}: {rec['wall_s']:8.1f} s  {rec['peak_mem_mb']:8.1f} MB")
    print(
        f"ratio {args.method}/pretraining: time {rec['wall_s'] / pre.wall_s:.2f}x, "
        f"peak memory {rec['peak_mem_mb'] / max(pre.peak_mem_mb, 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
