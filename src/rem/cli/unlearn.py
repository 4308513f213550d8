"""``rem unlearn``: heal a model given the discovered samples D_f.

Two inputs, one run path:

- ``--checkpoint CKPT`` (written by ``rem train`` or ``rem bench``): the checkpoint's own task, D_f at
  ``--rate`` or from ``--forget-file``; the run is the cell ``rem bench`` would run
  (:func:`rem.run.checkpoint_cell`, :func:`rem.run.unlearn_and_record`); writes ``OUT/model.safetensors``
  and ``OUT/metrics.json``.
- ``--model pkg.module:factory --weights model.safetensors --data PATH --forget found.txt --out
  healed.safetensors``: a user's own model and data (:func:`rem.unlearn`); writes the healed weights (the
  user's own ``state_dict`` keys) and a JSON record beside them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rem.cli.args import add_common, add_forget_options, add_user_model_options, int_at_least, names, shown
from rem.errors import ConfigError, RemError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "unlearn",
        help="heal a checkpoint given the discovered corrupted indices",
        description="Run an unlearning method on a checkpoint: the discovered set D_f is the "
        "task's own at --rate, or the samples in --forget-file.",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="the starting model (.safetensors written by rem train); or --model for your own model",
    )
    p.add_argument("--method", default="rem", help="unlearning method (see `rem methods`; default rem)")
    add_forget_options(p)
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
    add_common(p)
    add_user_model_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.model is not None:
        return run_own_model(args)
    return run_checkpoint(args)


# --- a checkpoint written by rem ------------------------------------------------------------------


def _result_folder(args) -> Path:
    """``--out``, checked before any work: a writable folder, not the starting checkpoint's, no result in it
    unless ``--overwrite``."""
    from rem.paths import check_output_dir

    out = check_output_dir(args.out)
    out_model, out_metrics = out / "model.safetensors", out / "metrics.json"
    if out_model.resolve() == Path(args.checkpoint).resolve():
        raise RemError(f"--out {out} would overwrite the starting checkpoint {args.checkpoint}; choose another folder")
    existing = [p.name for p in (out_model, out_metrics) if p.exists()]
    if existing and not args.overwrite:
        raise RemError(
            f"{out} already holds a result ({', '.join(existing)}); give --overwrite to replace it, or another --out"
        )
    return out


def run_checkpoint(args) -> int:
    """``rem unlearn --checkpoint``: the cell ``rem bench`` would run, on this checkpoint and D_f."""
    from rem.checkpoint import load_checkpoint, save_checkpoint
    from rem.cli.inputs import checkpoint_task, read_forget
    from rem.cli.settings import settings_for
    from rem.methods import get_method
    from rem.metrics import evaluate
    from rem.paths import write_json_atomic
    from rem.run import checkpoint_cell, shortcut_settings, unlearn_and_record
    from rem.runtime import pick_device

    if args.checkpoint is None:
        raise RemError(
            "give --checkpoint (a model written by rem train), or --model with --weights, --data and "
            "--forget (your own model)"
        )
    if (args.rate is None) == (args.forget_file is None):
        raise RemError("give exactly one of --rate (a discovery rate) or --forget-file (a file of indices)")
    dev = pick_device(args.device)
    out = _result_folder(args)
    model, meta = load_checkpoint(args.checkpoint, dev)
    profile, task = checkpoint_task(meta, args.data_dir, not args.no_download)
    forget_idx = task.forget_idx(args.rate) if args.rate is not None else read_forget(args.forget_file)
    forget_idx = task.check_forget_idx(forget_idx, within_corrupt=args.within_corrupt)
    sets = {args.method: settings_for(args.set, args.method)}
    shortcuts = shortcut_settings(expand_ratio=args.expand_ratio)
    cell = checkpoint_cell(meta, profile, task, args.method, args.rate, sets, shortcuts, args.steps)
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
    save_checkpoint(result.model, out / "model.safetensors", new_meta)
    write_json_atomic(out / "metrics.json", {**record, "before": before})
    print("before (%):", shown(before))
    print("after (%): ", shown(record["metrics"]))
    print(f"wrote {out / 'model.safetensors'} and {out / 'metrics.json'} ({record['wall_s']:.0f} s)")
    return 0


# --- a user's own model and data ------------------------------------------------------------------


def _own_settings(args) -> dict:
    """The method's settings from ``--steps``, ``--expand-ratio`` and ``--set``, checked before any work."""
    from rem.cli.settings import settings_for
    from rem.methods import get_method

    overrides = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.expand_ratio is not None:
        overrides["expand_ratio"] = args.expand_ratio
    overrides.update(settings_for(args.set, args.method))
    get_method(args.method, **overrides)  # settings checked (and typed) before any work
    return overrides


def _healed_file(args) -> Path:
    """``--out``: a writable file, never the starting weights."""
    from rem.paths import check_output_file

    out = check_output_file(args.out, "--out")
    if out.resolve() == Path(args.weights).resolve():
        raise ConfigError(f"--out {out} would overwrite the starting weights {args.weights}; choose another file")
    return out


def _accuracies(task, forget_idx, targets, exclude, dev):
    """A function giving a model's accuracy on the found samples and on the rest (labels as trained)."""
    from rem.metrics import accuracy
    from rem.models.generic import GenericCapacity

    retain_idx = task.retain_idx(forget_idx)

    def accs(net) -> dict:
        w = GenericCapacity(net, targets, exclude)
        return {
            "acc_found": accuracy(w, task, forget_idx, task.y_train, device=dev),
            "acc_rest": accuracy(w, task, retain_idx, task.y_train, device=dev),
        }

    return accs


def _save_healed(healed, out: Path, record: dict) -> None:
    """The healed weights (its own ``state_dict`` keys, the record's summary as metadata) and the record."""
    from safetensors.torch import save_file

    from rem.paths import atomic_path, write_json_atomic

    state = {k: v.detach().cpu().contiguous().clone() for k, v in healed.state_dict().items()}
    meta = {k: record[k] for k in ("method", "model", "n_found", "split_hash")}
    meta["method_config"] = json.dumps(record["method_config"], default=str)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    write_json_atomic(out.with_suffix(".json"), record)


def run_own_model(args) -> int:
    """``rem unlearn --model``: heal a user's own model on the user's own data (see the module docstring)."""
    from rem.api import check_logits, unlearn
    from rem.cli.inputs import user_model_and_data
    from rem.methods import get_method
    from rem.models.generic import GenericCapacity
    from rem.runtime import measure, pick_device
    from rem.units import percent

    model, task, forget_idx = user_model_and_data(args, "heals your own model")
    forget_idx = task.check_forget_idx(forget_idx)
    targets, exclude = names(args.targets), names(args.exclude)
    overrides = _own_settings(args)
    out = _healed_file(args)
    dev = pick_device(args.device)
    probe = GenericCapacity(model, targets, exclude)  # also checks the target patterns
    check_logits(model, task)
    accs = _accuracies(task, forget_idx, targets, exclude, dev)

    def percents(a: dict) -> str:
        return json.dumps({k: percent(v, 2) for k, v in a.items()})

    print(
        f"{args.method} on {type(model).__name__} ({sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(probe.target_names)} target layers): {task.n_train} images {tuple(task.data.x_train.shape[1:])}, "
        f"{task.data.num_classes} classes, {len(forget_idx)} found"
    )
    before = accs(model)
    print("before (%):", percents(before))
    with measure(dev) as m:
        healed, history = unlearn(
            model,
            task,
            forget_idx,
            args.method,
            targets=targets,
            exclude=exclude,
            device=dev,
            progress=not args.quiet,
            **overrides,
        )
    healed = healed.cpu()
    after = accs(healed)
    print("after (%): ", percents(after), f"({m.wall_s:.0f} s)")
    record = {
        "method": args.method,
        "model": args.model,
        "n_found": str(len(forget_idx)),
        "split_hash": task.split_hash(forget_idx),
        "method_config": get_method(args.method, **overrides).config.as_dict(),
        "before": before,
        "after": after,
        "wall_s": m.wall_s,
        "history": history,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _save_healed(healed, out, record)
    print(
        f"wrote {out} (load with {type(model).__name__}(...).load_state_dict(safetensors.torch.load_file(...))) "
        f"and {out.with_suffix('.json')}"
    )
    return 0
