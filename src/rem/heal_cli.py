"""``rem unlearn --model pkg.module:factory --weights model.safetensors --data PATH --forget found.txt
--out healed.safetensors``: heal a user's own model from the command line.

The factory (``package.module:function`` or ``path/to/file.py:function``, called with the JSON
``--factory-kwargs``) builds the architecture; the weights are read from a safetensors file only
(never unpickled) and must fit it exactly; the data are an ``.npz`` file or an image folder
(:mod:`rem.data.user`); the found samples are integers (indices in the data's order) or, for an image
folder, file names relative to it. Every problem is reported in one line naming what is wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

from rem.errors import CheckpointError, ConfigError, DataError, RemError


def add_user_args(p) -> None:
    """The options of ``rem unlearn`` for a user's own model (added to the existing sub-parser)."""
    g = p.add_argument_group("your own model and data (instead of --checkpoint)")
    g.add_argument(
        "--model",
        default=None,
        metavar="MODULE:FACTORY",
        help="function that builds your architecture: package.module:function or path/to/file.py:function",
    )
    g.add_argument("--factory-kwargs", default=None, metavar="JSON", help="keyword arguments of the factory, as JSON")
    g.add_argument("--weights", default=None, help="your trained weights, a .safetensors file (never unpickled)")
    g.add_argument(
        "--data",
        default=None,
        help="your training data: an .npz file (images x, labels y) or a folder of class folders",
    )
    g.add_argument(
        "--forget",
        dest="forget_file",
        default=None,
        help="file of the samples found to be corrupted: indices in the data's order, or (image "
        "folders) file names relative to the folder",
    )
    g.add_argument("--num-classes", type=int, default=None, help="number of classes (default: from the data)")
    g.add_argument(
        "--targets",
        default=None,
        help="REM: layers that get extra capacity, comma-separated names / suffixes / globs "
        "(default: every Conv2d and Linear but the last)",
    )
    g.add_argument("--exclude", default=None, help="REM: layers to leave out, same forms as --targets")
    g.add_argument(
        "--mean", default=None, help="per-channel normalisation mean in [0, 1], e.g. 0.5,0.5,0.5 (default: CIFAR-10's)"
    )
    g.add_argument("--std", default=None, help="per-channel normalisation std, e.g. 0.25,0.25,0.25")
    g.add_argument(
        "--crop-pad", type=int, default=None, help="padding of training crops in pixels (default size/8; 0: no crops)"
    )
    g.add_argument(
        "--pad-mode", default="zeros", choices=["zeros", "reflect"], help="how crops are padded (default zeros)"
    )
    g.add_argument("--no-flip", action="store_true", help="no horizontal flips in training")


def load_factory(spec: str):
    """The callable named by ``module:function`` or ``file.py:function``."""
    if ":" not in spec:
        raise ConfigError(f"--model must be MODULE:FACTORY (e.g. mypkg.models:resnet18), got {spec!r}")
    mod_name, _, fn_name = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise ConfigError(f"cannot import the model factory {spec!r}: no file {path}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:  # as `python -m` does: modules of the current folder import
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except RemError:
        raise
    except Exception as e:  # an import runs the user's code: any error is theirs to see
        raise ConfigError(f"cannot import the model factory {spec!r}: {type(e).__name__}: {_first_line(e)}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"cannot import the model factory {spec!r}: {mod_name} has no callable {fn_name!r}")
    return fn


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else ""


def build_model(spec: str, kwargs_json: str | None = None) -> nn.Module:
    fn = load_factory(spec)
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"--factory-kwargs is not JSON: {e}") from e
    if not isinstance(kwargs, dict):
        raise ConfigError("--factory-kwargs must be a JSON object of keyword arguments")
    try:
        model = fn(**kwargs)
    except Exception as e:
        raise ConfigError(f"the model factory {spec}(**{kwargs}) failed: {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model factory {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors file into ``model``, strictly; a mismatch names the keys or shapes that differ."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    if path.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"):
        raise CheckpointError(
            f"{path}: rem reads weights from safetensors only (never unpickles); convert with "
            "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {_first_line(e)}") from e
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (file vs model, e.g. {shapes[:2]})")
        raise CheckpointError(
            f"the weights in {path} do not fit the architecture {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def read_forget(path: str | Path, task) -> torch.Tensor:
    """Found samples from a file: integers, or file names of an image folder's images (one per line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no forget file at {p}")
    text = p.read_text().strip()
    if text.startswith("["):
        try:
            tokens = [str(v) for v in json.loads(text)]
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not a JSON list: {e}") from e
    else:
        lines = [t.strip() for t in text.splitlines() if t.strip() and not t.strip().startswith("#")]
        numbers = " ".join(lines).replace(",", " ").split()
        tokens = numbers if all(t.lstrip("-").isdigit() for t in numbers) else lines
    try:
        return torch.tensor([int(t) for t in tokens], dtype=torch.int64)
    except ValueError:
        pass
    if not task.files:
        raise DataError(
            f"{p}: found samples must be integer indices into the data (file names work only for image folders)"
        )
    where = {f: i for i, f in enumerate(task.files)}
    bad = [t for t in tokens if t not in where and not t.isdigit()]
    if bad:
        raise DataError(f"{p}: {len(bad)} entries are neither indices nor images of the data folder: {bad[:3]}")
    return torch.tensor([where[t] if t in where else int(t) for t in tokens], dtype=torch.int64)


def _floats(s: str | None, what: str):
    if s is None:
        return None
    try:
        return tuple(float(v) for v in s.split(","))
    except ValueError as e:
        raise ConfigError(f"--{what} must be comma-separated numbers, got {s!r}") from e


def run(args) -> int:
    """``rem unlearn`` for a user's own model (see the module docstring)."""
    from safetensors.torch import save_file

    from rem.data.user import Preprocess, user_task
    from rem.heal import check_logits, heal
    from rem.methods import get_method
    from rem.metrics import accuracy
    from rem.models.generic import GenericCapacity
    from rem.paths import atomic_path, check_output_file, write_json_atomic
    from rem.runtime import measure, pick_device
    from rem.units import percent

    need = [
        o for o, v in (("--weights", args.weights), ("--data", args.data), ("--forget", args.forget_file)) if v is None
    ]
    if need:
        raise ConfigError(f"--model needs {' and '.join(need)}")
    if getattr(args, "checkpoint", None) or getattr(args, "rate", None) is not None:
        raise ConfigError("--model heals your own model: --checkpoint and --rate belong to rem's own checkpoints")
    model = build_model(args.model, args.factory_kwargs)
    load_weights(model, args.weights)
    pre = Preprocess(
        mean=_floats(args.mean, "mean"),
        std=_floats(args.std, "std"),
        crop_pad=args.crop_pad,
        pad_mode=args.pad_mode,
        flip=not args.no_flip,
    )
    task = user_task(args.data, num_classes=args.num_classes, preprocess=pre)
    forget_idx = task.check_forget_idx(read_forget(args.forget_file, task))

    def split(s):
        return [t.strip() for t in s.split(",") if t.strip()] if s else None

    targets, exclude = split(args.targets), split(args.exclude)
    overrides = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.expand_ratio is not None:
        overrides["expand_ratio"] = args.expand_ratio
    from rem.bench.cli import settings_for

    overrides.update(settings_for(args.set, args.method))
    cfg = get_method(args.method, **overrides).config  # settings checked (and typed) before any work
    out = check_output_file(args.out, "--out")  # writable, checked before any work
    if out.resolve() == Path(args.weights).resolve():
        raise ConfigError(f"--out {out} would overwrite the starting weights {args.weights}; choose another file")
    dev = pick_device(args.device)
    probe = GenericCapacity(model, targets, exclude)  # also checks the target patterns
    check_logits(model, task)
    retain_idx = task.retain_idx(forget_idx)
    y = task.y_train

    def accs(net) -> dict:
        w = GenericCapacity(net, targets, exclude)
        return {
            "acc_found": accuracy(w, task, forget_idx, y, device=dev),
            "acc_rest": accuracy(w, task, retain_idx, y, device=dev),
        }

    def shown(a: dict) -> str:
        return json.dumps({k: percent(v, 2) for k, v in a.items()})

    print(
        f"{args.method} on {type(model).__name__} ({sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(probe.target_names)} target layers): {task.n_train} images {tuple(task.data.x_train.shape[1:])}, "
        f"{task.data.num_classes} classes, {len(forget_idx)} found"
    )
    before = accs(model)
    print("before (%):", shown(before))
    with measure(dev) as m:
        healed, history = heal(
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
    print("after (%): ", shown(after), f"({m.wall_s:.0f} s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in healed.state_dict().items()}
    meta = {
        "method": args.method,
        "model": args.model,
        "n_found": str(len(forget_idx)),
        "split_hash": task.split_hash(forget_idx),
        "method_config": json.dumps(cfg.as_dict(), default=str),
    }
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    record = {
        **meta,
        "method_config": cfg.as_dict(),
        "before": before,
        "after": after,
        "wall_s": m.wall_s,
        "history": history,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json_atomic(out.with_suffix(".json"), record)
    print(
        f"wrote {out} (load with {type(model).__name__}(...).load_state_dict(safetensors.torch.load_file(...))) "
        f"and {out.with_suffix('.json')}"
    )
    return 0


__all__ = ["add_user_args", "build_model", "load_factory", "load_weights", "read_forget", "run"]
