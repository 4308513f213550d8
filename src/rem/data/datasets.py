"""Image classification data sets: CIFAR-10, SVHN and a generated stand-in.

Every loader returns an :class:`ImageData` holding whole splits as uint8 tensors ``[N, 3, H, W]``
with int64 labels. Real data sets are read from a data directory (see :func:`resolve_data_dir`),
every file is md5-checked before use, and missing files are downloaded (atomically) when allowed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rem.errors import ConfigError, DataError

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

# --------------------------------------------------------------------------------------------------
# Constants. The md5 tables and URLs are read at call time, so tests may monkeypatch them.

DATASET_NAMES: tuple[str, ...] = ("cifar10", "svhn", "generated")

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

_DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_CACHE_SIZE = 2


# --------------------------------------------------------------------------------------------------
# The container.


@dataclass
class ImageData:
    """Both splits of an image classification data set, held in memory.

    Attributes:
        name: short name of the data set ("cifar10", "svhn", "generated", ...).
        x_train: uint8 images ``[N, C, H, W]`` (C is 3 for every loader here), contiguous.
        y_train: int64 labels ``[N]`` in ``[0, num_classes)``.
        x_test: uint8 images ``[M, C, H, W]``, contiguous.
        y_test: int64 labels ``[M]``.
        num_classes: number of classes.
        classes: class names, ``len(classes) == num_classes``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        if self.num_classes < 1 or len(self.classes) != self.num_classes:
            raise DataError(
                f"{self.name}: num_classes={self.num_classes} but {len(self.classes)} class names given"
            )
        shapes = []
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(
                    f"{self.name}: x_{split} must be uint8 [N, C, H, W], got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise DataError(
                    f"{self.name}: y_{split} must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(
                    f"{self.name}: y_{split} has labels outside [0, {self.num_classes}): "
                    f"min {int(y.min())}, max {int(y.max())}"
                )
            shapes.append(tuple(x.shape[1:]))
        if shapes[0] != shapes[1]:
            raise DataError(f"{self.name}: train images are {shapes[0]} but test images are {shapes[1]}")
        self.x_train = self.x_train.contiguous()
        self.x_test = self.x_test.contiguous()
        self.y_train = self.y_train.contiguous()
        self.y_test = self.y_test.contiguous()

    @property
    def image_size(self) -> int:
        """Image height H (images are square for every loader here)."""
        return int(self.x_train.shape[2])

    @property
    def n_train(self) -> int:
        """Number of training images."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str) -> ImageData:
        """Return a copy whose tensors live on ``device`` (no copy for tensors already there)."""
        return ImageData(
            name=self.name,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            num_classes=self.num_classes,
            classes=self.classes,
        )

    def class_counts(self, split: str = "train") -> list[int]:
        """Number of images of each class in ``split`` ("train" or "test")."""
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
        y = self.y_train if split == "train" else self.y_test
        return [int(c) for c in torch.bincount(y.cpu(), minlength=self.num_classes)]

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description: name, sizes and per-class counts."""
        return {
            "name": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "image_size": self.image_size,
            "channels": int(self.x_train.shape[1]),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "train_class_counts": dict(zip(self.classes, self.class_counts("train"))),
            "test_class_counts": dict(zip(self.classes, self.class_counts("test"))),
        }

    def _clone(self) -> ImageData:
        return ImageData(
            name=self.name,
            x_train=self.x_train.clone(),
            y_train=self.y_train.clone(),
            x_test=self.x_test.clone(),
            y_test=self.y_test.clone(),
            num_classes=self.num_classes,
            classes=self.classes,
        )


# --------------------------------------------------------------------------------------------------
# Files: data directory, md5, downloads, archives.


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


# --------------------------------------------------------------------------------------------------
# CIFAR-10.


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


# --------------------------------------------------------------------------------------------------
# SVHN.


def _read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x = np.asarray(mat["X"])
        y = np.asarray(mat["y"]).reshape(-1)
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"{path} is not an SVHN .mat file: {exc!r}") from exc
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != y.shape[0]:
        raise DataError(
            f"{path}: X {x.dtype} {x.shape} and y {y.shape} are not SVHN's [H, W, 3, N] and [N, 1]"
        )
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
            raise DataError(
                f"SVHN not found: no file {p}, and downloading {url} failed ({exc}). {fix}"
            ) from exc
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


# --------------------------------------------------------------------------------------------------
# Generated data.


def _derived_generator(seed: int, salt: int) -> torch.Generator:
    digest = hashlib.sha256(f"rem-data:{seed}:{salt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _balanced_labels(n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    labels = torch.arange(n, dtype=torch.int64) % num_classes
    return labels[torch.randperm(n, generator=gen)]


def _zero_mean_patterns(m: int, grid: int, out: int, gen: torch.Generator) -> torch.Tensor:
    """``m`` random colour patterns on a ``grid``x``grid`` lattice, upsampled to ``out``; unit std."""
    p = torch.rand(m, 3, grid, grid, generator=gen)
    p = p - p.mean(dim=(2, 3), keepdim=True)  # no mean colour: classes differ in layout only
    p = p / p.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return F.interpolate(p, size=(out, out), mode="bilinear", align_corners=False)


def _render(
    protos: torch.Tensor, labels: torch.Tensor, size: int, pad: int, gen: torch.Generator
) -> torch.Tensor:
    """Images of ``labels``: shifted prototype + distractor pattern + jitter + pixel noise, uint8."""
    n = labels.shape[0]
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    ar = torch.arange(size)
    ch = torch.arange(3)[None, :, None, None]
    for start in range(0, n, 4096):
        lab = labels[start : start + 4096]
        m = lab.shape[0]
        dy = torch.randint(0, 2 * pad + 1, (m,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (m,), generator=gen)
        rows = (dy[:, None] + ar)[:, None, :, None]
        cols = (dx[:, None] + ar)[:, None, None, :]
        img = protos[lab[:, None, None, None], ch, rows, cols]  # [m, 3, size, size]
        distract = _zero_mean_patterns(m, 4, size, gen)
        contrast = 0.7 + 0.6 * torch.rand(m, 1, 1, 1, generator=gen)
        bright = 0.3 * torch.rand(m, 1, 1, 1, generator=gen) - 0.15
        tint = 0.16 * torch.rand(m, 3, 1, 1, generator=gen) - 0.08
        noise = 0.06 * torch.randn(m, 3, size, size, generator=gen)
        img = 0.5 + bright + tint + contrast * (0.17 * img + 0.15 * distract) + noise
        out[start : start + m] = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return out


def make_generated(
    n_train: int = 2000, n_test: int = 500, num_classes: int = 10, size: int = 32, seed: int = 0
) -> ImageData:
    """A deterministic synthetic data set with real class structure (no files, no network).

    Each class has a fixed random colour layout on a 4x4 lattice (zero mean colour, upsampled to
    ``size`` with a margin). A sample is its class layout shifted by up to ``size // 8`` pixels, plus
    a random per-sample distractor layout, contrast/brightness/tint jitter and pixel noise. Mean
    colour says almost nothing about the class, but a small CNN learns it well above chance within
    a few epochs. Classes are balanced (counts differ by at most one). Prototypes, train and test
    samples come from separate seeded generators, so the test set does not depend on ``n_train``.
    """
    if n_train < 0 or n_test < 0:
        raise ConfigError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if size < 4:
        raise ConfigError(f"size must be >= 4, got {size}")
    pad = max(1, size // 8)
    protos = _zero_mean_patterns(num_classes, 4, size + 2 * pad, _derived_generator(seed, 0))
    g_train, g_test = _derived_generator(seed, 1), _derived_generator(seed, 2)
    y_train = _balanced_labels(n_train, num_classes, g_train)
    y_test = _balanced_labels(n_test, num_classes, g_test)
    return ImageData(
        name="generated",
        x_train=_render(protos, y_train, size, pad, g_train),
        y_train=y_train,
        x_test=_render(protos, y_test, size, pad, g_test),
        y_test=y_test,
        num_classes=num_classes,
        classes=tuple(f"class_{i}" for i in range(num_classes)),
    )


# --------------------------------------------------------------------------------------------------
# Dispatch and transforms.


def load_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True, **kwargs: Any
) -> ImageData:
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


def balanced_subset_indices(labels: torch.Tensor, n: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a class-balanced random subset of size ``n`` (deterministic in ``seed``).

    Each class gets ``n // num_classes`` or one more; a class with too few samples gives all it has
    and the shortfall is spread over the others. Raises :class:`ConfigError` if ``n`` exceeds
    ``len(labels)``.
    """
    labels = labels.cpu()
    total = labels.shape[0]
    if n < 0 or n > total:
        raise ConfigError(f"cannot take a subset of {n} from {total} samples")
    gen = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    tie = torch.randperm(num_classes, generator=gen).tolist()  # who gets the remainder
    order = sorted(range(num_classes), key=lambda c: (counts[c], tie.index(c)))
    alloc = [0] * num_classes
    remaining = n
    for k, c in enumerate(order):
        alloc[c] = min(counts[c], remaining // (num_classes - k))
        remaining -= alloc[c]
    parts = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        parts.append(idx[torch.randperm(idx.shape[0], generator=gen)[: alloc[c]]])
    return torch.sort(torch.cat(parts)).values


def subsample(data: ImageData, n_train: int | None, n_test: int | None, seed: int = 0) -> ImageData:
    """A class-balanced deterministic subset of each split (``None`` keeps a split whole).

    The chosen samples keep their data-set order. See :func:`balanced_subset_indices`.
    """
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    if n_train is not None:
        idx = balanced_subset_indices(y_train, n_train, data.num_classes, seed).to(y_train.device)
        x_train, y_train = x_train[idx], y_train[idx]
    if n_test is not None:
        idx = balanced_subset_indices(y_test, n_test, data.num_classes, seed).to(y_test.device)
        x_test, y_test = x_test[idx], y_test[idx]
    return ImageData(data.name, x_train, y_train, x_test, y_test, data.num_classes, data.classes)


def _area_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=torch.uint8, device=x.device)
    for start in range(0, x.shape[0], 4096):
        chunk = x[start : start + 4096].float()
        small = F.interpolate(chunk, size=(size, size), mode="area")
        out[start : start + chunk.shape[0]] = small.round().clamp(0, 255).to(torch.uint8)
    return out


def downsample(data: ImageData, size: int) -> ImageData:
    """Shrink all images to ``size``x``size`` by area averaging (e.g. 32 -> 16); stays uint8."""
    if size < 1 or size > data.image_size:
        raise ConfigError(f"downsample size must be in [1, {data.image_size}], got {size}")
    if size == data.image_size:
        return ImageData(
            data.name, data.x_train, data.y_train, data.x_test, data.y_test, data.num_classes, data.classes
        )
    return ImageData(
        name=data.name,
        x_train=_area_resize(data.x_train, size),
        y_train=data.y_train,
        x_test=_area_resize(data.x_test, size),
        y_test=data.y_test,
        num_classes=data.num_classes,
        classes=data.classes,
    )
