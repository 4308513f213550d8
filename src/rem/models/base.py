"""Common base of models with a capacity partition, and the generic expand / shrink of SPEC §3.

Convention that makes expansion generic: along every partitioned axis of every parameter and buffer,
kept units come first and extra units after them. The original (kept-only) network is therefore the
*leading slice* of each tensor of the expanded one, so expansion copies each old tensor into the
leading slice of a freshly initialised wider model, and shrinking takes the leading slices back.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from rem.errors import ConfigError
from rem.models.capacity import MaskSpec, extra_sizes, validate_mode


class CapacityNet(nn.Module):
    """A classifier whose partitioned layers have ``kept`` and ``extra`` units per mask group."""

    arch: str = ""

    def __init__(self, kept: Sequence[int], extra: Sequence[int], mask: MaskSpec | None = None) -> None:
        super().__init__()
        if len(kept) != len(extra):
            raise ConfigError(f"kept {list(kept)} and extra {list(extra)} must have one entry per group")
        if any(k < 1 for k in kept) or any(e < 0 for e in extra):
            raise ConfigError(f"widths must be positive and extras non-negative: {list(kept)}, {list(extra)}")
        self.kept = [int(k) for k in kept]
        self.extra = [int(e) for e in extra]
        self.mask_spec = mask or MaskSpec()

    # -- description -----------------------------------------------------------------------------
    def hparams(self) -> dict:
        """Architecture settings other than the partition (subclasses extend)."""
        return {}

    def spec(self) -> dict:
        """A JSON-able description from which :func:`rem.models.build_model` rebuilds this model."""
        return {
            "arch": self.arch,
            "kept": self.kept,
            "extra": self.extra,
            "mask": self.mask_spec.as_dict(),
            **self.hparams(),
        }

    @property
    def has_extra(self) -> bool:
        return any(e > 0 for e in self.extra)

    # -- forward helpers -------------------------------------------------------------------------
    def group_masks(
        self, mode: str, keys: torch.Tensor | None, masks: Sequence[torch.Tensor] | None
    ) -> list[torch.Tensor | None]:
        validate_mode(mode)
        if mode != "mask":
            return [None] * len(self.extra)
        if masks is not None:
            if len(masks) != len(self.extra):
                raise ConfigError(f"expected {len(self.extra)} group masks, got {len(masks)}")
            return list(masks)
        if keys is None:
            raise ConfigError("mode 'mask' needs `keys` (per-sample mask keys) or explicit `masks`")
        return [m.to(keys.device) for m in self.mask_spec.masks(keys, self.extra)]

    # -- partition -------------------------------------------------------------------------------
    def with_extra(self, extra: Sequence[int], seed: int = 0, **spec_kw) -> CapacityNet:
        """A copy with ``extra`` units per group; kept tensors copied, every new weight freshly initialised.

        New weights get the framework's default initialisation (SPEC §3), drawn under ``seed``.
        ``spec_kw`` overrides other entries of the description (the ViT's ``registers``).
        """
        spec = {**self.spec(), **spec_kw}
        spec["extra"] = [int(e) for e in extra]
        from rem.models import build_model  # local import: registry lives in the package

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            new = build_model(spec)
        new_state = new.state_dict()
        for name, old in self.state_dict().items():
            tgt = new_state[name]
            if old.dim() != tgt.dim():
                raise ConfigError(f"cannot re-partition {name}: {tuple(old.shape)} vs {tuple(tgt.shape)}")
            lead = tuple(slice(0, min(a, b)) for a, b in zip(old.shape, tgt.shape))
            if old.dim() == 0:
                tgt.copy_(old)
            else:
                tgt[lead] = old[lead]
        new.load_state_dict(new_state)
        new.train(self.training)
        return new.to(next(self.parameters()).device)

    def extra_param_masks(self) -> dict[str, torch.Tensor]:
        """Bool tensor per parameter: True on the entries of θ_o2 (anything outside the kept slice)."""
        kept_model_shapes = {n: p.shape for n, p in self.with_extra([0] * len(self.extra)).named_parameters()}
        out = {}
        for name, p in self.named_parameters():
            m = torch.ones_like(p, dtype=torch.bool)
            lead = tuple(slice(0, s) for s in kept_model_shapes[name])
            m[lead] = False
            out[name] = m
        return out


def expand(model: CapacityNet, ratio: float = 1.0, seed: int = 0) -> CapacityNet:
    """REM step 1: add ``round(ratio * kept)`` extra units to every group, ``drop`` mode unchanged.

    A model that already has extra units (an ETD model) is returned as a deep copy: it already has its θ_o2.
    """
    if model.has_extra:
        return copy.deepcopy(model)
    if not model.kept:  # e.g. a user's model whose only layer is its classifier
        why = getattr(model, "no_capacity_message", None)
        raise ConfigError(why() if why else f"{type(model).__name__} has no layer to add capacity to")
    return model.with_extra(extra_sizes(model.kept, ratio), seed=seed)


def shrink(model: CapacityNet) -> CapacityNet:
    """REM step 4: physically remove θ_o2; the result has the original parameter count and function."""
    return model.with_extra([0] * len(model.extra))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
