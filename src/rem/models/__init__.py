"""Models with a capacity partition (SPEC §3): ResNet-9, the ViT, expand / shrink, rebuilding from a spec."""

from __future__ import annotations

from rem.errors import ConfigError
from rem.models.base import CapacityNet, expand, param_count, shrink
from rem.models.capacity import MODES, SHARED_KEY, MaskSpec, mask_keys
from rem.models.resnet9 import ResNet9, resnet9
from rem.models.vit import ViT

#: The architectures :func:`build_model` rebuilds from a checkpoint's spec, by :attr:`CapacityNet.arch`.
ARCHS: dict[str, type[CapacityNet]] = {"resnet9": ResNet9, "vit": ViT}


def build_model(spec: dict) -> CapacityNet:
    """Rebuild a model from :meth:`CapacityNet.spec` (the JSON stored next to a checkpoint's weights)."""
    spec = dict(spec)
    arch = spec.pop("arch", None)
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    mask = MaskSpec(**spec.pop("mask", {}))
    try:
        return ARCHS[arch](mask=mask, **spec)
    except TypeError as e:
        raise ConfigError(f"bad model description for {arch}: {e}") from e


__all__ = [
    "ARCHS",
    "MODES",
    "SHARED_KEY",
    "CapacityNet",
    "MaskSpec",
    "ResNet9",
    "ViT",
    "build_model",
    "expand",
    "mask_keys",
    "param_count",
    "resnet9",
    "shrink",
]
