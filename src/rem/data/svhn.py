"""SVHN (cropped digits, ``train_32x32.mat`` / ``test_32x32.mat``), md5-checked, downloaded when allowed."""

from __future__ import annotations

import http.client
from pathlib import Path

import numpy as np
import torch

from rem.data.container import ImageData
from rem.data.files import (
    _cache_key,
    _cached,
    _check_md5,
    _download,
    _how_to_fix,
    _store,
    resolve_data_dir,
)
from rem.errors import DataError

SVHN_DIRNAME = "svhn"
SVHN_URLS: dict[str, str] = {
    "train_32x32.mat": "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
    "test_32x32.mat": "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
}
SVHN_MD5: dict[str, str] = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
SVHN_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


def _read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x = np.asarray(mat["X"])
        y = np.asarray(mat["y"]).reshape(-1)
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"{path} is not an SVHN .mat file: {exc!r}") from exc
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != y.shape[0]:
        raise DataError(f"{path}: X {x.dtype} {x.shape} and y {y.shape} are not SVHN's [H, W, 3, N] and [N, 1]")
    labels = y.astype(np.int64)
    labels[labels == 10] = 0  # SVHN writes digit 0 as label 10
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 1..10 (min {labels.min()}, max {labels.max()})")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # [N, 3, H, W]
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_svhn(data_dir: str | Path | None = None, download: bool = True) -> ImageData:
    """Load SVHN cropped digits (73257 train / 26032 test, 32x32) from ``<data_dir>/svhn/``.

    Reads ``train_32x32.mat`` and ``test_32x32.mat`` (md5-checked against :data:`SVHN_MD5`), maps
    label 10 to digit 0 and downloads missing files when ``download``. Loads are cached in memory.
    """
    root = resolve_data_dir(data_dir)
    folder = root / SVHN_DIRNAME
    files: dict[Path, str] = {}
    for fname, url in SVHN_URLS.items():
        p = folder / fname
        files[p] = SVHN_MD5[fname]
        if p.is_file():
            continue
        fix = _how_to_fix(folder, "svhn/train_32x32.mat and svhn/test_32x32.mat", list(SVHN_URLS.values()))
        if not download:
            raise DataError(f"SVHN not found: no file {p} (downloading is off). {fix}")
        try:
            _download(url, p, SVHN_MD5[fname])
        except (OSError, http.client.HTTPException, DataError) as exc:
            raise DataError(f"SVHN not found: no file {p}, and downloading {url} failed ({exc}). {fix}") from exc
    key = _cache_key("svhn", files)
    hit = _cached(key)
    if hit is not None:
        return hit
    fix = _how_to_fix(folder, "svhn/train_32x32.mat and svhn/test_32x32.mat", list(SVHN_URLS.values()))
    for p, md5 in files.items():
        _check_md5(p, md5, f"Delete {p} so that it is downloaded again. {fix}")
    x_train, y_train = _read_svhn_mat(folder / "train_32x32.mat")
    x_test, y_test = _read_svhn_mat(folder / "test_32x32.mat")
    data = ImageData("svhn", x_train, y_train, x_test, y_test, len(SVHN_CLASSES), SVHN_CLASSES)
    _store(key, data)
    return data
