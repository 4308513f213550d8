"""Where a REM cell's time goes: wall seconds per phase (step 2, step 3, the proxy, the masked accuracy,
the analysis-only tracking) of one ``rem`` run on a stored starting model, one thread.

    python benchmarks/rem_phases.py --model runs/cpu/models/<start>.safetensors --task poison [--rate 0.5]
        [--steps 100] [--method rem]

Timers wrap the functions REM calls (no change to what it computes); the rest of the cell (expansion,
reference, selection bookkeeping) is "other". Prints a table of seconds and shares of the run.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a starting model written by rem bench or rem train")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--method", default="rem")
    ap.add_argument("--task", required=True, help="the starting model's task: poison, interclass or random")
    ap.add_argument("--profile", default="cpu", help="the starting model's profile (its data and recipe)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import rem.methods.rem as rem_mod
    from rem.checkpoint import load_checkpoint
    from rem.methods import Context, get_method
    from rem.profiles import get_profile, profile_task

    spent: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0

        return wrapper

    rem_mod.remove_phase = timed("step 2 (remove)", rem_mod.remove_phase)
    rem_mod.redirect_epoch = timed("step 3 (redirect)", rem_mod.redirect_epoch)
    rem_mod._Selection.score = timed("step 4 (proxy)", rem_mod._Selection.score)
    rem_mod.accuracy = timed("masked acc on D_f", rem_mod.accuracy)
    rem_mod._track = timed("track (analysis)", rem_mod._track)
    profile = get_profile(args.profile)
    model, _ = load_checkpoint(args.model)
    task = profile_task(profile, args.task, seed=0)
    fi = task.forget_idx(args.rate)
    recipe = profile.unlearn
    method = get_method(args.method, steps=args.steps, batch_size=recipe.batch_size, lr=recipe.lr)
    t0 = time.perf_counter()
    out = method.unlearn(model, task, fi, Context(pretrain_recipe=profile.pretrain))
    total = time.perf_counter() - t0
    rounds = [h for h in out.history if "round" in h]
    print(f"{args.method} {task.kind} rate {args.rate} steps {args.steps}: {total:.1f} s, {len(rounds)} rounds")
    inner = sum(spent.values()) - spent["track (analysis)"]  # _track's time includes nothing else timed
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:20s} {s:7.1f} s  {100 * s / total:5.1f} %")
    print(f"  {'other':20s} {total - inner - spent['track (analysis)']:7.1f} s")


if __name__ == "__main__":
    main()
