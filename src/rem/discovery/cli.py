"""``rem discover``: rank D_r by how likely each sample belongs with the corruption; write CSV / JSON.

    rem discover --checkpoint runs/start/model.safetensors --rate 0.5 --out ranking.csv [--out ranking.json]
    rem discover --checkpoint CKPT --forget-file found.txt --score cleanlab [--set folds=10] --out r.json
    rem discover --model mypkg.models:resnet18 --weights model.safetensors --data train/ --forget found.txt \\
                 --out ranking.csv        # your own model and data, as `rem unlearn --model`

On a checkpoint written by rem, whose task knows its corrupted set, the command also prints how well the
ranking finds the undiscovered corruption D_c \\ D_f (AUROC, precision at k = |D_c \\ D_f|).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rem.errors import ConfigError

SCORE_HELP = (
    "discovery score: rem (loss after REM's removal of D_f + label-conditional feature similarity), "
    "features, loss (small-loss baseline), cleanlab, spectral (spectral signatures)"
)


def add_discover_parser(subparsers, common) -> argparse.ArgumentParser:
    from rem.discovery.base import score_names

    p = subparsers.add_parser(
        "discover",
        help="rank the retained samples by how likely they belong with the corruption (CSV / JSON)",
        description="Rank every sample of D_r = D_tr minus the discovered set D_f by a discovery score "
        "(higher = more likely corrupted) and write the ranking (rank, index, score) as CSV or JSON. "
        f"Scores: {', '.join(score_names())} (`--set KEY=VALUE` sets their settings).",
    )
    p.add_argument("--checkpoint", default=None, help="the starting model (.safetensors written by rem); or --model")
    p.add_argument(
        "--rate",
        type=_rate,
        default=None,
        help="discovery rate in (0, 1]: D_f is the checkpoint task's own discovered set at this rate",
    )
    p.add_argument(
        "--forget-file",
        "--forget",
        dest="forget_file",
        default=None,
        help="file of the discovered samples (integers, or file names of an image folder); give it or --rate",
    )
    p.add_argument("--score", default="rem", help=SCORE_HELP + " (default rem)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a setting of the score, parsed by its type, e.g. --set feature_weight=0 (repeatable)",
    )
    p.add_argument(
        "--out",
        action="append",
        help="output file, .csv (rank,index,score) or .json (with the score's settings and info); repeatable",
    )
    p.add_argument(
        "--settings",
        metavar="NAME",
        default=None,
        help="print every setting of score NAME with its help text, type and default, and stop",
    )
    p.add_argument("--top", type=int, default=10, help="how many of the most suspicious samples to print")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    g = p.add_argument_group("your own model and data (instead of --checkpoint)")
    g.add_argument("--model", default=None, metavar="MODULE:FACTORY", help="function that builds your architecture")
    g.add_argument("--factory-kwargs", default=None, metavar="JSON", help="keyword arguments of the factory")
    g.add_argument("--weights", default=None, help="your trained weights, a .safetensors file")
    g.add_argument("--data", default=None, help="your training data with its labels as trained: .npz or a folder")
    g.add_argument("--num-classes", type=int, default=None, help="number of classes (default: from the data)")
    g.add_argument("--mean", default=None, help="per-channel normalisation mean in [0, 1] (default CIFAR-10's)")
    g.add_argument("--std", default=None, help="per-channel normalisation std (default CIFAR-10's)")
    common(p)
    p.set_defaults(func=cmd_discover)
    return p


def _rate(text: str) -> float:
    from rem.cli import rate_type

    return rate_type(text)


def _outputs(args) -> list[Path]:
    from rem.paths import check_output_file

    outs = []
    for o in args.out:
        p = Path(o)
        if p.suffix.lower() not in (".csv", ".json"):
            raise ConfigError(f"--out {o}: a ranking is written as .csv or .json")
        for src in (args.checkpoint, args.weights):
            if src and p.resolve() == Path(src).resolve():
                raise ConfigError(f"--out {o} would overwrite the model {src}")
        if p.exists() and not args.overwrite:
            raise ConfigError(f"--out {o} exists; give --overwrite to replace it")
        outs.append(check_output_file(p, "--out"))
    return outs


def _user_inputs(args):
    """(model, task, forget_idx) of a user's own model and data (as ``rem unlearn --model``)."""
    from rem.data.user import Preprocess, user_task
    from rem.heal_cli import _floats, build_model, load_weights, read_forget

    need = [o for o, v in (("--weights", args.weights), ("--data", args.data), ("--forget", args.forget_file)) if not v]
    if need:
        raise ConfigError(f"--model needs {' and '.join(need)}")
    if args.checkpoint or args.rate is not None:
        raise ConfigError("--model ranks your own model's data: --checkpoint and --rate belong to rem's checkpoints")
    model = build_model(args.model, args.factory_kwargs)
    load_weights(model, args.weights)
    pre = Preprocess(mean=_floats(args.mean, "mean"), std=_floats(args.std, "std"))
    task = user_task(args.data, num_classes=args.num_classes, preprocess=pre)
    return model, task, read_forget(args.forget_file, task)


def _print_settings(name: str) -> int:
    from rem.discovery.base import get_score
    from rem.methods.base import settings_help

    score = get_score(name)  # refuses an unknown name
    print(f"{score.name}: {score.summary}")
    print("settings (rem discover --score NAME --set KEY=VALUE):")
    rows = settings_help(score.config_cls)
    width = max(len(n) for n, *_ in rows)
    for key, tp, default, text in rows:
        print(f"  {key:<{width}}  {text} ({tp}; default {default!r})")
    return 0


def cmd_discover(args) -> int:
    from rem.bench.cli import settings_for
    from rem.discovery.api import discover
    from rem.discovery.base import get_score
    from rem.runtime import pick_device

    if args.settings:
        return _print_settings(args.settings)
    if not args.out:
        raise ConfigError("give --out FILE.csv and/or --out FILE.json (where the ranking goes)")
    settings = settings_for(args.set, args.score, "score")
    get_score(args.score, **settings)  # the score and its settings, checked before any work
    outs = _outputs(args)
    dev = pick_device(args.device)
    if args.model is not None:
        model, task, forget_idx = _user_inputs(args)
    else:
        from rem.checkpoint import load_checkpoint
        from rem.cli import _task_from, read_index_file

        if args.checkpoint is None:
            raise ConfigError("give --checkpoint (a model written by rem), or --model with --weights, --data, --forget")
        if (args.rate is None) == (args.forget_file is None):
            raise ConfigError("give exactly one of --rate (a discovery rate) or --forget-file (a file of indices)")
        model, meta = load_checkpoint(args.checkpoint, dev)
        _, task = _task_from(meta, args.data_dir, not args.no_download)
        forget_idx = task.forget_idx(args.rate) if args.rate is not None else read_index_file(args.forget_file)
    ranking = discover(model, task, forget_idx, args.score, device=dev, **settings)
    for p in outs:
        ranking.write(p)
    print(
        f"{args.score}: ranked {len(ranking)} samples of D_r (|D_f|={ranking.n_forget}, |D_tr|={ranking.n_train}) "
        f"in {ranking.wall_s:.1f} s" + (f"; {json.dumps(ranking.info)}" if ranking.info else "")
    )
    for row in ranking.rows()[: max(0, args.top)]:
        print(
            f"  #{row['rank']:<4d} index {row['index']:<7d} score {row['score']:.4g}"
            + (f"  {row['file']}" if "file" in row else "")
        )
    truth = getattr(task, "corrupt_idx", None)  # None for a user's data (no ground truth)
    if truth is not None:
        import torch

        hidden = truth[torch.isin(truth, ranking.idx)]  # D_c \ D_f
        if len(hidden):
            q = ranking.evaluate(hidden)
            print(
                f"against the task's undiscovered corruption D_c \\ D_f ({q['k']} samples): AUROC {q['auroc']:.3f}, "
                f"precision at k = recall at k = {q['precision_at_k']:.3f}"
            )
    print("wrote " + ", ".join(str(p) for p in outs))
    return 0
