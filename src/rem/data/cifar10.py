"""CIFAR-10 (python version): the five training batches and the test batch, md5-checked, downloaded when allowed.

The md5 tables and URL are read at call time, so tests may monkeypatch them.
"""

from __future__ import annotations

import http.client
import pickle
from pathlib import Path

import numpy as np
import torch

from rem.data.container import ImageData
from rem.data.files import (
    _cache_key,
    _cached,
    _check_md5,
    _download,
    _extract_folder,
    _how_to_fix,
    _refetch_advice,
    _store,
    resolve_data_dir,
)
from rem.errors import DataError

CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _ensure_cifar10(data_dir: Path, download: bool) -> Path:
    folder = data_dir / CIFAR10_DIRNAME
    if folder.is_dir():
        return folder
    archive = data_dir / Path(CIFAR10_URL).name
    if archive.is_file():  # a manually downloaded archive is used without the network
        _check_md5(archive, CIFAR10_ARCHIVE_MD5)
        _extract_folder(archive, CIFAR10_DIRNAME, data_dir)
        return folder
    fix = _how_to_fix(data_dir, f"{CIFAR10_DIRNAME}/", [CIFAR10_URL])
    if not download:
        raise DataError(f"CIFAR-10 not found: no folder {folder} (downloading is off). {fix}")
    try:
        _download(CIFAR10_URL, archive, CIFAR10_ARCHIVE_MD5)
        _extract_folder(archive, CIFAR10_DIRNAME, data_dir)
    except (OSError, http.client.HTTPException, DataError) as exc:
        raise DataError(
            f"CIFAR-10 not found: no folder {folder}, and downloading {CIFAR10_URL} failed ({exc}). {fix}"
        ) from exc
    return folder


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # the official md5-checked data files
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 batch: {exc!r}") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(f"{path}: data {data.shape} and labels {labels.shape} do not form a CIFAR-10 batch")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | Path | None = None, download: bool = True) -> ImageData:
    """Load CIFAR-10 (50000 train / 10000 test, 32x32) from ``<data_dir>/cifar-10-batches-py``.

    Every file is md5-checked (:data:`CIFAR10_MD5`); a mismatch raises :class:`DataError`. When the
    folder is missing, a ``cifar-10-python.tar.gz`` in ``data_dir`` is extracted, or else (if
    ``download``) the archive is downloaded first. Loads are cached in memory; callers get copies.
    """
    root = resolve_data_dir(data_dir)
    folder = _ensure_cifar10(root, download)
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
    files: dict[Path, str] = {}
    for n in names:
        p = folder / n
        if not p.is_file():
            raise DataError(
                f"CIFAR-10 folder {folder} lacks {n}. "
                + _refetch_advice(folder, root, f"{CIFAR10_DIRNAME}/", [CIFAR10_URL])
            )
        files[p] = CIFAR10_MD5[n]
    key = _cache_key("cifar10", files)
    hit = _cached(key)
    if hit is not None:
        return hit
    for p, md5 in files.items():
        _check_md5(p, md5, _refetch_advice(folder, root, f"{CIFAR10_DIRNAME}/", [CIFAR10_URL]))

    train = [_read_cifar_batch(folder / n) for n in CIFAR10_TRAIN_FILES]
    x_test, y_test = _read_cifar_batch(folder / CIFAR10_TEST_FILE)
    try:
        with open(folder / CIFAR10_META_FILE, "rb") as f:
            meta = pickle.load(f, encoding="bytes")  # the official md5-checked meta file
        classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in meta[b"label_names"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{folder / CIFAR10_META_FILE} is not a CIFAR-10 meta file: {exc!r}") from exc
    data = ImageData(
        name="cifar10",
        x_train=torch.from_numpy(np.concatenate([b[0] for b in train])),
        y_train=torch.from_numpy(np.concatenate([b[1] for b in train])),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(y_test),
        num_classes=len(classes),
        classes=classes,
    )
    _store(key, data)
    return data
