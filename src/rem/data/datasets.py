"""Image classification data sets by name: CIFAR-10, SVHN and a generated stand-in (:func:`load_dataset`).

Every loader returns an :class:`ImageData` (:mod:`rem.data.container`) holding whole splits as uint8
tensors ``[N, 3, H, W]`` with int64 labels. Real data sets are read from a data directory (see
:func:`resolve_data_dir`), every file is md5-checked before use, and missing files are downloaded
(atomically) when allowed (:mod:`rem.data.files`). One module per data set (:mod:`rem.data.cifar10`,
:mod:`rem.data.svhn`, :mod:`rem.data.generated`); resampling in :mod:`rem.data.transforms`. This module
dispatches by name and re-exports their public names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rem.data.cifar10 import (
    CIFAR10_ARCHIVE_MD5,
    CIFAR10_CLASSES,
    CIFAR10_DIRNAME,
    CIFAR10_MD5,
    CIFAR10_URL,
    load_cifar10,
)
from rem.data.container import ImageData
from rem.data.files import clear_cache, md5sum, resolve_data_dir
from rem.data.generated import make_generated
from rem.data.svhn import SVHN_CLASSES, SVHN_DIRNAME, SVHN_MD5, SVHN_URLS, load_svhn
from rem.data.transforms import balanced_subset_indices, downsample, subsample
from rem.errors import ConfigError

__all__ = [
    "CIFAR10_ARCHIVE_MD5",
    "CIFAR10_CLASSES",
    "CIFAR10_DIRNAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASET_NAMES",
    "SVHN_CLASSES",
    "SVHN_DIRNAME",
    "SVHN_MD5",
    "SVHN_URLS",
    "ImageData",
    "balanced_subset_indices",
    "clear_cache",
    "downsample",
    "load_cifar10",
    "load_dataset",
    "load_svhn",
    "make_generated",
    "md5sum",
    "resolve_data_dir",
    "subsample",
]

DATASET_NAMES: tuple[str, ...] = ("cifar10", "svhn", "generated")


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True, **kwargs: Any) -> ImageData:
    """Load a data set by name: "cifar10", "svhn" or "generated" (``kwargs`` go to :func:`make_generated`)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key == "generated":
        return make_generated(**kwargs)
    if kwargs:
        raise ConfigError(f"data set {name!r} takes no extra options, got {sorted(kwargs)}")
    if key == "cifar10":
        return load_cifar10(data_dir, download=download)
    if key == "svhn":
        return load_svhn(data_dir, download=download)
    raise ConfigError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
