"""The one way rem makes random number generators: CPU ``torch.Generator`` objects seeded explicitly,
never global RNG state, so the same seed gives the same data, splits, batches and masks everywhere."""

from __future__ import annotations

import hashlib

import torch


def seeded_generator(seed: int | str) -> torch.Generator:
    """A CPU generator seeded by ``seed``: an integer as it is, text (a key such as ``"0/poison/corrupt"``)
    by the first 60 bits of its sha256, so that differently keyed streams are independent."""
    if isinstance(seed, str):
        seed = int(hashlib.sha256(seed.encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(seed)
