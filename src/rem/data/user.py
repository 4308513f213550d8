"""A user's own images and labels as a task: in-memory arrays, an ``.npz`` file or a folder of classes.

A user's data set has no ground truth: only the labels it was trained with and the indices of the
samples found to be corrupted (D_f). :class:`UserTask` therefore offers what the unlearning methods
read from a :class:`rem.data.tasks.Task` (the images, the training labels, D_f membership, D_r) and
refuses what needs the truth (the corrupted set D_c, true labels, the SPEC §2 metrics).

Images are kept as uint8 ``[N, C, H, W]`` in a :class:`rem.data.container.ImageData` (train split;
the test split is empty), so the batch iterator of :mod:`rem.data.loader` serves them unchanged. How they are
turned into model inputs is a :class:`Preprocess`: per-channel normalisation and the training
augmentation (random crop with padding, horizontal flip), with the defaults of rem's own profiles
(CIFAR-10 statistics, padding ``max(1, size // 8)`` = 4 at 32×32 with zeros, flips on). The model
must have been trained on inputs prepared the same way.

Sample order, which the discovered indices refer to: arrays and ``.npz`` files keep their order; an
image folder (``root/<class>/<image>``, PNG / JPEG / BMP / WebP read with Pillow) is ordered by class
folder name, then by file name, classes numbered in that order (as torchvision's ``ImageFolder``);
``UserTask.files`` lists the files in that order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rem.data.container import ImageData
from rem.data.loader import MEAN, STD
from rem.data.tasks import PAD_MODES, Task
from rem.errors import ArgumentError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
X_KEYS = ("x", "images", "x_train", "X", "data", "imgs")
Y_KEYS = ("y", "labels", "y_train", "Y", "targets", "label")


@dataclass(frozen=True)
class Preprocess:
    """How uint8 images become model inputs (normalisation) and how training batches are augmented.

    ``mean`` / ``std``: per-channel, as shares of 255 (None: CIFAR-10's, for 3-channel images).
    ``crop_pad``: padding of the random training crop in pixels (None: ``max(1, size // 8)``; 0: no
    crop). ``pad_mode``: ``zeros`` or ``reflect``. ``flip``: random horizontal flips in training.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pad: int | None = None
    pad_mode: str = "zeros"
    flip: bool = True

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise DataError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.crop_pad is not None and self.crop_pad < 0:
            raise DataError(f"crop_pad must be >= 0, got {self.crop_pad}")
        if (self.mean is None) != (self.std is None):
            raise DataError("give both mean and std (per channel), or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise DataError(f"std must be positive, got {self.std}")

    def resolve(self, channels: int, size: int) -> Preprocess:
        """Concrete settings for images of ``channels`` × ``size``: defaults filled in, lengths checked."""
        mean, std = self.mean, self.std
        if mean is None:
            if channels != 3:
                raise DataError(
                    f"images have {channels} channel(s): give mean and std per channel "
                    "(the default is CIFAR-10's, for 3 channels)"
                )
            mean, std = MEAN, STD
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"mean {mean} and std {std} need one value per channel ({channels})")
        pad = max(1, size // 8) if self.crop_pad is None else int(self.crop_pad)
        return replace(self, mean=mean, std=std, crop_pad=pad)

    def batch_kwargs(self) -> dict:
        """Keyword arguments of :class:`rem.data.loader.Batches` (after :meth:`resolve`)."""
        return {"pad": self.crop_pad, "pad_mode": self.pad_mode, "flip": self.flip, "mean": self.mean, "std": self.std}


class NoGroundTruth(DataError, AttributeError):
    """What a user's data set cannot know (D_c, true labels). Also an AttributeError, so that
    ``getattr(task, "corrupt_idx", None)`` is None for a user's task."""


@dataclass
class UserTask:
    """A user's training set with its labels as trained, and nothing else known (no D_c, no truth)."""

    data: ImageData
    preprocess: Preprocess
    files: tuple[str, ...] | None = None  # image files in sample order (image folders)
    source: str = "arrays"

    kind = "user"
    trigger = None  # any trigger is already in the user's images
    triggered = None

    def __post_init__(self) -> None:
        self.preprocess = self.preprocess.resolve(int(self.data.x_train.shape[1]), int(self.data.x_train.shape[2]))

    @property
    def y_train(self) -> torch.Tensor:
        return self.data.y_train

    @property
    def n_train(self) -> int:
        return int(self.data.y_train.numel())

    @property
    def corrupt_idx(self) -> torch.Tensor:
        raise NoGroundTruth(
            "a user's data set has no ground truth: the corrupted set D_c is unknown (the "
            "oracle rem-ideal and the benchmark metrics need it)"
        )

    @property
    def y_true(self) -> torch.Tensor:
        raise NoGroundTruth("a user's data set has no ground truth: true labels are unknown")

    # the index helpers of a benchmark task only need n_train
    retain_idx = Task.retain_idx
    membership = Task.membership

    def check_forget_idx(self, forget_idx, within_corrupt: bool = False) -> torch.Tensor:
        """Integers, in range, no duplicates, at least one (:meth:`rem.data.tasks.Task.check_forget_idx`)."""
        if within_corrupt:
            raise DataError("--within-corrupt needs the corrupted set D_c, which a user's data set lacks")
        return Task.check_forget_idx(self, forget_idx)

    def split_hash(self, forget_idx: torch.Tensor | None = None) -> str:
        """sha256 of (training labels, D_f): identifies the data a result was computed on."""
        h = hashlib.sha256(self.y_train.cpu().numpy().astype("<i8").tobytes())
        if forget_idx is not None:
            h.update(b"|")
            h.update(torch.as_tensor(forget_idx).sort().values.cpu().numpy().astype("<i8").tobytes())
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Images and labels from arrays, .npz files and folders.


def _as_numpy(a, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, (list, tuple)):
        shapes = {np.shape(e) for e in a}
        if len(shapes) > 1:
            raise DataError(f"{what} have mixed sizes: {sorted(shapes)[:3]}; resize them to one size first")
        return np.asarray(a)
    raise DataError(f"{what} must be a NumPy array, a torch tensor or a list of them, got {type(a).__name__}")


def images_to_uint8(x, layout: str = "auto") -> torch.Tensor:
    """Images as uint8 ``[N, C, H, W]`` from ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` arrays.

    ``layout``: ``auto`` (channels-last when the last axis has 1, 3 or 4 entries and the second does
    not), ``NCHW`` or ``NHWC``. uint8 values are kept; floats must lie in [0, 1] (scaled by 255);
    other integer types must lie in [0, 255].
    """
    a = _as_numpy(x, "images")
    if a.size == 0:
        raise DataError(f"no images: got an empty array of shape {a.shape}")
    if a.ndim == 3:
        a = a[:, None]
        layout = "NCHW"
    if a.ndim != 4:
        raise DataError(f"images must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {a.shape}")
    if layout == "auto":
        layout = "NHWC" if a.shape[3] in (1, 3, 4) and a.shape[1] not in (1, 3, 4) else "NCHW"
    if layout == "NHWC":
        a = a.transpose(0, 3, 1, 2)
    elif layout != "NCHW":
        raise DataError(f"layout must be auto, NCHW or NHWC, got {layout!r}")
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(a)
        if not finite.all():
            n_images = int((~finite).reshape(len(a), -1).any(1).sum())
            raise DataError(
                f"images hold {int(finite.size - finite.sum())} non-finite value(s) (NaN or infinity) in {n_images} "
                "image(s): every pixel must be a number in [0, 1] (floats) or 0-255 (uint8)"
            )
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                "pass uint8 images (0-255) or scale them"
            )
        a = np.rint(a * 255)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise DataError(f"integer images must lie in [0, 255], got values in [{lo}, {hi}]")
    else:
        raise DataError(f"images must be numbers, got dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a.astype(np.uint8)))


def labels_to_int64(y, n: int, num_classes: int | None = None) -> tuple[torch.Tensor, int]:
    """Labels as int64 ``[n]`` in ``[0, num_classes)`` (``num_classes`` defaults to max label + 1)."""
    a = _as_numpy(y, "labels").reshape(-1) if not np.isscalar(y) else None
    if a is None or a.shape[0] != n:
        raise DataError(f"need one label per image: {n} images but {0 if a is None else a.shape[0]} labels")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.rint(a)):
            raise DataError("labels must be integers (class numbers), got non-integer values")
    elif not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"labels must be integers (class numbers), got dtype {a.dtype}")
    t = torch.from_numpy(a.astype(np.int64))
    lo, hi = int(t.min()), int(t.max())
    k = hi + 1 if num_classes is None else int(num_classes)
    if lo < 0 or hi >= k:
        bad = t[(t < 0) | (t >= k)]
        raise DataError(f"labels out of range [0, {k}): {bad.numel()} label(s) such as {bad[:3].tolist()}")
    return t, k


def load_npz(path: str | Path, x_key: str | None = None, y_key: str | None = None):
    """(images, labels) from an ``.npz`` file (read without pickle); keys found among common names."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if magic != b"PK\x03\x04" and magic != b"PK\x05\x06":  # an .npz is a zip archive of .npy arrays
        raise DataError(
            f"{path} is not an .npz file (not a zip archive of arrays; write one with numpy.savez(path, x=..., y=...))"
        )
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable .npz file: {e}") from e
    with z:
        return _npz_arrays(path, z, x_key, y_key)


def _npz_arrays(path: Path, z, x_key: str | None, y_key: str | None):
    """The image and label arrays of an open .npz file; object (pickled) arrays are refused, never loaded."""
    keys = list(z.keys())

    def pick(given, names, what):
        if given is not None:
            if given not in keys:
                raise DataError(f"{path} has no array {given!r}; it holds {keys}")
            return given
        for k in names:
            if k in keys:
                return k
        raise DataError(f"{path}: no {what} array (looked for {list(names)}; it holds {keys})")

    xk, yk = pick(x_key, X_KEYS, "image"), pick(y_key, Y_KEYS, "label")
    try:
        return z[xk], z[yk]
    except (ValueError, OSError, EOFError) as e:  # an object array needs pickle, which rem never uses
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "pickle" in msg or "Object arrays" in msg:
            raise DataError(
                f"{path} holds an object (pickled) array, which rem never unpickles: store numbers "
                "(uint8 or float images, integer labels)"
            ) from None
        raise DataError(f"{path}: an array cannot be read (damaged file?): {msg}") from None


def load_image_folder(root: str | Path):
    """(images, labels, class names, files) from ``root/<class>/<image file>`` (sorted names)."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow is a dependency
        raise DataError("reading an image folder needs Pillow: pip install pillow") from e
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root} holds no class folders: expected {root}/<class name>/<image files>")
    files, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(f)
                labels.append(c)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its {len(classes)} class folders")
    arrays, modes, first = [], [], None
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                mode, size = im.mode, im.size
                arr = np.asarray(im.convert("L" if im.mode in ("L", "1") else "RGB"))
        except OSError as e:
            raise DataError(f"{f} is not a readable image: {e}") from e
        if first is None:
            first = (f, size)
        elif size != first[1]:
            raise DataError(
                f"images of mixed sizes: {f.relative_to(root)} is {size[0]}x{size[1]} but "
                f"{first[0].relative_to(root)} is {first[1][0]}x{first[1][1]}; resize them to one size"
            )
        arrays.append(arr)
        modes.append(mode in ("L", "1"))
    if not all(modes):  # any colour image: everything in RGB
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        x = np.stack(arrays)  # [N, H, W, 3]
    else:
        x = np.stack(arrays)[:, :, :, None]
    rel = tuple(str(f.relative_to(root)) for f in files)
    return x, np.asarray(labels, dtype=np.int64), tuple(classes), rel


def as_preprocess(preprocess) -> Preprocess:
    """``preprocess`` (a :class:`Preprocess`, a dict of its fields, or None) as a :class:`Preprocess`; an unknown
    key or another type raises :class:`~rem.errors.ArgumentError` naming it."""
    import dataclasses

    if isinstance(preprocess, Preprocess):
        return preprocess
    if preprocess is None:
        return Preprocess()
    if not isinstance(preprocess, dict):
        raise ArgumentError(
            f"preprocess must be a rem.Preprocess or a dict of its fields, got {type(preprocess).__name__}"
        )
    known = [f.name for f in dataclasses.fields(Preprocess)]
    unknown = sorted(set(preprocess) - set(known), key=str)
    if unknown:
        raise ArgumentError(f"preprocess has no setting(s) {unknown}; known: {', '.join(known)}")
    return Preprocess(**preprocess)


def user_task(
    data,
    labels=None,
    *,
    num_classes: int | None = None,
    preprocess: Preprocess | dict | None = None,
    layout: str = "auto",
    classes: Sequence[str] | None = None,
) -> UserTask:
    """A :class:`UserTask` from what a user has.

    ``data``: a :class:`UserTask` (returned as is); an :class:`ImageData` (its training split); images
    (array / tensor) with ``labels``; a pair ``(images, labels)``; a dict with image and label entries;
    a path to an ``.npz`` file or to an image folder. ``num_classes``: defaults to the class folders'
    count, else the largest label + 1.
    """
    if isinstance(data, UserTask):
        return data
    pre = as_preprocess(preprocess)
    files, source = None, "arrays"
    if isinstance(data, Task):
        raise DataError("a benchmark Task is not user data: pass it to rem.unlearn as it is")
    if isinstance(data, ImageData):
        return UserTask(data, pre, None, data.name)
    if isinstance(data, (str, Path)):
        p = Path(data)
        if p.is_dir():
            x, y, names, files = load_image_folder(p)
            classes = classes or names
            num_classes = num_classes or len(names)
        elif p.is_file() and p.suffix == ".npz":
            x, y = load_npz(p)
        elif p.is_file():
            raise DataError(f"{p}: data must be an .npz file or a folder of class folders")
        else:
            raise DataError(f"no data at {p}")
        source = str(p)
    elif isinstance(data, dict):
        xk = next((k for k in X_KEYS if k in data), None)
        yk = next((k for k in Y_KEYS if k in data), None)
        if xk is None or yk is None:
            raise DataError(f"a data dict needs images and labels (keys such as 'x' and 'y'), got {sorted(data)}")
        x, y = data[xk], data[yk]
    elif isinstance(data, (tuple, list)) and len(data) == 2 and labels is None:
        x, y = data
    else:
        x, y = data, labels
        if y is None:
            raise DataError("images were given without labels: pass labels=... (one class number per image)")
    if labels is not None and y is not labels:
        raise DataError("labels were given twice (in the data and as labels=)")
    xt = images_to_uint8(x, layout)
    yt, k = labels_to_int64(y, xt.shape[0], num_classes)
    if classes is not None and len(classes) != k:
        raise DataError(f"{len(classes)} class names for {k} classes")
    empty = torch.zeros((0, *xt.shape[1:]), dtype=torch.uint8)
    d = ImageData(
        name="user",
        x_train=xt,
        y_train=yt,
        x_test=empty,
        y_test=torch.zeros(0, dtype=torch.int64),
        num_classes=k,
        classes=tuple(classes) if classes else tuple(f"class_{i}" for i in range(k)),
    )
    return UserTask(d, pre, files, source)


__all__ = [
    "IMAGE_EXTENSIONS",
    "NoGroundTruth",
    "Preprocess",
    "UserTask",
    "images_to_uint8",
    "labels_to_int64",
    "load_image_folder",
    "load_npz",
    "user_task",
]
