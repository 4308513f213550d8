"""``rem discover``: rank D_r by how likely each sample belongs with the corruption; write CSV / JSON.

    rem discover --checkpoint runs/start/model.safetensors --rate 0.5 --out ranking.csv [--out ranking.json]
    rem discover --checkpoint CKPT --forget-file found.txt --score cleanlab [--set folds=10] --out r.json
    rem discover --model mypkg.models:resnet18 --weights model.safetensors --data train/ --forget found.txt \\
                 --out ranking.csv        # your own model and data, as `rem unlearn --model`

On a checkpoint written by rem, whose task knows its corrupted set, the command also prints how well the
ranking finds the undiscovered corruption D_c \\ D_f (AUROC, precision at k = |D_c \\ D_f|).
"""

from __future__ import annotations

import json
from pathlib import Path

from rem.cli.args import (
    add_common,
    add_forget_options,
    add_user_model_options,
    int_at_least,
    names,
    print_settings,
    refuse_inapplicable,
)
from rem.errors import ConfigError

SCORE_HELP = (
    "discovery score: rem (loss after REM's removal of D_f + label-conditional feature similarity), "
    "features, loss (small-loss baseline), cleanlab, spectral (spectral signatures)"
)


def add_parser(sub) -> None:
    from rem.discovery import score_names

    p = sub.add_parser(
        "discover",
        help="rank the retained samples by how likely they belong with the corruption (CSV / JSON)",
        description="Rank every sample of D_r = D_tr minus the discovered set D_f by a discovery score "
        "(higher = more likely corrupted) and write the ranking (rank, index, score) as CSV or JSON. "
        f"Scores: {', '.join(score_names())} (`--set KEY=VALUE` sets their settings).",
    )
    p.add_argument("--checkpoint", default=None, help="the starting model (.safetensors written by rem); or --model")
    add_forget_options(p)
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
    p.add_argument("--top", type=int_at_least(0), default=10, help="how many of the most suspicious samples to print")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_common(p)
    add_user_model_options(p)
    p.set_defaults(func=run)


def _outputs(args):
    """The ``--out`` files (.csv or .json) as rem's one writer, claimed before any work
    (:class:`rem.output.Output`): never the model's file, not there yet unless ``--overwrite``."""
    from rem.output import Output

    for o in args.out:
        if Path(o).suffix.lower() not in (".csv", ".json"):
            raise ConfigError(f"--out {o}: a ranking is written as .csv or .json")
    return Output(
        [Path(o) for o in dict.fromkeys(args.out)],
        overwrite=args.overwrite,
        what="--out",
        inputs={args.checkpoint: "model", args.weights: "model", args.data: "data", args.forget_file: "forget file"},
    )


def _checkpoint_inputs(args, dev):
    """(model, task, forget_idx) of ``--checkpoint`` with ``--rate`` or ``--forget-file``."""
    from rem.checkpoint import load_checkpoint
    from rem.cli.inputs import checkpoint_task, read_forget

    if args.checkpoint is None:
        raise ConfigError("give --checkpoint (a model written by rem), or --model with --weights, --data, --forget")
    if (args.rate is None) == (args.forget_file is None):
        raise ConfigError("give exactly one of --rate (a discovery rate) or --forget-file (a file of indices)")
    model, meta = load_checkpoint(args.checkpoint, dev)
    _, task = checkpoint_task(meta, args.data_dir, not args.no_download)
    forget_idx = task.forget_idx(args.rate) if args.rate is not None else read_forget(args.forget_file)
    return model, task, forget_idx


def _print_ranking(args, ranking, task) -> None:
    """The ranking's summary, its top rows and, where the task knows D_c, how well it finds D_c \\ D_f."""
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


def run(args) -> int:
    from rem.cli.settings import settings_for
    from rem.discovery import get_score
    from rem.runtime import pick_device

    if args.settings:
        score = get_score(args.settings)  # refuses an unknown name
        print_settings(score.name, score.summary, score.config_cls, "rem discover --score NAME --set KEY=VALUE")
        return 0
    refuse_inapplicable(args)  # options of the other branch (--data with --checkpoint, ...), before any work
    if not args.out:
        raise ConfigError("give --out FILE.csv and/or --out FILE.json (where the ranking goes)")
    settings = settings_for(args.set, args.score, "score")
    get_score(args.score, **settings)  # the score and its settings, checked before any work
    dev = pick_device(args.device)
    with _outputs(args) as result:
        _discover(args, settings, dev, result)
    return 0


def _discover(args, settings, dev, result) -> None:
    """Rank, write (into the claimed ``result``) and print."""
    from rem.api import discover
    from rem.cli.inputs import user_model_and_data

    if args.model is not None:
        model, task, forget_idx = user_model_and_data(args, "ranks your own model's data")
    else:
        model, task, forget_idx = _checkpoint_inputs(args, dev)
    targets, exclude = names(args.targets), names(args.exclude)
    ranking = discover(model, task, forget_idx, args.score, targets=targets, exclude=exclude, device=dev, **settings)
    result.write({p: ranking.content(p) for p in result.paths})
    _print_ranking(args, ranking, task)
    print("wrote " + ", ".join(str(p) for p in result.paths))
