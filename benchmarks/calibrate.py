"""Calibrate a profile's pretraining: one starting model per task, its cost and what it learned.

A calibration probe (``docs/calibration.md``): pretrain the profile's starting model of each task with
the profile's recipe, optionally changed (``--steps``, ``--lr``, ``--batch-size``, ``--horizon``,
``--arch KEY=VALUE``), and print one line per model: wall seconds, test accuracy, accuracy on D_c
against the corrupted labels and, for poison, the attack success rate. Results are shares in [0, 1]
in the JSON (``--out``), percent printed.

    OMP_NUM_THREADS=1 REM_DATA_DIR=... python benchmarks/calibrate.py --profile cpu-vit --tasks random
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from rem.metrics import evaluate
from rem.models import param_count
from rem.profiles import get_profile, profile_data, profile_task
from rem.train import pretrain
from rem.units import percent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu-vit")
    ap.add_argument("--tasks", default="poison,interclass,random")
    ap.add_argument("--steps", type=int, help="pretraining steps (default: the profile's)")
    ap.add_argument("--lr", type=float, help="pretraining learning rate (default: the profile's)")
    ap.add_argument("--batch-size", type=int, help="pretraining batch size (default: the profile's)")
    ap.add_argument(
        "--horizon", type=float, help="linear decay to 0 at horizon × steps; 0 = none (default: the profile's)"
    )
    ap.add_argument("--arch", action="append", default=[], metavar="KEY=VALUE", help="architecture setting")
    ap.add_argument("--ptype", default=None, help="pretraining type (default: the profile's first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="append the JSON lines to this file")
    args = ap.parse_args(argv)

    prof = get_profile(args.profile)
    arch_kw = dict(prof.arch_kw)
    for kv in args.arch:
        k, v = kv.split("=", 1)
        arch_kw[k] = float(v) if "." in v else int(v)
    recipe = dataclasses.replace(
        prof.pretrain,
        **{
            k: v
            for k, v in (
                ("steps", args.steps),
                ("lr", args.lr),
                ("batch_size", args.batch_size),
                ("horizon", args.horizon),
            )
            if v is not None
        },
    )
    prof = prof.override(arch_kw=arch_kw, pretrain=recipe)
    ptype = args.ptype or prof.pretrain_types[0]
    data = profile_data(prof)
    for kind in args.tasks.split(","):
        task = profile_task(prof, kind, args.seed, data=data)
        t0 = time.perf_counter()
        model = pretrain(task, prof.arch_spec(data.num_classes), ptype, recipe, seed=args.seed)
        wall = time.perf_counter() - t0
        m = evaluate(model.eval(), task)
        row = {
            "profile": args.profile,
            "task": kind,
            "arch_kw": arch_kw,
            "recipe": recipe.as_dict(),
            "ptype": ptype,
            "threads": torch.get_num_threads(),
            "params": param_count(model),
            "wall_s": round(wall, 1),
            **{k: m[k] for k in ("test_acc", "corrupt_acc", "asr") if k in m},
        }
        shown = {k: percent(row[k]) for k in ("test_acc", "corrupt_acc", "asr") if k in row}
        print(
            f"{kind}: {row['wall_s']} s, {row['params']:,} parameters, "
            + ", ".join(f"{k} {v:.1f} %" for k, v in shown.items()),
            flush=True,
        )
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
