"""ResNet-9 as used in the unlearning literature (SPEC §3), with the kept / extra channel partition.

Layout: conv-bn(3→c1) → conv-bn(c1→c2, k5, s2, p2) → res[conv-bn(c2→c2) ×2] → conv-bn(c2→c3) + max-pool 2
→ res[conv-bn(c3→c3) ×2] → conv-bn(c3→c4, k3, p0) → global max-pool → linear(c4→K, no bias),
with conv-bn = conv → batch norm → CELU(α=0.075) and (c1, c2, c3, c4) = width × (64, 128, 256, 128).

Mask groups (SPEC §3): 0 = conv1; 1 = conv2 and res1; 2 = conv3 and res2; 3 = conv4. Only *block
outputs* are partitioned (conv1, conv2, the sum of res1, conv3, the sum of res2, conv4), as in the authors'
code: the hidden conv-bn inside each residual block (``res1a``, ``res2a``) has its own width ``hidden``
(the profile's full width: 128 / 256 at width 1), is never gated, and keeps that width in the deployed
model. Its input weights from extra channels belong to θ_o2's reach; in ``drop`` mode those channels are
zero, so no extra unit ever reaches a kept one and the network computes exactly the kept-only function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rem.errors import ConfigError
from rem.models.base import CapacityNet
from rem.models.capacity import MaskSpec, gate

BASE_WIDTHS = (64, 128, 256, 128)


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.celu(self.bn(self.conv(x)), alpha=0.075)

    def leading(self, x: torch.Tensor, cout: int) -> torch.Tensor:
        """The first ``cout`` output channels from the first ``x.shape[1]`` input channels only: the same
        function as :meth:`forward` on an input whose other channels are zero, restricted to those outputs,
        at the cost of the smaller layer. Batch norm updates the running statistics of those channels only.
        """
        conv, bn = self.conv, self.bn
        w = conv.weight[:cout, : x.shape[1]]
        y = F.conv2d(x, w, None, conv.stride, conv.padding)
        factor = 0.0
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        y = F.batch_norm(
            y,
            bn.running_mean[:cout],
            bn.running_var[:cout],
            bn.weight[:cout],
            bn.bias[:cout],
            bn.training,
            factor,
            bn.eps,
        )
        return F.celu(y, alpha=0.075)


class ResNet9(CapacityNet):
    arch = "resnet9"

    def __init__(
        self,
        num_classes: int = 10,
        kept: Sequence[int] = BASE_WIDTHS,
        extra: Sequence[int] = (0, 0, 0, 0),
        mask: MaskSpec | None = None,
        in_channels: int = 3,
        hidden: Sequence[int] | None = None,
    ) -> None:
        super().__init__(kept, extra, mask)
        c = [k + e for k, e in zip(self.kept, self.extra)]
        self.num_classes, self.in_channels = int(num_classes), int(in_channels)
        # widths of the residual blocks' hidden layers (never partitioned); a description without them
        # (an ordinary network) uses the block widths
        self.hidden = [int(h) for h in (hidden if hidden is not None else (c[1], c[2]))]
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise ConfigError(f"resnet9: hidden must be two positive widths, got {self.hidden}")
        h = self.hidden
        self.conv1 = ConvBN(in_channels, c[0])
        self.conv2 = ConvBN(c[0], c[1], kernel=5, stride=2, padding=2)
        self.res1a, self.res1b = ConvBN(c[1], h[0]), ConvBN(h[0], c[1])
        self.conv3 = ConvBN(c[1], c[2])
        self.res2a, self.res2b = ConvBN(c[2], h[1]), ConvBN(h[1], c[2])
        self.conv4 = ConvBN(c[2], c[3], kernel=3, padding=0)
        self.fc = nn.Linear(c[3], num_classes, bias=False)

    def hparams(self) -> dict:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "hidden": list(self.hidden)}

    def features(
        self,
        x: torch.Tensor,
        mode: str = "drop",
        keys: torch.Tensor | None = None,
        masks: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        m = self.group_masks(mode, keys, masks)
        k = self.kept
        if mode == "drop" and self.has_extra:
            return self._kept_features(x)
        x = gate(self.conv1(x), k[0], mode, m[0])
        x = gate(self.conv2(x), k[1], mode, m[1])
        x = gate(x + self.res1b(self.res1a(x)), k[1], mode, m[1])  # block output: the residual sum
        x = F.max_pool2d(gate(self.conv3(x), k[2], mode, m[2]), 2)
        x = gate(x + self.res2b(self.res2a(x)), k[2], mode, m[2])
        x = gate(self.conv4(x), k[3], mode, m[3])
        return torch.amax(x, dim=(2, 3))

    def _kept_features(self, x: torch.Tensor) -> torch.Tensor:
        """``drop`` mode of an expanded model: the kept-only network, computed on the leading slices of
        every weight (the extra channels would be multiplied by zero), so it costs what the unexpanded
        model costs. Gradients reach the kept slices only, as with the zero gate. **[choice]** The
        authors gate to zero after computing every channel, so their drop-mode training passes also move
        the batch-norm running statistics of θ_o2's channels; here only mask / full passes do. Those
        statistics matter only to the masked model in inference mode (an analysis figure), never to the
        dropped model (measured: ``docs/performance.md``)."""
        k, h = self.kept, self.hidden
        x = self.conv1.leading(x, k[0])
        x = self.conv2.leading(x, k[1])
        x = x + self.res1b.leading(self.res1a.leading(x, h[0]), k[1])
        x = F.max_pool2d(self.conv3.leading(x, k[2]), 2)
        x = x + self.res2b.leading(self.res2a.leading(x, h[1]), k[2])
        x = self.conv4.leading(x, k[3])
        return F.pad(torch.amax(x, dim=(2, 3)), (0, self.extra[3]))  # θ_o2's features are zero

    def forward(
        self,
        x: torch.Tensor,
        mode: str = "drop",
        keys: torch.Tensor | None = None,
        masks: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.fc(self.features(x, mode, keys, masks))


def resnet9(
    num_classes: int = 10, width: float = 1.0, capacity: float = 0.0, p: float = 0.2, mask_seed: int = 0
) -> ResNet9:
    """ResNet-9 of ``width`` × (64, 128, 256, 128) channels.

    ``capacity`` is the share of each block width reserved as θ_o2: 0 gives an ordinary network, 0.5
    gives half kept / half extra (ETD); the residual hidden layers keep the full width either way. (A
    ``capacity-0.5`` pretraining trains only the kept half: build it from :func:`rem.train.pretrain_spec`,
    which spends no compute on zero channels.)
    """
    widths = [max(1, round(w * width)) for w in BASE_WIDTHS]
    extra = [round(w * capacity) for w in widths]
    kept = [w - e for w, e in zip(widths, extra)]
    return ResNet9(num_classes, kept, extra, MaskSpec(p=p, seed=mask_seed), hidden=(widths[1], widths[2]))
