"""Checkpoints: one safetensors file whose header carries the JSON model description (nanoGPT-style).

The header metadata holds ``rem.spec`` (the model description, see :meth:`CapacityNet.spec`),
``rem.meta`` (free JSON: task, pretraining type, metrics...) and ``rem.sha256`` (a digest of every
tensor's name, dtype, shape and bytes). Loading never unpickles; a truncated, altered or mismatched
file raises :class:`~rem.errors.CheckpointError` saying what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from rem.errors import CheckpointError, ConfigError
from rem.models import CapacityNet, build_model

FORMAT = "rem-checkpoint/1"


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(model: CapacityNet, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``model`` (and ``meta``) atomically to ``path`` (a ``.safetensors`` file)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "rem.spec": json.dumps(model.spec()), "rem.meta": json.dumps(meta or {}),
              "rem.sha256": _digest(tensors)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[CapacityNet, dict]:
    """Rebuild the model from a checkpoint written by :func:`save_checkpoint`; return (model, meta)."""
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
        raise CheckpointError(f"{path} is not a readable safetensors file (damaged or truncated?): {e}") from e
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a rem checkpoint (format {header.get('format')!r}, "
                              f"expected {FORMAT!r})")
    if _digest(tensors) != header.get("rem.sha256"):
        raise CheckpointError(f"{path} is damaged: its tensors do not match the digest recorded when it was saved")
    try:
        spec, meta = json.loads(header["rem.spec"]), json.loads(header.get("rem.meta", "{}"))
        model = build_model(spec)
    except (KeyError, json.JSONDecodeError, ConfigError) as e:
        raise CheckpointError(f"{path} has an unusable model description: {e}") from e
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the described model: {e}") from e
    return model.to(device).eval(), meta
