"""Images per second of one pretraining step: rem's pipeline against a plain reference, in one run.

- ours: uint8 images held in memory, crop/flip/normalise on whole batches (rem.data.loader), the
  capacity-0.5 model trained as the narrow network it is, channels-last.
- reference (the usual way): a torch ``Dataset`` with per-sample transforms (pad, random crop, flip,
  normalise on float tensors), a ``DataLoader``, and a full-width model whose extra channels are
  multiplied by zero (``drop`` mode) so that it computes the same function.

Same architecture, same batch size, same data (CIFAR-10 subset from REM_DATA_DIR if present, else
generated). Prints both throughputs and their ratio.

    python benchmarks/train_throughput.py [--profile cpu] [--steps 20] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from rem.data.loader import MEAN, STD, train_batches
from rem.errors import DataError
from rem.models import build_model, expand
from rem.profiles import get_profile, profile_data, profile_task
from rem.train import pretrain_spec


class PerSampleDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, pad: int) -> None:
        self.x, self.y, self.pad = x, y, pad
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i].float() / 255
        h, w = img.shape[-2:]
        img = F.pad(img, (self.pad,) * 4)
        dy, dx = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        img = img[:, dy : dy + h, dx : dx + w]
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        return (img - self.mean) / self.std, self.y[i]


def step_rate(model, batches, steps: int, mode: str, warmup: int = 2) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    n = done = 0
    t0 = 0.0
    while done < steps + warmup:
        for b in batches:
            x, y = b[0], b[1]
            if done == warmup:
                t0, n = time.perf_counter(), 0
            loss = F.cross_entropy(model(x, mode=mode), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
            done += 1
            if done >= steps + warmup:
                break
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference")
    args = ap.parse_args()
    prof = get_profile(args.profile)
    try:
        data = profile_data(prof, download=False)
    except DataError:
        prof = get_profile("smoke")
        data = profile_data(prof)
    task = profile_task(prof, "random", 0, data=data)
    torch.manual_seed(0)
    narrow = build_model(pretrain_spec(prof.arch_spec(data.num_classes), "capacity-0.5"))
    wide = expand(narrow, 1.0)  # same function in drop mode: extras multiplied by zero
    ours_batches = train_batches(task, None, batch_size=args.batch_size, seed=0, drop_last=True)
    ref_loader = DataLoader(
        PerSampleDataset(data.x_train, task.y_train, max(1, data.image_size // 8)),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
    )
    ours = step_rate(narrow.to(memory_format=torch.channels_last), ours_batches, args.steps, "drop")
    ref = step_rate(wide, ref_loader, args.steps, "drop")
    print(
        f"data: {data.name} {len(data.y_train)} images at {data.image_size}px; batch {args.batch_size}; "
        f"{args.steps} timed steps; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"reference (Dataset + DataLoader, full width with zeroed extras): {ref:8.0f} img/s")
    print(f"rem (in-memory batches, narrow capacity-0.5 model):             {ours:8.0f} img/s")
    print(f"speed-up: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()
