"""A small Vision Transformer for 32×32 images (SPEC §3), with the kept / extra partition.

Architecture (defaults are the paper's SVHN ViT): 32×32 input, patch 8 (16 tokens + a CLS token),
dim 512, depth 4, 8 heads of 64, MLP hidden 1536, no dropout, CLS pooling, a final LayerNorm and a
linear head (dim → num_classes). Two changes from Lee et al. 2021, "Vision Transformer for Small-Size
Datasets", make it trainable from scratch on small data:

- **Shifted Patch Tokenisation (SPT).** The image is concatenated along the channel axis with four
  copies of itself shifted diagonally by half a patch (left-up, right-up, left-down, right-down;
  zero fill), giving 5·C channels; the result is cut into patches, each flattened patch is layer-normed
  and projected linearly to ``dim``. Every token thus also sees pixels of its neighbouring patches.
- **Locality Self-Attention (LSA).** The softmax temperature is learned (one scalar per block, stored as
  its log and initialised to log(head_dim^-0.5), used as exp(·)), and the diagonal of the attention
  logits is masked out, so a token never attends to itself and attention is less flat.

Blocks are pre-norm: x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP; the position embedding is
learned.

**Partition convention [choice, SPEC §3].** The residual stream (patch embedding, position embedding,
CLS token, LayerNorms, head, attention / MLP output biases) is never partitioned. Each block has two mask
groups: its attention heads, then its MLP hidden units, so there are 2·depth groups and

    kept  = [heads_kept_0, mlp_kept_0, heads_kept_1, mlp_kept_1, ...]
    extra = [heads_extra_0, mlp_extra_0, ...]

A head is one unit of its group: its mask value multiplies that head's whole head_dim-wide output
before the output projection. An MLP unit is one hidden unit after the GELU. Kept units come first along
every partitioned axis (``q``/``k``/``v`` weights are [H·head_dim, dim] with heads contiguous, ``out`` is
[dim, H·head_dim], ``fc1`` is [M, dim], ``fc2`` is [dim, M]), so the generic leading-slice
expand / shrink of :mod:`rem.models.base` applies unchanged. In ``drop`` mode extra heads and hidden
units are multiplied by exactly 0: the network computes the kept-only function and θ_o2 gets zero
gradient.

**Token-axis partition (an option, ``registers``).** The authors' code split the token axis instead
(SPEC §3); their ViT is not in their published repository, so this is our reading of it: θ_o2 is a set of
``registers`` extra *tokens*, learned embeddings appended to the sequence after the CLS and patch tokens
(no position embedding; leading-slice convention: ``reg`` is [1, registers, dim], empty when there are
none). ``drop``: the registers are left out of the sequence, so the network is exactly the one without
them. ``full``: all registers are in every sequence. ``mask``: each register is a key of attention, in
every block, only for the samples whose mask keeps it (Bernoulli(p) per register, the hash group after
the unit groups, so D_f's shared mask covers the registers too); a register a sample's mask drops never
reaches that sample's CLS token and gets no gradient from it. A soft mask scales a register's attention
weight by its mask value (an additive log-mask). REM chooses the axis with its ``partition`` setting
(default ``auto``: the token axis on a ViT, measured better than the unit partition on the `cpu-vit` grid);
a model without extra units has no registers either (``with_extra`` of all-zero extras removes them,
which is what ``shrink`` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rem.errors import ConfigError
from rem.models.base import CapacityNet
from rem.models.capacity import MaskSpec, gate


class ShiftedPatchTokens(nn.Module):
    """SPT: image + its 4 diagonal half-patch shifts → patches → LayerNorm → Linear(5·C·p² → dim)."""

    def __init__(self, in_channels: int, patch: int, dim: int) -> None:
        super().__init__()
        self.patch = int(patch)
        patch_dim = 5 * in_channels * patch * patch
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)

    @staticmethod
    def shifted(x: torch.Tensor, s: int) -> torch.Tensor:
        """``x`` concatenated with its 4 diagonal shifts by ``s`` pixels (zero fill): [B, 5C, H, W]."""
        if s == 0:
            return torch.cat([x] * 5, dim=1)
        h, w = x.shape[-2:]
        padded = F.pad(x, (s, s, s, s))
        views = [x]
        for dy, dx in ((-s, -s), (-s, s), (s, -s), (s, s)):  # content moves by (dy, dx)
            views.append(padded[:, :, s - dy : s - dy + h, s - dx : s - dx + w])
        return torch.cat(views, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        x = self.shifted(x, p // 2)
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # b, gh, gw, p1, p2, c
        x = x.reshape(b, (h // p) * (w // p), p * p * c)
        return self.proj(self.norm(x))


class LSAttention(nn.Module):
    """Locality self-attention with ``heads`` heads of ``head_dim`` (kept heads first along every axis)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = int(heads), int(head_dim)
        inner = heads * head_dim
        self.q = nn.Linear(dim, inner, bias=False)
        self.k = nn.Linear(dim, inner, bias=False)
        self.v = nn.Linear(dim, inner, bias=False)
        self.out = nn.Linear(inner, dim)
        # log of the softmax scale, shared by all heads of the block (a scalar, so expansion keeps it)
        self.log_scale = nn.Parameter(torch.tensor(math.log(head_dim**-0.5)))

    def forward(
        self,
        x: torch.Tensor,
        kept: int,
        mode: str,
        mask: torch.Tensor | None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_bias`` ([B, T], 0 or a log-weight, −inf = never attended) restricts the keys per sample."""
        b, t, _ = x.shape
        h, d = self.heads, self.head_dim

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d).transpose(1, 2)  # [B, H, T, d]

        q = split(self.q(x)) * self.log_scale.exp()
        k, v = split(self.k(x)), split(self.v(x))
        # diagonal masking: True = may attend; a token never attends to itself
        allowed = ~torch.eye(t, dtype=torch.bool, device=x.device)
        if key_bias is not None:  # [B, 1, T, T]: the diagonal stays out, each key weighted per sample
            diag = torch.zeros(t, t, device=x.device, dtype=q.dtype).masked_fill(~allowed, float("-inf"))
            allowed = (diag + key_bias.to(q.dtype)[:, None, :])[:, None]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=1.0)  # [B, H, T, d]
        o = gate(o, kept, mode, mask)  # one mask value per head
        return self.out(o.transpose(1, 2).reshape(b, t, h * d))


class MLP(nn.Module):
    """Linear(dim → M) → GELU → partition gate on the M hidden units → Linear(M → dim)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, kept: int, mode: str, mask: torch.Tensor | None) -> torch.Tensor:
        hid = F.gelu(self.fc1(x))  # [B, T, M]
        hid = gate(hid.transpose(1, 2), kept, mode, mask).transpose(1, 2)
        return self.fc2(hid)


class Block(nn.Module):
    """Pre-norm transformer block: x + LSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LSAttention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(
        self,
        x: torch.Tensor,
        kept: Sequence[int],
        mode: str,
        masks: Sequence[torch.Tensor | None],
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), kept[0], mode, masks[0], key_bias)
        return x + self.mlp(self.norm2(x), kept[1], mode, masks[1])


class ViT(CapacityNet):
    """ViT with SPT and LSA; mask groups ``[heads_0, mlp_0, heads_1, mlp_1, ...]`` (see module docstring)."""

    arch = "vit"

    def __init__(
        self,
        num_classes: int = 10,
        kept: Sequence[int] | None = None,
        extra: Sequence[int] | None = None,
        mask: MaskSpec | None = None,
        image_size: int = 32,
        patch: int = 8,
        dim: int = 512,
        depth: int = 4,
        head_dim: int = 64,
        in_channels: int = 3,
        registers: int = 0,
    ) -> None:
        depth = int(depth)
        kept = [8, 1536] * depth if kept is None else list(kept)
        extra = [0] * len(kept) if extra is None else list(extra)
        if depth < 1 or len(kept) != 2 * depth:
            raise ConfigError(
                f"ViT of depth {depth} needs 2*depth = {2 * depth} groups [heads, mlp, ...], got kept {kept}"
            )
        if image_size % patch != 0:
            raise ConfigError(f"image_size {image_size} is not a multiple of patch {patch}")
        if int(registers) < 0:
            raise ConfigError(f"registers (extra tokens) must be >= 0, got {registers}")
        super().__init__(kept, extra, mask)
        self.num_classes, self.image_size, self.patch = int(num_classes), int(image_size), int(patch)
        self.dim, self.depth, self.head_dim = int(dim), depth, int(head_dim)
        self.in_channels, self.registers = int(in_channels), int(registers)
        widths = [k + e for k, e in zip(self.kept, self.extra)]
        n_tokens = (image_size // patch) ** 2
        self.to_tokens = ShiftedPatchTokens(in_channels, patch, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n_tokens + 1, dim) * 0.02)
        self.reg = nn.Parameter(torch.randn(1, self.registers, dim) * 0.02)  # θ_o2 of the token axis
        self.blocks = nn.ModuleList(Block(dim, widths[2 * i], head_dim, widths[2 * i + 1]) for i in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def hparams(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "patch": self.patch,
            "dim": self.dim,
            "depth": self.depth,
            "head_dim": self.head_dim,
            "in_channels": self.in_channels,
            "registers": self.registers,
        }

    @property
    def n_tokens(self) -> int:
        """Tokens of the deployed model: the CLS token and the patches."""
        return self.pos.shape[1]

    @property
    def has_extra(self) -> bool:
        return super().has_extra or self.registers > 0

    def with_extra(self, extra: Sequence[int], seed: int = 0, registers: int | None = None) -> ViT:
        """As :meth:`CapacityNet.with_extra`; ``registers`` extra tokens (default: kept as they are, except
        that all-zero ``extra`` means the model without any reserve, so no registers either)."""
        if registers is None:
            registers = 0 if not any(extra) else self.registers
        return super().with_extra(extra, seed=seed, registers=int(registers))

    def _split_masks(self, mode: str, masks):
        """``(masks of the unit groups, the registers' mask or None)``: with registers in ``mask`` mode,
        explicit ``masks`` carry one more entry, the registers' mask, last."""
        if self.registers == 0 or mode != "mask" or masks is None:
            return masks, None
        if len(masks) != len(self.extra) + 1:
            raise ConfigError(
                f"mode 'mask' with explicit masks on a ViT with {self.registers} registers needs "
                f"{len(self.extra) + 1} masks (the last one for the registers), got {len(masks)}"
            )
        return masks[:-1], masks[-1]

    def _register_bias(self, mode: str, keys, reg_mask, batch: int, device) -> torch.Tensor | None:
        """[B, T + registers] additive key bias of the registers' mask (``None``: no restriction)."""
        if self.registers == 0 or mode != "mask":
            return None
        m = self.mask_spec.group_mask(keys, self.registers, len(self.extra)) if reg_mask is None else reg_mask
        m = m.to(device=device, dtype=torch.float32).expand(batch, -1)
        bias = torch.where(m > 0, m.clamp_min(1e-30).log(), torch.full_like(m, float("-inf")))
        return torch.cat([torch.zeros(batch, self.n_tokens, device=device), bias], dim=1)

    def features(
        self,
        x: torch.Tensor,
        mode: str = "drop",
        keys: torch.Tensor | None = None,
        masks: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The normalised CLS token, [B, dim]."""
        masks, reg_mask = self._split_masks(mode, masks)
        m = self.group_masks(mode, keys, masks)  # checks the keys too
        b = x.shape[0]
        bias = self._register_bias(mode, keys, reg_mask, b, x.device)
        x = self.to_tokens(x)
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos
        if self.registers and mode != "drop":  # drop: the registers are not in the sequence at all
            x = torch.cat([x, self.reg.expand(b, -1, -1).to(x.dtype)], dim=1)
        for i, blk in enumerate(self.blocks):
            x = blk(x, self.kept[2 * i : 2 * i + 2], mode, m[2 * i : 2 * i + 2], bias)
        return self.norm(x[:, 0])

    def forward(
        self,
        x: torch.Tensor,
        mode: str = "drop",
        keys: torch.Tensor | None = None,
        masks: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.head(self.features(x, mode, keys, masks))


def vit(
    num_classes: int = 10,
    image_size: int = 32,
    patch: int = 8,
    dim: int = 512,
    depth: int = 4,
    heads: int = 8,
    head_dim: int = 64,
    mlp: int = 1536,
    capacity: float = 0.0,
    p: float = 0.2,
    mask_seed: int = 0,
    in_channels: int = 3,
    registers: int = 0,
) -> ViT:
    """The ViT of SPEC §3 with ``heads`` heads and ``mlp`` hidden units per block in total.

    ``capacity`` is the share of each block's heads and MLP units reserved as θ_o2 (0: an ordinary
    network; 0.5 with 8 heads: 4 kept + 4 extra heads, 768 + 768 hidden units). ``registers``: extra
    tokens of the token-axis partition (see the module docstring).
    """
    widths = [heads, mlp] * depth
    extra = [round(w * capacity) for w in widths]
    kept = [w - e for w, e in zip(widths, extra)]
    return ViT(
        num_classes,
        kept,
        extra,
        MaskSpec(p=p, seed=mask_seed),
        image_size=image_size,
        patch=patch,
        dim=dim,
        depth=depth,
        head_dim=head_dim,
        in_channels=in_channels,
        registers=registers,
    )
