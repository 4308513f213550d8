"""``rem train``: pretrain a starting model on a data set with one corruption task applied."""

from __future__ import annotations

from dataclasses import replace

from rem.cli.args import TASK_HELP, TASKS, add_common, add_n_corrupt_option, int_at_least, shown


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain a starting model on a corrupted data set",
        description="Pretrain a model on a data set with one corruption task applied; writes "
        "OUT/model.safetensors and OUT/metrics.json.",
    )
    p.add_argument("--profile", default="cpu", help="settings profile: smoke, cpu, paper, paper-vit (default cpu)")
    p.add_argument(
        "--dataset",
        default=None,
        help="override the profile's data set: cifar10, svhn, generated (default: the profile's)",
    )
    p.add_argument("--task", default="poison", choices=TASKS, help=TASK_HELP + " (default poison)")
    p.add_argument(
        "--pretrain-type",
        default="capacity-0.5",
        choices=["capacity-0.5", "etd", "full"],
        help="capacity-0.5: half-width network (REM expands it); etd: Example-Tied Dropout; "
        "full: an ordinary network (default capacity-0.5)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the corruption, the split and the initialisation (default 0)"
    )
    add_n_corrupt_option(p)
    p.add_argument(
        "--steps",
        type=int_at_least(1),
        default=None,
        help="override the number of pretraining steps, >= 1 (default: the profile's)",
    )
    p.add_argument("--out", required=True, help="output folder (claimed before any work)")
    p.add_argument("--overwrite", action="store_true", help="replace a result already in --out")
    add_common(p)
    p.set_defaults(func=run)


def _profile(args):
    """The profile with this command's overrides (data set, |D_c|, pretraining steps)."""
    from rem.profiles import get_profile

    p = get_profile(args.profile)
    kw = {}
    if args.dataset:
        kw["dataset"] = args.dataset
    if args.n_corrupt is not None:
        kw["n_corrupt"] = args.n_corrupt
    if args.steps is not None:
        kw["pretrain"] = replace(p.pretrain, steps=args.steps)
    return p.override(**kw)


def run(args) -> int:
    from pathlib import Path

    from rem.output import Output
    from rem.runtime import pick_device

    profile = _profile(args)
    profile.task_config(args.task, args.seed)  # |D_c| and the task's settings, before any work
    dev = pick_device(args.device)
    out = Path(args.out)
    with Output([out / "model.safetensors", out / "metrics.json"], overwrite=args.overwrite, what="--out") as result:
        _train(args, profile, dev, result)
    return 0


def _train(args, profile, dev, result) -> None:
    """Pretrain, evaluate and write (into the claimed ``result``)."""
    import json

    from rem.checkpoint import checkpoint_bytes
    from rem.metrics import evaluate
    from rem.profiles import profile_data, profile_task
    from rem.runtime import environment, measure
    from rem.train import pretrain

    data = profile_data(profile, args.data_dir, download=not args.no_download)
    task = profile_task(profile, args.task, args.seed, data=data)
    print(
        f"pretraining {args.pretrain_type} {profile.arch} on {data.name} ({len(data.y_train)} train, "
        f"{data.image_size}px), task {args.task} |D_c|={len(task.corrupt_idx)}, {profile.pretrain.steps} steps"
    )
    with measure(dev) as m:
        model = pretrain(
            task,
            profile.arch_spec(data.num_classes),
            args.pretrain_type,
            profile.pretrain,
            device=dev,
            seed=args.seed,
            progress=not args.quiet,
        )
    metrics = evaluate(model, task, device=dev)
    meta = {
        "profile": profile.as_dict(),
        "task": task.config.as_dict(),
        "pretrain_type": args.pretrain_type,
        "seed": args.seed,
        "split_hash": task.split_hash(),
        "metrics": metrics,
    }
    record = {**meta, "wall_s": m.wall_s, "peak_mem_mb": m.peak_mem_mb, "mem_kind": m.mem_kind, "env": environment(dev)}
    model_file, metrics_file = result.paths
    result.write(
        {
            model_file: checkpoint_bytes(model, meta),
            metrics_file: json.dumps(record, indent=2, sort_keys=True, default=str),
        }
    )
    print("metrics (%):", shown(metrics))
    print(f"wrote {model_file} and {metrics_file} ({m.wall_s:.0f} s)")
