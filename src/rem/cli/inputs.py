"""What the commands read: a file of discovered samples, a checkpoint's own task, a user's own model and data.

- :func:`read_forget`: the one reader of ``--forget-file`` / ``--forget``, for checkpoints and a user's data
  alike: integer indices (whitespace / comma separated, or one JSON list) or, for an image folder, file
  names (one per line, or JSON strings); a UTF-8 byte-order mark, CRLF line ends and ``#`` comment lines
  are fine, and so is a pipe (``--forget <(seq 0 9)``: read once, never reopened). An entry listed twice
  is an error that quotes the entries as the file wrote them.
- :func:`load_factory`, :func:`build_user_model`, :func:`load_weights`: ``--model MODULE:FACTORY`` with its
  ``--factory-kwargs`` builds the architecture; the weights come from a safetensors file only (never
  unpickled) and must fit it exactly.
- :func:`checkpoint_task`: the task a checkpoint written by rem was trained on (or another task's kind).

Every problem is reported in one line naming what is wrong (a :class:`~rem.errors.RemError`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import torch
from torch import nn

from rem.errors import CheckpointError, ConfigError, DataError, IndexSetError

_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64 = (-(2**63), 2**63)


def _read_text(p: Path) -> str:
    """The text of ``p`` (a file or a pipe, read once), without a UTF-8 byte-order mark."""
    if p.is_dir():
        raise DataError(f"the forget file {p} is a folder, not a file")
    if not p.exists():
        raise DataError(f"no forget file at {p}")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the forget file {p}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{p} is not a text file of indices or file names (not UTF-8)") from None


def _entries(p: Path, text: str) -> list[str | int]:
    """The file's entries as written: ints (from JSON), or text tokens (indices or file names)."""
    text = text.strip()
    if text.startswith("["):
        try:
            vals = json.loads(text)
        except ValueError as e:
            raise DataError(f"{p} is not valid JSON: {e}") from None
        if not isinstance(vals, list) or any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in vals):
            raise DataError(f"{p}: a JSON forget file must be one list of integers (or of image file names)")
        return vals
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    tokens = " ".join(lines).replace(",", " ").split()
    return tokens if all(_INTEGER.fullmatch(t) for t in tokens) else lines


def _index(entry: str | int, where: dict[str, int]) -> int | None:
    """The sample index of one entry: an image file name of the folder, else an integer; None if neither."""
    if isinstance(entry, int):
        return entry
    if entry in where:
        return where[entry]
    return int(entry, 10) if _INTEGER.fullmatch(entry) else None


def read_forget(path: str | Path, files: tuple[str, ...] | list[str] | None = None) -> torch.Tensor:
    """The discovered samples listed in ``path`` as indices into the training data (int64, in file order).

    ``files``: the image files of an image folder in the data's order (:attr:`rem.data.user.UserTask.files`),
    so that entries may name them; without it only integer indices are accepted. Ranges and duplicates are
    checked here (quoting the entries as written); the task checks that each index lies in its data.
    """
    p = Path(path)
    entries = _entries(p, _read_text(p))
    where = {f: i for i, f in enumerate(files or ())}
    idx = [_index(e, where) for e in entries]
    bad = [e for e, i in zip(entries, idx) if i is None]
    if bad:
        if not where:
            raise DataError(
                f"{p}: found samples must be integer indices into the data (file names work only for image "
                f"folders): {bad[:3]}"
            )
        raise DataError(f"{p}: {len(bad)} entries are neither indices nor images of the data folder: {bad[:3]}")
    big = [i for i in idx if not _INT64[0] <= i < _INT64[1]]
    if big:
        raise IndexSetError(f"{p}: {len(big)} indices out of range (too large): {big[:3]}")
    seen: dict[int, str | int] = {}
    repeated = []
    for e, i in zip(entries, idx):
        if i in seen:
            repeated.append(e if e == seen[i] else f"{e} (= {seen[i]})")
        else:
            seen[i] = e
    if repeated:
        raise IndexSetError(f"{p}: {len(repeated)} duplicated entries (each sample once): {repeated[:5]}")
    return torch.tensor(idx, dtype=torch.int64)


def checkpoint_task(meta: dict, data_dir, download: bool = True, kind: str | None = None):
    """(profile, task) of a checkpoint's metadata; its own task's split is checked against the recorded one.
    ``kind``: another corruption of the same data (``rem eval --task``)."""
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


def load_factory(spec: str):
    """The callable named by ``module:function`` or ``file.py:function``."""
    if ":" not in spec:
        raise ConfigError(f"--model must be MODULE:FACTORY (e.g. mypkg.models:resnet18), got {spec!r}")
    mod_name, _, fn_name = spec.rpartition(":")
    if mod_name.endswith(".py") and not Path(mod_name).is_file():
        raise ConfigError(f"cannot import the model factory {spec!r}: no file {mod_name}")
    try:
        if mod_name.endswith(".py"):
            loader_spec = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:  # as `python -m` does: modules of the current folder import
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except Exception as e:  # an import runs the user's code: any error is theirs to see
        raise ConfigError(f"cannot import the model factory {spec!r}: {type(e).__name__}: {_first_line(e)}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"cannot import the model factory {spec!r}: {mod_name} has no callable {fn_name!r}")
    return fn


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else ""


def build_user_model(spec: str, kwargs_json: str | None = None) -> nn.Module:
    """The user's architecture: the factory ``spec`` called with the JSON object ``kwargs_json``."""
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


def user_model_and_data(args, what: str):
    """(model, task, forget_idx) of ``--model``, ``--weights``, ``--data`` and ``--forget`` with the data's
    preparation options; ``what`` says in the error what ``--model`` does (a line of help)."""
    from rem.cli.args import numbers
    from rem.data.user import Preprocess, user_task

    need = [o for o, v in (("--weights", args.weights), ("--data", args.data), ("--forget", args.forget_file)) if not v]
    if need:
        raise ConfigError(f"--model needs {' and '.join(need)}")
    if args.checkpoint or args.rate is not None:
        raise ConfigError(f"--model {what}: --checkpoint and --rate belong to rem's own checkpoints")
    model = build_user_model(args.model, args.factory_kwargs)
    load_weights(model, args.weights)
    pre = Preprocess(
        mean=numbers(args.mean, "--mean", 0, 1),
        std=numbers(args.std, "--std", positive=True),
        crop_pad=args.crop_pad,
        pad_mode=args.pad_mode,
        flip=not args.no_flip,
    )
    task = user_task(args.data, num_classes=args.num_classes, preprocess=pre)
    if args.num_classes is not None:
        from rem.api import check_logits

        k = check_logits(model, task)
        if k != args.num_classes:
            raise ConfigError(f"--num-classes {args.num_classes}, but the model outputs {k} classes")
    return model, task, read_forget(args.forget_file, task.files)
