"""Checkpoints: one safetensors file whose header carries the JSON model description (nanoGPT-style).

The header metadata holds ``format``, ``rem.spec`` (the model description, see :meth:`CapacityNet.spec`),
``rem.meta`` (free JSON: task, pretraining type, metrics...) and ``rem.sha256``: a digest of the other
header entries *and* of every tensor's name, dtype, shape and bytes, so a one-byte change anywhere in
the file (the task's kind or seed in the metadata included) is refused. Loading never unpickles; a
truncated, altered or mismatched file raises :class:`~rem.errors.CheckpointError` saying what is wrong.

Files are written by this module's own safetensors writer (the format is an 8-byte header length, a
JSON header, then the raw tensors) with sorted keys, so identical models and metadata give identical
bytes, and with the permissions of any other output (``0666`` less the umask). A file of another format
(``rem-checkpoint/1``, whose digest covered the tensors only) is refused, saying so.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch

from rem.errors import CheckpointError, ConfigError
from rem.models import CapacityNet, build_model

FORMAT = "rem-checkpoint/2"
_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _digest(tensors: dict[str, torch.Tensor], header: dict) -> str:
    """sha256 of the tensors and of every header entry but the digest itself."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for k in sorted(header):
        if k != "rem.sha256":
            v = str(header[k]).encode()
            h.update(f"|{k}|{len(v)}|".encode())
            h.update(v)
    return h.hexdigest()


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes, keys sorted (so the same content always gives the same bytes)."""
    entries, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise CheckpointError(f"cannot store tensor {name!r} of dtype {t.dtype}")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        entries[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps({"__metadata__": dict(sorted(metadata.items())), **entries}, separators=(",", ":"))
    hb = head.encode()
    hb += b" " * (-len(hb) % 8)
    return b"".join([struct.pack("<Q", len(hb)), hb, *blobs])


def checkpoint_bytes(model: CapacityNet, meta: dict | None = None) -> bytes:
    """The bytes of ``model``'s checkpoint file (with ``meta``): what :func:`save_checkpoint` writes."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "rem.spec": json.dumps(model.spec(), sort_keys=True),
        "rem.meta": json.dumps(meta or {}, sort_keys=True, default=str),
    }
    header["rem.sha256"] = _digest(tensors, header)
    return safetensors_bytes(tensors, header)


def save_checkpoint(model: CapacityNet, path: str | Path, meta: dict | None = None, *, overwrite: bool = False) -> Path:
    """Write ``model`` (and ``meta``) to ``path`` (a ``.safetensors`` file) with rem's one writer
    (:mod:`rem.output`: claimed, written atomically, rescued elsewhere if the disk fails).
    An existing file is refused (:class:`~rem.errors.OutputError`) unless ``overwrite``."""
    from rem.output import write_now

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"a checkpoint is a .safetensors file (rem never pickles), not {path.name!r}")
    write_now({path: checkpoint_bytes(model, meta)}, overwrite=overwrite, what="checkpoint")
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[CapacityNet, dict]:
    """Rebuild the model from a checkpoint written by :func:`save_checkpoint`; return (model, meta).

    The model carries the metadata as ``model.rem_meta`` (so :func:`rem.unlearn` and :func:`rem.evaluate`
    can tell when it is paired with a task it was not trained on).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for damaged files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a readable safetensors file (damaged or truncated?): {msg}") from e
    fmt = header.get("format")
    if isinstance(fmt, str) and fmt.startswith("rem-checkpoint/") and fmt != FORMAT:
        raise CheckpointError(
            f"{path} was written by another rem ({fmt}; this rem reads {FORMAT}); re-create it with this "
            "rem (`rem train`, or `rem bench` for a run folder)"
        )
    if fmt != FORMAT:
        raise CheckpointError(f"{path} is not a rem checkpoint (format {fmt!r}, expected {FORMAT!r})")
    expected = _digest(tensors, header)
    if expected != header.get("rem.sha256"):
        raise CheckpointError(
            f"{path} is damaged: its tensors or metadata do not match the digest recorded when it was saved"
        )
    try:
        spec, meta = json.loads(header["rem.spec"]), json.loads(header.get("rem.meta", "{}"))
        model = build_model(spec)
    except (KeyError, json.JSONDecodeError, ConfigError) as e:
        raise CheckpointError(f"{path} has an unusable model description: {e}") from e
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the described model: {str(e).splitlines()[0]}") from e
    model.rem_meta = meta
    return model.to(device).eval(), meta
