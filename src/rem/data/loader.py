"""In-memory batch iterator: uint8 tensors on the compute device, whole-batch augmentation.

Every batch is ``(x, y, idx)``: normalised float images, labels, and the samples' indices in D_tr
(masks and D_f membership depend on them). Order of operations per batch: gather uint8 images →
random crop (zero padding, or mirrored with the task's ``crop_pad='reflect'``) and horizontal flip
(training only) → stamp the trigger on samples flagged as triggered (after augmentation, so it never
moves; SPEC §1) → float, normalise.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rem.data.tasks import PAD_MODES, Task, Trigger
from rem.seeding import seeded_generator

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def random_crop_flip(
    x: torch.Tensor, pad: int, gen: torch.Generator, mode: str = "zeros", flip: bool = True
) -> torch.Tensor:
    """Random crop (padding ``pad``: zeros, or a mirror image of the border) and horizontal flip
    (unless ``flip`` is false) of a uint8 batch [B,C,H,W], per sample."""
    if mode not in PAD_MODES:
        raise ValueError(f"padding mode must be one of {PAD_MODES}, got {mode!r}")
    b, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev) - pad
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev) - pad
        rows = dy[:, None] + torch.arange(h, device=dev)[None, :]  # [B,H] source rows, may fall outside
        cols = dx[:, None] + torch.arange(w, device=dev)[None, :]  # [B,W]
        if mode == "reflect":  # mirror without repeating the edge (as F.pad's "reflect")
            rows = (h - 1) - ((h - 1) - rows.abs()).abs()
            cols = (w - 1) - ((w - 1) - cols.abs()).abs()
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # [B,H,W]
        bi = torch.arange(b, device=dev)[:, None, None]
        x = x.permute(0, 2, 3, 1)[bi, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
        x = (x * inside[..., None]).permute(0, 3, 1, 2)
    if flip:
        flips = (torch.rand(b, generator=gen) < 0.5).to(dev)
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class Normalizer:
    """uint8 → float normalised with the CIFAR-10 statistics (also used for SVHN, SPEC §6), or with a
    user data set's own per-channel ``mean`` / ``std`` (shares of 255)."""

    def __init__(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, mean=MEAN, std=STD
    ) -> None:
        self.mean = torch.tensor(mean, device=device, dtype=dtype).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device, dtype=dtype).view(1, -1, 1, 1) * 255
        self.dtype = dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.dtype) - self.mean) / self.std


class Batches:
    """Batches over a subset of images held in memory.

    ``images``/``labels`` are full tensors on the compute device; ``idx`` selects the subset (indices
    into them, returned with each batch); ``triggered`` (bool over all images) marks samples that get
    the ``trigger`` stamped.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        idx: torch.Tensor | None = None,
        *,
        batch_size: int = 512,
        shuffle: bool = False,
        augment: bool = False,
        trigger: Trigger | None = None,
        triggered: torch.Tensor | None = None,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        pad_mode: str = "zeros",
        pad: int | None = None,
        flip: bool = True,
        mean=MEAN,
        std=STD,
    ) -> None:
        self.images, self.labels = images, labels
        dev = images.device
        self.idx = torch.arange(len(images)) if idx is None else idx.to(torch.int64).cpu()
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.trigger = trigger
        self.triggered = None if triggered is None else triggered.to(dev)
        self.gen = seeded_generator(seed)
        self.drop_last, self.channels_last = drop_last, channels_last
        self.norm = Normalizer(dev, mean=mean, std=std)
        # 4 at 32×32 (SPEC §6), scaled for downsampled images, unless set (user data: rem.data.user)
        self.pad = max(1, images.shape[-1] // 8) if pad is None else pad
        self.pad_mode, self.flip = pad_mode, flip

    def __len__(self) -> int:
        n = len(self.idx)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = self.idx[torch.randperm(len(self.idx), generator=self.gen)] if self.shuffle else self.idx
        dev = self.images.device
        for s in range(len(self)):
            bidx = order[s * self.batch_size : (s + 1) * self.batch_size].to(dev)
            x = self.images[bidx]
            if self.augment:
                x = random_crop_flip(x, self.pad, self.gen, self.pad_mode, self.flip)
            if self.trigger is not None and self.triggered is not None:
                x = self.trigger.stamp(x, self.triggered[bidx])
            x = self.norm(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[bidx], bidx


def train_batches(
    task: Task,
    idx: torch.Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    augment: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    labels: torch.Tensor | None = None,
    drop_last: bool = False,
) -> Batches:
    """Batches over D_tr as trained (corrupted labels, triggers stamped) restricted to ``idx``."""
    dev = torch.device(device)
    pre = getattr(task, "preprocess", None)  # a user data set's own settings (rem.data.user.Preprocess)
    kw = pre.batch_kwargs() if pre is not None else {"pad_mode": task.config.crop_pad}
    return Batches(
        task.data.x_train.to(dev),
        (task.y_train if labels is None else labels).to(dev),
        idx,
        batch_size=batch_size,
        shuffle=shuffle,
        augment=augment,
        trigger=task.trigger,
        triggered=task.triggered,
        seed=seed,
        drop_last=drop_last,
        channels_last=True,
        **kw,
    )
