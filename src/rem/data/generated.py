"""A generated stand-in data set with real class structure: no files, no network (tests, ``smoke``)."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from rem.data.container import ImageData
from rem.errors import ConfigError
from rem.seeding import seeded_generator


def _derived_generator(seed: int, salt: int) -> torch.Generator:
    digest = hashlib.sha256(f"rem-data:{seed}:{salt}".encode()).digest()
    # its own derivation of the seed (not rem.seeding's text keys): generated data sets stay what they were
    return seeded_generator(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _balanced_labels(n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    labels = torch.arange(n, dtype=torch.int64) % num_classes
    return labels[torch.randperm(n, generator=gen)]


def _zero_mean_patterns(m: int, grid: int, out: int, gen: torch.Generator) -> torch.Tensor:
    """``m`` random colour patterns on a ``grid``x``grid`` lattice, upsampled to ``out``; unit std."""
    p = torch.rand(m, 3, grid, grid, generator=gen)
    p = p - p.mean(dim=(2, 3), keepdim=True)  # no mean colour: classes differ in layout only
    p = p / p.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return F.interpolate(p, size=(out, out), mode="bilinear", align_corners=False)


def _render(protos: torch.Tensor, labels: torch.Tensor, size: int, pad: int, gen: torch.Generator) -> torch.Tensor:
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
