"""The ``rem`` command: train, eval, unlearn, methods, bench, report, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rem.errors import RemError

TASK_HELP = "corruption task: poison (high regularity), interclass (medium) or random (low)"


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def _round(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def _profile(args):
    from rem.profiles import get_profile

    p = get_profile(args.profile)
    kw = {}
    if getattr(args, "dataset", None):
        kw["dataset"] = args.dataset
    if getattr(args, "n_corrupt", None):
        kw["n_corrupt"] = args.n_corrupt
    if getattr(args, "steps", None) and args.command == "train":
        from dataclasses import replace

        kw["pretrain"] = replace(p.pretrain, steps=args.steps)
    return p.override(**kw)


def _task_from(meta_profile: dict, task_cfg: dict, data_dir, download: bool = True):
    from rem.data.tasks import TaskConfig, make_task
    from rem.profiles import profile_data, profile_from_dict

    profile = profile_from_dict(meta_profile)
    data = profile_data(profile, data_dir, download=download)
    return profile, make_task(data, TaskConfig.from_dict(task_cfg))


def cmd_train(args) -> int:
    from rem.checkpoint import save_checkpoint
    from rem.metrics import evaluate
    from rem.profiles import profile_data, profile_task
    from rem.runtime import environment, measure, pick_device
    from rem.train import pretrain

    profile = _profile(args)
    dev = pick_device(args.device)
    data = profile_data(profile, args.data_dir, download=not args.no_download)
    task = profile_task(profile, args.task, args.seed, data=data)
    print(f"pretraining {args.pretrain_type} {profile.arch} on {data.name} ({len(data.y_train)} train, "
          f"{data.image_size}px), task {args.task} |D_c|={len(task.corrupt_idx)}, {profile.pretrain.steps} steps")
    with measure(dev) as m:
        model = pretrain(task, profile.arch_spec(data.num_classes), args.pretrain_type, profile.pretrain,
                         device=dev, seed=args.seed, progress=not args.quiet)
    metrics = evaluate(model, task, device=dev)
    out = Path(args.out)
    meta = {"profile": profile.as_dict(), "task": task.config.as_dict(), "pretrain_type": args.pretrain_type,
            "seed": args.seed, "split_hash": task.split_hash(), "metrics": metrics}
    save_checkpoint(model, out / "model.safetensors", meta)
    record = {**meta, "wall_s": m.wall_s, "peak_mem_mb": m.peak_mem_mb, "mem_kind": m.mem_kind,
              "env": environment(dev)}
    _write_json(out / "metrics.json", record)
    print(json.dumps(_round(metrics)))
    print(f"wrote {out / 'model.safetensors'} and {out / 'metrics.json'} ({m.wall_s:.0f} s)")
    return 0


def cmd_eval(args) -> int:
    from rem.checkpoint import load_checkpoint
    from rem.metrics import evaluate
    from rem.runtime import pick_device

    dev = pick_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, dev)
    task_cfg = dict(meta["task"])
    if args.task:
        task_cfg["kind"] = args.task
    _, task = _task_from(meta["profile"], task_cfg, args.data_dir, not args.no_download)
    fi = torch.tensor(meta["forget_idx"]) if "forget_idx" in meta else None
    metrics = evaluate(model, task, fi, device=dev)
    if args.out:
        _write_json(Path(args.out), {"checkpoint": str(args.checkpoint), "task": task_cfg, "metrics": metrics})
    print(json.dumps(_round(metrics)))
    return 0


def _parse_set(items: list[str], method: str) -> dict:
    """``--set`` values for ``method``: ``key=value`` or ``method.key=value`` (same syntax as ``rem bench``)."""
    from rem.bench.cli import parse_settings

    by_method = parse_settings(items)
    return {**by_method.get("*", {}), **by_method.get(method, {})}


def read_index_file(path: str | Path) -> torch.Tensor:
    """Indices from a text file (whitespace/comma separated integers) or a JSON list."""
    p = Path(path)
    if not p.is_file():
        raise RemError(f"no index file at {p}")
    text = p.read_text().strip()
    try:
        vals = json.loads(text) if text.startswith("[") else [int(t) for t in text.replace(",", " ").split()]
    except ValueError as e:
        raise RemError(f"{p}: indices must be integers: {e}") from e
    if any(not isinstance(v, int) or isinstance(v, bool) for v in vals):
        raise RemError(f"{p}: indices must be integers")
    return torch.tensor(vals, dtype=torch.int64)


def cmd_unlearn(args) -> int:
    from rem.api import unlearn
    from rem.checkpoint import load_checkpoint, save_checkpoint
    from rem.methods import get_method
    from rem.metrics import evaluate
    from rem.runtime import environment, measure, pick_device

    if getattr(args, "model", None) is not None:  # a user's own model and data: rem.heal_cli
        from rem.heal_cli import run

        return run(args)
    if args.checkpoint is None:
        raise RemError("give --checkpoint (a model written by rem train) or --model with --weights, --data and "
                       "--forget (your own model)")
    dev = pick_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, dev)
    profile, task = _task_from(meta["profile"], meta["task"], args.data_dir, not args.no_download)
    if (args.rate is None) == (args.forget_file is None):
        raise RemError("give exactly one of --rate (a discovery rate) or --forget-file (a file of indices)")
    forget_idx = task.forget_idx(args.rate) if args.rate is not None else read_index_file(args.forget_file)
    forget_idx = task.check_forget_idx(forget_idx, within_corrupt=args.within_corrupt)
    overrides = {"steps": profile.unlearn.steps, "lr": profile.unlearn.lr,
                 "batch_size": profile.unlearn.batch_size, "optimizer": profile.unlearn.optimizer,
                 "weight_decay": profile.unlearn.weight_decay}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.expand_ratio is not None:
        overrides["expand_ratio"] = args.expand_ratio
    if args.soft_mask:
        overrides["soft_mask"] = True
    overrides.update(_parse_set(args.set, args.method))
    get_method(args.method, **overrides)  # validate the config before any work
    print(f"{args.method}: |D_f|={len(forget_idx)} of |D_c|={len(task.corrupt_idx)}, task {task.kind}")
    with measure(dev) as m:
        healed = unlearn(model, task, forget_idx, args.method, device=dev, pretrain_type=meta.get("pretrain_type"),
                         pretrain_recipe=profile.pretrain, progress=not args.quiet, **overrides)
    metrics = evaluate(healed, task, forget_idx, device=dev)
    before = evaluate(model, task, forget_idx, device=dev)
    out = Path(args.out)
    new_meta = {**meta, "method": args.method, "method_config": get_method(args.method, **overrides).config.as_dict(),
                "forget_idx": forget_idx.tolist(), "split_hash": task.split_hash(forget_idx), "metrics": metrics}
    save_checkpoint(healed, out / "model.safetensors", new_meta)
    _write_json(out / "metrics.json", {"method": args.method, "metrics": metrics, "before": before,
                                       "history": getattr(healed, "history", []), "wall_s": m.wall_s,
                                       "peak_mem_mb": m.peak_mem_mb, "mem_kind": m.mem_kind,
                                       "split_hash": new_meta["split_hash"], "env": environment(dev),
                                       "method_config": new_meta["method_config"]})
    print("before:", json.dumps(_round(before)))
    print("after: ", json.dumps(_round(metrics)))
    print(f"wrote {out / 'model.safetensors'} and {out / 'metrics.json'} ({m.wall_s:.0f} s)")
    return 0


def cmd_methods(args) -> int:
    from rem.methods import REGISTRY

    width = max(len(n) for n in REGISTRY)
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        print(f"{name:<{width}}  {cls.summary}  [uses {cls.uses}]")
    return 0


def cmd_demo(args) -> int:
    from rem.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rem", description="Corrective machine unlearning of image classifiers "
                                 "with REM (Redirection for Erasing Memory) and its baselines.")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, data=True):
        if data:
            p.add_argument("--data-dir", default=None, help="folder holding the data sets (default: "
                           "$REM_DATA_DIR, else ~/.cache/rem/data; CIFAR-10 is downloaded there if missing)")
            p.add_argument("--no-download", action="store_true",
                           help="never download a missing data set; fail with an error instead")
        p.add_argument("--device", default="auto", help="compute device: auto (CUDA if available), cpu, cuda, cuda:1")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("train", help="pretrain a starting model on a corrupted data set",
                       description="Pretrain a model on a data set with one corruption task applied; writes "
                                   "OUT/model.safetensors and OUT/metrics.json.")
    p.add_argument("--profile", default="cpu", help="settings profile: smoke, cpu, paper, paper-vit (default cpu)")
    p.add_argument("--dataset", default=None, help="override the profile's data set: cifar10, svhn, generated")
    p.add_argument("--task", default="poison", choices=["poison", "interclass", "random"], help=TASK_HELP)
    p.add_argument("--pretrain-type", default="capacity-0.5", choices=["capacity-0.5", "etd", "full"],
                   help="capacity-0.5: half-width network (REM expands it); etd: Example-Tied Dropout; "
                        "full: an ordinary network")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruption, the split and the initialisation")
    p.add_argument("--n-corrupt", type=int, default=None, help="override |D_c|, the number of corrupted samples")
    p.add_argument("--steps", type=int, default=None, help="override the number of pretraining steps")
    p.add_argument("--out", required=True, help="output folder")
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="metrics of a checkpoint on its task (or another task)",
                       description="Evaluate a checkpoint: healed, healed_test, utility, uxh, forget_acc, asr.")
    p.add_argument("--checkpoint", required=True, help="a .safetensors file written by rem")
    p.add_argument("--task", default=None, choices=["poison", "interclass", "random"],
                   help="evaluate on this task instead of the checkpoint's own")
    p.add_argument("--out", default=None, help="write the metrics to this JSON file")
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("unlearn", help="heal a checkpoint given the discovered corrupted indices",
                       description="Run an unlearning method on a checkpoint: the discovered set D_f is the "
                                   "task's own at --rate, or the indices in --forget-file.")
    p.add_argument("--checkpoint", default=None, help="the starting model (.safetensors written by rem train)")
    p.add_argument("--method", default="rem", help="unlearning method (see `rem methods`; default rem)")
    p.add_argument("--rate", type=float, default=None, help="discovery rate |D_f|/|D_c| in [0, 1]")
    p.add_argument("--forget-file", default=None,
                   help="file of discovered training indices (integers, whitespace/comma separated, or JSON list)")
    p.add_argument("--within-corrupt", action="store_true",
                   help="refuse indices outside the task's corrupted set (a check for benchmark use)")
    p.add_argument("--steps", type=int, default=None, help="step budget (default: the profile's)")
    p.add_argument("--expand-ratio", type=float, default=None,
                   help="REM: extra capacity as a ratio r=|θ_o2|/|θ_o1| of each block's width, in (0, 1] "
                        "(default 1, the paper's)")
    p.add_argument("--soft-mask", action="store_true", help="REM: soft per-sample masks in [0, 1] instead of 0/1")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other method setting, e.g. --set beta=0.5 --set alpha=0.1 (repeatable)")
    p.add_argument("--out", required=True, help="output folder for the healed checkpoint and metrics.json "
                                                "(with --model: the healed .safetensors file)")
    common(p)
    from rem.heal_cli import add_user_args

    add_user_args(p)
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("methods", help="list the registered unlearning methods")
    p.set_defaults(func=cmd_methods)

    try:
        from rem.bench.cli import add_bench_parser, add_report_parser

        add_bench_parser(sub)
        add_report_parser(sub)
    except ImportError:  # pragma: no cover
        pass

    p = sub.add_parser("demo", help="the main job: REM against the strongest baselines on CIFAR-10 (cpu profile)",
                       description="Pretrain on the cpu profile of CIFAR-10 and compare REM with baselines.")
    p.add_argument("--run-dir", default="runs/demo", help="folder of the demo's results store and report")
    p.add_argument("--profile", default="cpu", help="settings profile (default cpu; smoke for a quick look)")
    common(p)
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    try:
        return int(args.func(args) or 0)
    except RemError as e:
        print(f"rem {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rem {args.command}: interrupted after {time.time() - t0:.0f} s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
