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

from rem.cli.args import (
    add_common,
    add_forget_options,
    add_user_model_options,
    int_at_least,
    names,
    number_in,
    refuse_inapplicable,
    refuse_setting,
    shown,
)
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
        type=number_in(0),
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
    refuse_inapplicable(args)  # options of the other branch (--data with --checkpoint, ...), before any work
    if args.expand_ratio is not None:
        refuse_setting(args.method, "--expand-ratio", "expand_ratio")
    if args.model is not None:
        return run_own_model(args)
    return run_checkpoint(args)


# --- a checkpoint written by rem ------------------------------------------------------------------


def _result(args):
    """``--out`` as rem's one writer (:class:`rem.output.Output`) of ``model.safetensors`` and ``metrics.json``,
    claimed before any work: not the starting checkpoint, no result there unless ``--overwrite``."""
    from rem.output import Output

    out = Path(args.out)
    return Output(
        [out / "model.safetensors", out / "metrics.json"],
        overwrite=args.overwrite,
        what="--out",
        inputs={args.checkpoint: "starting checkpoint"},
    )


def run_checkpoint(args) -> int:
    """``rem unlearn --checkpoint``: the cell ``rem bench`` would run, on this checkpoint and D_f."""
    from rem.runtime import pick_device

    if args.checkpoint is None:
        raise RemError(
            "give --checkpoint (a model written by rem train), or --model with --weights, --data and "
            "--forget (your own model)"
        )
    if (args.rate is None) == (args.forget_file is None):
        raise RemError("give exactly one of --rate (a discovery rate) or --forget-file (a file of indices)")
    dev = pick_device(args.device)
    with _result(args) as result:
        _unlearn_checkpoint(args, dev, result)
    return 0


def _unlearn_checkpoint(args, dev, result) -> None:
    """Load, run, record and write (into the claimed ``result``)."""
    from rem.checkpoint import checkpoint_bytes, load_checkpoint
    from rem.cli.inputs import checkpoint_task, read_forget
    from rem.cli.settings import settings_for
    from rem.methods import get_method
    from rem.metrics import evaluate
    from rem.run import checkpoint_cell, shortcut_settings, unlearn_and_record

    model, meta = load_checkpoint(args.checkpoint, dev)
    profile, task = checkpoint_task(meta, args.data_dir, not args.no_download)
    forget_idx = task.forget_idx(args.rate) if args.rate is not None else read_forget(args.forget_file)
    forget_idx = task.check_forget_idx(forget_idx, within_corrupt=args.within_corrupt)
    sets = {args.method: settings_for(args.set, args.method)}
    shortcuts = shortcut_settings(expand_ratio=args.expand_ratio)
    cell = checkpoint_cell(meta, profile, task, args.method, args.rate, sets, shortcuts, args.steps)
    get_method(cell.method, **cell.overrides)  # validate the config before any work
    print(f"{args.method}: |D_f|={len(forget_idx)} of |D_c|={len(task.corrupt_idx)}, task {task.kind}", flush=True)
    result_, record = unlearn_and_record(
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
    model_file, metrics_file = result.paths
    result.write(
        {
            model_file: checkpoint_bytes(result_.model, new_meta),
            metrics_file: json.dumps({**record, "before": before}, indent=2, sort_keys=True, default=str),
        }
    )
    print("before (%):", shown(before))
    print("after (%): ", shown(record["metrics"]))
    print(f"wrote {model_file} and {metrics_file} ({record['wall_s']:.0f} s)")


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


def _healed_files(args):
    """``--out`` (a ``.safetensors`` file) and its record beside it, claimed before any work
    (:class:`rem.output.Output`): never the starting weights, no result there unless ``--overwrite``."""
    from rem.output import Output

    out = Path(args.out)
    if out.is_dir() or out.name in ("", ".", ".."):
        raise ConfigError(f"--out {out} is a folder, not a file: with --model, --out names the healed .safetensors")
    if out.suffix != ".safetensors":
        raise ConfigError(
            f"--out {out}: rem writes the healed weights as safetensors (never pickles); name it "
            f"{out.with_suffix('.safetensors').name}"
        )
    return Output(
        [out, out.with_suffix(".json")],
        overwrite=args.overwrite,
        what="--out",
        inputs={args.weights: "starting weights", args.data: "data", args.forget_file: "forget file"},
    )


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


def _healed_bytes(healed, record: dict) -> bytes:
    """The healed weights (its own ``state_dict`` keys, the record's summary as metadata) as a safetensors file."""
    from rem.checkpoint import safetensors_bytes

    state = {k: v.detach().cpu().contiguous() for k, v in healed.state_dict().items()}
    meta = {k: record[k] for k in ("method", "model", "n_found", "split_hash")}
    meta["method_config"] = json.dumps(record["method_config"], default=str)
    return safetensors_bytes(state, meta)


def run_own_model(args) -> int:
    """``rem unlearn --model``: heal a user's own model on the user's own data (see the module docstring)."""
    from rem.cli.inputs import user_model_and_data
    from rem.runtime import pick_device

    model, task, forget_idx = user_model_and_data(args, "heals your own model")  # inputs checked first
    forget_idx = task.check_forget_idx(forget_idx)
    overrides = _own_settings(args)
    dev = pick_device(args.device)
    with _healed_files(args) as result:  # claimed before any work
        _unlearn_own(args, model, task, forget_idx, overrides, dev, result)
    return 0


def _unlearn_own(args, model, task, forget_idx, overrides, dev, result) -> None:
    """Heal, record and write (into the claimed ``result``)."""
    from rem.api import check_logits, unlearn
    from rem.methods import get_method
    from rem.models.generic import GenericCapacity
    from rem.runtime import measure
    from rem.units import percent

    targets, exclude = names(args.targets), names(args.exclude)
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
    out, record_file = result.paths
    result.write(
        {out: _healed_bytes(healed, record), record_file: json.dumps(record, indent=2, sort_keys=True, default=str)}
    )
    print(
        f"wrote {out} (load with {type(model).__name__}(...).load_state_dict(safetensors.torch.load_file(...))) "
        f"and {record_file}"
    )
