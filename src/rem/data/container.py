"""The in-memory data set every loader returns: :class:`ImageData`, both splits as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rem.errors import ConfigError, DataError


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
            raise DataError(f"{self.name}: num_classes={self.num_classes} but {len(self.classes)} class names given")
        shapes = []
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(f"{self.name}: x_{split} must be uint8 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise DataError(f"{self.name}: y_{split} must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
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
