"""REM's cost relative to pretraining from scratch with the same profile, in one run.

Pretrains the profile's starting model (timed: this is what a retrain from scratch costs), then runs
REM on it at one discovery rate (timed), and prints wall time and peak memory of both and their ratios.

    python benchmarks/unlearn_cost.py [--profile smoke|cpu] [--task poison] [--rate 0.5] [--method rem]
"""

from __future__ import annotations

import argparse

import torch

from rem.api import unlearn
from rem.profiles import get_profile, profile_data, profile_task
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
    prof, dev = get_profile(args.profile), pick_device(args.device)
    data = profile_data(prof)
    task = profile_task(prof, args.task, 0, data=data)
    with measure(dev) as pre:
        model = pretrain(task, prof.arch_spec(data.num_classes), "capacity-0.5", prof.pretrain, device=dev)
    u = prof.unlearn
    with measure(dev) as unl:
        unlearn(model, task, task.forget_idx(args.rate), args.method, device=dev, steps=u.steps, lr=u.lr,
                batch_size=u.batch_size, optimizer=u.optimizer, weight_decay=u.weight_decay)
    print(f"profile {prof.name}, task {args.task}, rate {args.rate}, device {dev}, "
          f"{torch.get_num_threads()} threads; memory: {pre.mem_kind}")
    print(f"pretraining from scratch: {pre.wall_s:8.1f} s  {pre.peak_mem_mb:8.1f} MB")
    print(f"{args.method:<24}: {unl.wall_s:8.1f} s  {unl.peak_mem_mb:8.1f} MB")
    print(f"ratio {args.method}/pretraining: time {unl.wall_s / pre.wall_s:.2f}x, "
          f"peak memory {unl.peak_mem_mb / max(pre.peak_mem_mb, 1e-9):.2f}x")


if __name__ == "__main__":
    main()
