"""Does the relearning check tell a model trained clean from one that holds the corruption?

The check (:mod:`rem.run.relearn`) re-tunes a copy of a healed model on k corrupted samples and measures it
again. This script runs two designs of the re-tuning on two models of a task's cached starting point:

- **the starting model** (it learned the corruption; ``none``), and
- **a model trained clean** (``retrain`` at rate 1.0: the pretraining recipe on D_tr ∖ D_c, computed here),

and prints test accuracy, ASR (poison) and healed after each re-tuning, for k = 5 and 50:

- ``first``: the check's first design: the k corrupted samples and as many clean ones, one batch of 2k,
  40 SGD steps, batch norm in inference mode;
- ``now``: the check as it runs (:func:`rem.run.relearn.retune`): k corrupted samples among 1,000, batches
  of 128, 40 SGD steps, batch norm in training mode (the retuning attack of Min et al.).

A design that tells the two apart leaves the clean model clean. The starting model is read from
``<run-dir>/models`` as ``rem bench`` cached it (never pretrained here); the clean model costs one
pretraining (~12 min at one thread on the ``cpu`` profile).

    OMP_NUM_THREADS=1 REM_DATA_DIR=../shared/datasets python benchmarks/relearn_design.py --run-dir runs/cpu \\
        [--profile cpu] [--task poison] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from rem.bench.cell import StartSpec, load_start
from rem.methods import Context, get_method
from rem.metrics import evaluate
from rem.profiles import get_profile
from rem.run.relearn import LR, MOMENTUM, STEPS, WEIGHT_DECAY, retune, retune_idx, sgd_steps
from rem.runtime import pick_device


def retune_first(model, task, idx, *, device, seed: int = 0):
    """The first design: one batch of all of ``idx``, ``STEPS`` steps, batch norm in inference mode."""
    from rem.data.loader import train_batches

    m = copy.deepcopy(model).to(device).eval()
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    data = train_batches(task, idx, device=device, batch_size=len(idx), seed=seed)  # one batch, re-drawn each pass
    done = 0
    while done < STEPS:
        done += sgd_steps(m, opt, data, STEPS - done)
    return m.eval()


def figures(model, task, device) -> str:
    e = evaluate(model, task, device=device)
    asr = f" ASR {100 * e['asr']:5.1f}" if "asr" in e else ""
    return f"test acc {100 * e['utility']:5.1f}{asr} healed {100 * e['healed']:5.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, help="a rem bench run folder holding the starting model")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--pretrain-type", default="capacity-0.5")
    ap.add_argument("--task", default="poison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ks", default="5,50")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    profile, dev = get_profile(args.profile), pick_device(args.device)
    spec = StartSpec(profile, args.pretrain_type, args.task, args.seed)
    start, _, task = load_start(spec, spec.path(args.run_dir), device=dev, data_dir=args.data_dir)
    ctx = Context(device=dev, pretrain_type=args.pretrain_type, pretrain_recipe=profile.pretrain)
    models = {"starting model": get_method("none").unlearn(copy.deepcopy(start), task, task.forget_idx(1.0), ctx).model}
    print("training the clean model (retrain at rate 1.0) ...", file=sys.stderr, flush=True)
    retrain = get_method("retrain", seed=args.seed)
    models["trained clean"] = retrain.unlearn(copy.deepcopy(start), task, task.forget_idx(1.0), ctx).model
    print(f"{args.profile} profile, {args.task}, seed {args.seed}")
    for name, model in models.items():
        print(f"{name:15s} before:            {figures(model, task, dev)}")
        for k in (int(s) for s in args.ks.split(",")):
            first_idx, _ = retune_idx(task, k, args.seed, pool=2 * k)
            first = retune_first(model, task, first_idx, device=dev, seed=args.seed)
            print(f"{name:15s} k={k:<3d} first design: {figures(first, task, dev)}")
            now = retune(model, task, retune_idx(task, k, args.seed)[0], device=dev, seed=args.seed)
            print(f"{name:15s} k={k:<3d} now:          {figures(now, task, dev)}", flush=True)


if __name__ == "__main__":
    main()
