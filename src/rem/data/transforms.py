"""Resampling whole data sets: a class-balanced subset and area downsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rem.data.container import ImageData
from rem.errors import ConfigError
from rem.seeding import seeded_generator


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
    gen = seeded_generator(seed)
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
