"""Data files: where they live, md5 integrity checks, atomic downloads, safe archive extraction, and an
in-process cache of checked loads (keyed by folder and file identities)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rem.data.container import ImageData
from rem.errors import DataError

_DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_CACHE_SIZE = 2


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Where data sets live: ``data_dir`` if given, else ``$REM_DATA_DIR``, else ``~/.cache/rem/data``.

    An empty ``REM_DATA_DIR`` counts as unset. The directory is not created here.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser().resolve()
    env = os.environ.get("REM_DATA_DIR", "")
    if env.strip():
        return Path(env).expanduser().resolve()
    return (Path.home() / ".cache" / "rem" / "data").resolve()


def md5sum(path: str | Path) -> str:
    """Hex md5 digest of the file at ``path``."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_md5(path: Path, expected: str, advice: str = "") -> None:
    actual = md5sum(path)
    if actual != expected:
        raise DataError(
            f"{path} is damaged or not the expected file: md5 {actual}, expected {expected}. "
            + (advice or "Delete it and download it again.")
        )


def _refetch_advice(folder: Path, root: Path, what: str, urls: list[str]) -> str:
    """The one piece of advice for a damaged or missing data file (md5 mismatch and missing file alike)."""
    return f"Delete the folder {folder} so that it is downloaded again. " + _how_to_fix(root, what, urls)


def _download(url: str, dest: Path, expected_md5: str) -> None:
    """Download ``url`` to ``dest`` through a temporary file; only an md5-correct file is renamed in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"rem: downloading {url} -> {dest}", file=sys.stderr, flush=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
        if h.hexdigest() != expected_md5:
            raise DataError(f"download of {url} has md5 {h.hexdigest()}, expected {expected_md5}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _safe_members(archive: Path, tar: tarfile.TarFile, prefix: str) -> list[tarfile.TarInfo]:
    """Members under ``prefix``; refuses absolute paths, '..', links and special files."""
    members = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or os.path.isabs(m.name) or ".." in parts:
            raise DataError(f"{archive}: refusing unsafe member path {m.name!r}")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"{archive}: refusing member {m.name!r} that is not a plain file or folder")
        if parts and parts[0] == prefix:
            members.append(m)
    return members


def _extract_folder(archive: Path, folder_name: str, dest_dir: Path) -> None:
    """Extract ``folder_name/`` from a tar archive into ``dest_dir`` (via a temporary folder)."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _safe_members(archive, tar, folder_name)
                if not members:
                    raise DataError(f"{archive} holds no folder {folder_name}/")
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError) as exc:
            raise DataError(f"{archive} is not a readable tar archive: {exc}") from exc
        target = dest_dir / folder_name
        if not target.exists():
            os.replace(tmp / folder_name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _how_to_fix(data_dir: Path, what: str, urls: list[str]) -> str:
    return (
        f"Fix: pass --data-dir DIR (or set REM_DATA_DIR=DIR) to a directory that holds {what}, "
        f"or download {' and '.join(urls)} manually into {data_dir}."
    )


# --------------------------------------------------------------------------------------------------
# In-process cache of md5-checked loads, keyed by folder and file identities.

_cache: OrderedDict[tuple[Any, ...], ImageData] = OrderedDict()


def clear_cache() -> None:
    """Forget data sets kept in memory by :func:`load_cifar10` and :func:`load_svhn`."""
    _cache.clear()


def _cache_key(name: str, files: dict[Path, str]) -> tuple[Any, ...]:
    ident = []
    for path, md5 in sorted(files.items()):
        st = path.stat()
        ident.append((str(path), md5, st.st_size, st.st_mtime_ns, st.st_ino))
    return (name, tuple(ident))


def _cached(key: tuple[Any, ...]) -> ImageData | None:
    hit = _cache.get(key)
    if hit is None:
        return None
    _cache.move_to_end(key)
    return hit._clone()


def _store(key: tuple[Any, ...], data: ImageData) -> None:
    _cache[key] = data._clone()
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
