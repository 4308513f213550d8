"""The capacity partition of SPEC §3: kept channels θ_o1, extra channels θ_o2, three forward modes.

Every partitioned layer's output has ``kept`` units first and ``extra`` units after them. A forward
pass runs in one of three modes:

- ``drop``: extra units are multiplied by 0 (the deployed model; θ_o2 receives exactly zero gradient);
- ``mask``: extra units are multiplied by a per-sample mask, Bernoulli(p) per extra unit, constant over
  space, a fixed function of the sample's *mask key* (its index, or :data:`SHARED_KEY` for the samples
  that share one mask, such as the discovered set D_f in REM);
- ``full``: everything on.

Masks are computed by a counter-based integer hash of (seed, group, key, unit) rather than drawn from
an RNG, so the same sample gets the same mask on any device, in any batch order and in any process,
without storing a table. **[beyond]** With ``soft=True`` a mask value is a uniform number in [0, 1]
instead of a Bernoulli draw (the soft masks the authors name as future work).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rem.errors import ConfigError

MODES = ("drop", "mask", "full")
#: Mask key shared by every sample routed through "the one shared mask" (REM step 3: all of D_f).
SHARED_KEY = -1

_M32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche hash (lowbias32) on int64 tensors holding values in [0, 2^32).

    Every product stays below 2^63, so the result is identical on CPU and CUDA with no overflow.
    """
    x = x & _M32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _M32
    x = ((x ^ (x >> 15)) * 0x46CA68B) & _M32
    x = x ^ (x >> 16)
    return x


def uniform_hash(keys: torch.Tensor, n_units: int, group: int, seed: int) -> torch.Tensor:
    """Uniform numbers in [0, 1), shape [len(keys), n_units], a pure function of (seed, group, key, unit)."""
    keys = keys.to(torch.int64)
    salt = int(_hash32(torch.tensor([seed * 1_000_003 + group * 7919 + 12345])).item())
    row = _hash32((keys & _M32) ^ salt)
    units = _hash32(torch.arange(n_units, device=keys.device, dtype=torch.int64) * 0x9E3779B1 + 0x85EBCA6B)
    return _hash32(row[:, None] * 31 + units[None, :]).to(torch.float32) / float(1 << 32)


def validate_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown forward mode {mode!r}; expected one of {MODES}")


class MaskSpec:
    """How per-sample masks are drawn: keep probability ``p``, a ``seed``, hard or ``soft``."""

    def __init__(self, p: float = 0.2, seed: int = 0, soft: bool = False) -> None:
        if not 0.0 < p <= 1.0:
            raise ConfigError(f"mask probability p must be in (0, 1], got {p}")
        self.p, self.seed, self.soft = float(p), int(seed), bool(soft)

    def group_mask(self, keys: torch.Tensor, n: int, group: int) -> torch.Tensor:
        """The [B, n] float mask of hash group ``group`` for the mask keys of a batch."""
        u = uniform_hash(keys, n, group, self.seed)
        return u if self.soft else (u < self.p).to(torch.float32)

    def masks(self, keys: torch.Tensor, extra: Sequence[int]) -> list[torch.Tensor]:
        """One [B, extra[g]] float mask per group g for the mask keys of a batch."""
        return [self.group_mask(keys, n, g) for g, n in enumerate(extra)]

    def as_dict(self) -> dict:
        return {"p": self.p, "seed": self.seed, "soft": self.soft}


def mask_keys(idx: torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:
    """Mask keys of a batch: each sample's own index, or :data:`SHARED_KEY` where ``shared[idx]`` is set.

    ``shared`` is a bool tensor over the whole training set (for instance membership of D_f).
    """
    idx = idx.to(torch.int64)
    if shared is None:
        return idx
    return torch.where(shared[idx], torch.full_like(idx, SHARED_KEY), idx)


def gate(y: torch.Tensor, kept: int, mode: str, mask: torch.Tensor | None) -> torch.Tensor:
    """Apply the partition to ``y`` ([B, C, ...] with C = kept + extra) along dim 1."""
    extra = y.shape[1] - kept
    if extra == 0 or mode == "full":
        return y
    if mode == "drop":
        g = torch.zeros(y.shape[1], device=y.device, dtype=y.dtype)
        g[:kept] = 1
        g = g.view(1, -1, *([1] * (y.dim() - 2)))
    elif mode == "mask":
        if mask is None:
            raise ConfigError("mode 'mask' needs mask keys (or explicit masks) for the batch")
        ones = torch.ones(y.shape[0], kept, device=y.device, dtype=y.dtype)
        g = torch.cat([ones, mask.to(y.dtype)], dim=1).view(y.shape[0], -1, *([1] * (y.dim() - 2)))
    else:
        validate_mode(mode)
        raise AssertionError
    return y * g


def extra_sizes(kept: Sequence[int], ratio: float) -> list[int]:
    """Extra units per group for an expansion ratio r = |θ_o2| / |θ_o1| (at least one unit when r > 0)."""
    if not 0.0 <= ratio <= 8.0:
        raise ConfigError(f"expand ratio must be in [0, 8], got {ratio}")
    if ratio == 0:
        return [0 for _ in kept]
    return [max(1, round(k * ratio)) for k in kept]
