"""Output locations, checked before any work: a run of minutes to hours must not end in "cannot write".

:func:`check_output_dir` and :func:`check_output_file` create nothing; they find the nearest existing
ancestor of the path and check that it is a folder this process may write into, and that the path
itself (if it exists) is of the right kind. A problem raises :class:`~rem.errors.ConfigError` in one line.
:func:`write_atomic` (and :func:`atomic_path` for writers that need a file name) write every file rem writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rem.errors import ConfigError


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and not p.is_symlink():
        if p.parent == p:
            break
        p = p.parent
    return p


def _check_writable_ancestor(path: Path, what: str) -> None:
    anc = _nearest_existing(path.parent if not path.exists() else path)
    if not anc.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written: no write permission in {anc}")


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """``path`` is, or can be created as, a folder this process can write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} {path} cannot be written: no write permission")
        return path
    _check_writable_ancestor(path, what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """``path`` is, or can be created as, a file this process can write (its folder included)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file")
    if str(path).endswith(os.sep) or path.name in ("", ".", ".."):
        raise ConfigError(f"{what} {path} names a folder, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path} cannot be written: no write permission")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {parent} is a file, not a folder")
    if parent.is_dir():
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} {path} cannot be written: no write permission in {parent}")
        return path
    _check_writable_ancestor(parent, what)
    return path


# --- atomic writes: the one helper every file rem writes goes through ---------------------------------


def _file_mode() -> int:
    """The mode a new file gets under the current umask (``mkstemp`` would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file next to ``path`` to write; renamed over ``path`` when the block ends without error
    (after an fsync), removed otherwise. A reader never sees a half-written file, a killed writer leaves none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: str | Path, obj) -> Path:
    """``obj`` as indented JSON with sorted keys, written atomically."""
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))
