"""The ``rem`` command: train, eval, unlearn, discover, methods, bench, report, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rem.errors import ConfigError, RemError
from rem.paths import write_json_atomic

TASK_HELP = "corruption task: poison (high regularity), interclass (medium) or random (low)"


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors on one line of stderr (exit 2), like rem's own errors, and no usage dump."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    parse.__name__ = f"integer >= {low}"
    return parse


def rate_type(text: str) -> float:
    """An argparse type: a discovery rate in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"a discovery rate is in (0, 1], got {text}")
    return v


def shown(metrics: dict) -> str:
    """Metrics as the commands print them: the shares in percent, two decimals (files keep the shares)."""
    from rem.units import percent_metrics

    return json.dumps(percent_metrics(metrics, 2))


def _profile(args):
    from rem.profiles import get_profile

    p = get_profile(args.profile)
    kw = {}
    if getattr(args, "dataset", None):
        kw["dataset"] = args.dataset
    if getattr(args, "n_corrupt", None) is not None:
        kw["n_corrupt"] = args.n_corrupt
    if getattr(args, "steps", None) is not None and args.command == "train":
        from dataclasses import replace

        kw["pretrain"] = replace(p.pretrain, steps=args.steps)
    return p.override(**kw)


def _task_from(meta: dict, data_dir, download: bool = True, kind: str | None = None):
    """(profile, task) of a checkpoint's metadata; its own task's split is checked against the recorded one."""
    from rem.api import task_of
    from rem.profiles import profile_from_dict

    if kind is not None and kind != meta.get("task", {}).get("kind"):
        meta = {k: v for k, v in meta.items() if k not in ("split_hash", "forget_idx")}
        meta["task"] = {**meta["task"], "kind": kind}
    try:
        profile = profile_from_dict(meta["profile"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"the checkpoint's metadata has no usable profile ({e}): not written by rem?") from None
    return profile, task_of(meta, data_dir, download=download)


def cmd_train(args) -> int:
    from rem.checkpoint import save_checkpoint
    from rem.metrics import evaluate
    from rem.paths import check_output_dir
    from rem.profiles import profile_data, profile_task
    from rem.runtime import environment, measure, pick_device
    from rem.train import pretrain

    profile = _profile(args)
    profile.task_config(args.task, args.seed)  # |D_c| and the task's settings, before any work
    dev = pick_device(args.device)
    out = check_output_dir(args.out)
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
    save_checkpoint(model, out / "model.safetensors", meta)
    record = {**meta, "wall_s": m.wall_s, "peak_mem_mb": m.peak_mem_mb, "mem_kind": m.mem_kind, "env": environment(dev)}
    write_json_atomic(out / "metrics.json", record)
    print("metrics (%):", shown(metrics))
    print(f"wrote {out / 'model.safetensors'} and {out / 'metrics.json'} ({m.wall_s:.0f} s)")
    return 0


def cmd_eval(args) -> int:
    from rem.checkpoint import load_checkpoint
    from rem.metrics import evaluate
    from rem.paths import check_output_file
    from rem.runtime import pick_device

    dev = pick_device(args.device)
    if args.out:
        check_output_file(args.out)
    model, meta = load_checkpoint(args.checkpoint, dev)
    _, task = _task_from(meta, args.data_dir, not args.no_download, kind=args.task)
    fi = torch.tensor(meta["forget_idx"]) if "forget_idx" in meta else None
    metrics = evaluate(model, task, fi, device=dev)
    if args.out:
        write_json_atomic(
            Path(args.out), {"checkpoint": str(args.checkpoint), "task": task.config.as_dict(), "metrics": metrics}
        )
    print("metrics (%):", shown(metrics))
    return 0


def read_index_file(path: str | Path) -> torch.Tensor:
    """Indices from a text file (whitespace/comma separated integers) or a JSON list (a UTF-8 BOM is fine)."""
    p = Path(path)
    if not p.is_file():
        raise RemError(f"no index file at {p}")
    try:
        text = p.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError:
        raise RemError(f"{p} is not a text file of indices (not UTF-8)") from None
    if text.startswith("["):
        try:
            vals = json.loads(text)
        except ValueError as e:
            raise RemError(f"{p} is not valid JSON: {e}") from None
        if not isinstance(vals, list) or any(not isinstance(v, int) or isinstance(v, bool) for v in vals):
            raise RemError(f"{p}: a JSON index file must be one list of integers")
    else:
        try:
            vals = [int(t, 10) for t in text.replace(",", " ").split()]
        except ValueError as e:
            raise RemError(f"{p}: indices must be integers: {e}") from None
    big = [v for v in vals if not -(2**63) <= v < 2**63]
    if big:
        raise RemError(f"{p}: {len(big)} indices out of range (too large): {big[:3]}")
    return torch.tensor(vals, dtype=torch.int64)


def unlearn_cell(
    meta: dict, profile, task, method: str, rate: float | None, sets: dict, shortcuts: dict, steps: int | None = None
):
    """The :class:`~rem.bench.grid.Cell` that ``rem unlearn`` runs on a checkpoint: the same one (same key,
    same settings from :func:`rem.run.method_settings`) that ``rem bench`` would run at this rate."""
    from dataclasses import replace

    from rem.bench.grid import Cell

    if steps is not None:  # as `rem bench --steps`: the profile's unlearning budget
        profile = replace(profile, unlearn=replace(profile.unlearn, steps=steps))
    seed = int(meta.get("seed", task.config.seed))
    ptype = meta.get("pretrain_type") or "capacity-0.5"
    from rem.run import method_settings

    settings = method_settings(method, profile, seed, sets, shortcuts)
    return Cell(
        method, ptype, task.kind, None if rate is None else float(rate), seed, profile, tuple(sorted(settings.items()))
    )


def cmd_unlearn(args) -> int:
    from rem.bench.cli import settings_for
    from rem.checkpoint import load_checkpoint, save_checkpoint
    from rem.methods import get_method
    from rem.metrics import evaluate
    from rem.paths import check_output_dir
    from rem.run import shortcut_settings, unlearn_and_record
    from rem.runtime import pick_device

    if getattr(args, "model", None) is not None:  # a user's own model and data: rem.heal_cli
        from rem.heal_cli import run

        return run(args)
    if args.checkpoint is None:
        raise RemError(
            "give --checkpoint (a model written by rem train), or --model with --weights, --data and "
            "--forget (your own model)"
        )
    if (args.rate is None) == (args.forget_file is None):
        raise RemError("give exactly one of --rate (a discovery rate) or --forget-file (a file of indices)")
    dev = pick_device(args.device)
    out = check_output_dir(args.out)
    out_model, out_metrics = out / "model.safetensors", out / "metrics.json"
    if out_model.resolve() == Path(args.checkpoint).resolve():
        raise RemError(f"--out {out} would overwrite the starting checkpoint {args.checkpoint}; choose another folder")
    existing = [p.name for p in (out_model, out_metrics) if p.exists()]
    if existing and not args.overwrite:
        raise RemError(
            f"{out} already holds a result ({', '.join(existing)}); give --overwrite to replace it, or another --out"
        )
    model, meta = load_checkpoint(args.checkpoint, dev)
    profile, task = _task_from(meta, args.data_dir, not args.no_download)
    forget_idx = task.forget_idx(args.rate) if args.rate is not None else read_index_file(args.forget_file)
    forget_idx = task.check_forget_idx(forget_idx, within_corrupt=args.within_corrupt)
    shortcuts = shortcut_settings(expand_ratio=args.expand_ratio)
    cell = unlearn_cell(
        meta,
        profile,
        task,
        args.method,
        args.rate,
        {args.method: settings_for(args.set, args.method)},
        shortcuts,
        args.steps,
    )
    get_method(cell.method, **cell.overrides)  # validate the config before any work
    print(f"{args.method}: |D_f|={len(forget_idx)} of |D_c|={len(task.corrupt_idx)}, task {task.kind}", flush=True)
    result, record = unlearn_and_record(
        cell, model, task, forget_idx, start_meta=meta, device=dev, progress=not args.quiet
    )
    before = evaluate(model, task, forget_idx, device=dev)
    new_meta = {
        **meta,
        "method": args.method,
        "method_config": record["method_config"],
        "forget_idx": forget_idx.tolist(),
        "split_hash": record["split_hash"],
        "metrics": record["metrics"],
    }
    save_checkpoint(result.model, out_model, new_meta)
    write_json_atomic(out_metrics, {**record, "before": before})
    print("before (%):", shown(before))
    print("after (%): ", shown(record["metrics"]))
    print(f"wrote {out / 'model.safetensors'} and {out / 'metrics.json'} ({record['wall_s']:.0f} s)")
    return 0


def cmd_methods(args) -> int:
    from rem.methods import REGISTRY, get_method, method_names, settings_help

    if args.settings:
        cls = type(get_method(args.settings))  # refuses an unknown name
        print(f"{cls.name}: {cls.summary}  [uses {cls.uses}]")
        print(f"settings (rem unlearn --set KEY=VALUE, rem bench --set {cls.name}.KEY=VALUE):")
        rows = settings_help(cls.config_cls)
        width = max(len(n) for n, *_ in rows)
        for name, tp, default, text in rows:
            print(f"  {name:<{width}}  {text} ({tp}; default {default!r})")
        return 0
    width = max(len(n) for n in REGISTRY)
    for name in method_names():
        cls = REGISTRY[name]
        print(f"{name:<{width}}  {cls.summary}  [uses {cls.uses}]")
    return 0


def cmd_demo(args) -> int:
    from rem.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(
        prog="rem",
        description="Corrective machine unlearning of image classifiers "
        "with REM (Redirection for Erasing Memory) and its baselines.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, data=True):
        if data:
            p.add_argument(
                "--data-dir",
                default=None,
                help="folder holding the data sets (default: "
                "$REM_DATA_DIR, else ~/.cache/rem/data; CIFAR-10 is downloaded there if missing)",
            )
            p.add_argument(
                "--no-download",
                action="store_true",
                help="never download a missing data set; fail with an error instead",
            )
        p.add_argument(
            "--device",
            default="auto",
            help="compute device: auto (CUDA if available), cpu, cuda, cuda:1 (default auto)",
        )
        p.add_argument(
            "--quiet",
            action="store_true",
            help="no progress bars (they are drawn only when stderr is a terminal anyway)",
        )

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
    p.add_argument(
        "--task", default="poison", choices=["poison", "interclass", "random"], help=TASK_HELP + " (default poison)"
    )
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
    p.add_argument(
        "--n-corrupt",
        type=int_at_least(1),
        default=None,
        help="override |D_c|, the number of corrupted samples, >= 1 (default: the profile's)",
    )
    p.add_argument(
        "--steps",
        type=int_at_least(1),
        default=None,
        help="override the number of pretraining steps, >= 1 (default: the profile's)",
    )
    p.add_argument("--out", required=True, help="output folder (checked before any work)")
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="metrics of a checkpoint on its task (or another task)",
        description="Evaluate a checkpoint: healed, healed_test, utility, uxh, forget_acc, asr (printed in "
        "percent; --out writes them as shares in [0, 1], as every file rem writes).",
    )
    p.add_argument("--checkpoint", required=True, help="a .safetensors file written by rem")
    p.add_argument(
        "--task",
        default=None,
        choices=["poison", "interclass", "random"],
        help="evaluate on this task instead of the checkpoint's own (default: its own)",
    )
    p.add_argument("--out", default=None, help="write the metrics (shares) to this JSON file (default: print only)")
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "unlearn",
        help="heal a checkpoint given the discovered corrupted indices",
        description="Run an unlearning method on a checkpoint: the discovered set D_f is the "
        "task's own at --rate, or the indices in --forget-file.",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="the starting model (.safetensors written by rem train); or --model for your own model",
    )
    p.add_argument("--method", default="rem", help="unlearning method (see `rem methods`; default rem)")
    p.add_argument(
        "--rate",
        type=rate_type,
        default=None,
        help="discovery rate |D_f|/|D_c| in (0, 1]: D_f is the task's own discovered set at this rate",
    )
    p.add_argument(
        "--forget-file",
        default=None,
        help="file of discovered training indices (integers, whitespace/comma separated, or a JSON "
        "list); give it or --rate",
    )
    p.add_argument(
        "--within-corrupt",
        action="store_true",
        help="refuse indices outside the task's corrupted set (a check for benchmark use)",
    )
    p.add_argument("--steps", type=int_at_least(0), default=None, help="step budget, >= 0 (default: the profile's)")
    p.add_argument(
        "--expand-ratio",
        type=float,
        default=None,
        help="REM: extra capacity as a ratio r=|θ_o2|/|θ_o1| of each block's width, in (0, 8] (default 1, the paper's)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any other method setting, parsed by its type, e.g. --set beta=0.5 --set remove_term=false "
        "(repeatable; `rem methods` lists the methods)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder for the healed model.safetensors and metrics.json (checked before any work; "
        "never the starting checkpoint's file); with --model: the healed .safetensors file",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a result already in --out")
    common(p)
    from rem.heal_cli import add_user_args

    add_user_args(p)
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("methods", help="list the registered unlearning methods, or one method's settings")
    p.add_argument(
        "--settings",
        metavar="NAME",
        default=None,
        help="print every setting of method NAME with its help text, type and default",
    )
    p.set_defaults(func=cmd_methods)

    from rem.discovery.cli import add_discover_parser

    add_discover_parser(sub, common)

    try:
        from rem.bench.cli import add_bench_parser, add_report_parser

        add_bench_parser(sub)
        add_report_parser(sub)
    except ImportError:  # pragma: no cover
        pass

    p = sub.add_parser(
        "demo",
        help="the main job: remove a backdoor from a CIFAR-10 model with REM and baselines (minutes on a CPU)",
        description="Heal the shipped poisoned CIFAR-10 model with REM and baselines; print the backdoor's "
        "attack success rate before and after each, and the report's path.",
    )
    p.add_argument(
        "--run-dir", default="runs/demo", help="folder of the demo's results store and report (default runs/demo)"
    )
    p.add_argument("--profile", default=None, help="settings profile (default demo; smoke: generated images)")
    p.add_argument("--full", action="store_true", help="the cpu profile, pretrained from scratch first (long)")
    common(p)
    p.set_defaults(func=cmd_demo)
    _show_defaults(ap)
    return ap


def _show_defaults(ap: argparse.ArgumentParser) -> None:
    """Append "(default X)" to every option's help that has a default and does not name it yet."""
    for act in ap._actions:
        if isinstance(act, argparse._SubParsersAction):
            for p in act.choices.values():
                _show_defaults(p)
        elif act.help and act.default not in (None, False, argparse.SUPPRESS) and "default" not in act.help:
            act.help += f" (default {act.default})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    from rem.runtime import tune_allocator

    tune_allocator()  # before the first big tensor (see its docstring)
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
