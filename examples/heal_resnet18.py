"""Heal your own classifier: a plain-torch ResNet-18 with a backdoor, healed by REM through rem's wrapper.

What a user has: a network of their own (here a CIFAR-style ResNet-18 written below in plain torch;
torchvision is not needed), the images and labels it was trained on (here poisoned CIFAR-10: 2 % of
the training images carry a 3×3 white square in the bottom-right corner and the label 0, "airplane"),
and the indices of the poisoned images found so far (here half of them). rem never sees the class of
the network nor the truth about the data: it gets the module, two arrays and the found indices.

    REM_DATA_DIR=/path/to/datasets OMP_NUM_THREADS=1 python examples/heal_resnet18.py

Data: the ``cpu`` profile's CIFAR-10 subset (8,000 class-balanced training images downsampled to
16×16, the 10,000 test images) and its ``poison`` task (|D_c| = 160), with the trigger written into
the stored images (as a poisoned data set on disk would have it). Model: ResNet-18 of width 16 (the
usual 64-128-256-512 channels scaled to 16-32-64-128; ``--width 64`` is the standard one) trained
from scratch for ``--epochs`` epochs with the augmentation rem assumes by default (random crop with
padding 2 and horizontal flips, CIFAR-10 normalisation). Healing: REM at the ``cpu`` profile's budget
(250 steps of batch 512, lr 0.005) with a side branch of ratio 1 on every Conv2d / Linear but the
classifier. Printed: test accuracy, attack success rate (ASR: triggered test images of class ≠ 0
classified as 0) and accuracy on the found images' poisoned labels, before and after.

For a backdoor, ``--set forget_bn_frozen=true`` (batch norm in inference mode while REM pushes the found
images out) is the setting to try: measured in docs/results/measurements.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images (3×3 stem, no max-pool), widths ``width`` · (1, 2, 4, 8)."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1) * 255  # rem's default normalisation
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1) * 255


def to_input(x_uint8: torch.Tensor) -> torch.Tensor:
    return (x_uint8.float() - MEAN) / STD


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and a random horizontal flip, per image (uint8 NCHW)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int = 128, lr: float = 0.1, seed: int = 0
) -> None:
    """SGD (momentum 0.9, weight decay 5e-4, nesterov), linear warm-up then linear decay to 0."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15, anneal_strategy="linear")
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(len(x) // batch):
            idx = order[s * batch : (s + 1) * batch]
            loss = F.cross_entropy(model(to_input(augment(x[idx], gen))), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"  epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(to_input(x[i : i + 1000])).argmax(1) for i in range(0, len(x), 1000)])


def report(model, x_test, y_test, x_test_trig, x_found, y_found, target: int = 0) -> str:
    """Test accuracy, attack success and accuracy on the found images' poisoned labels, in percent."""
    clean, trig = predict(model, x_test), predict(model, x_test_trig)
    other = y_test != target
    shares = {
        "test_acc": (clean == y_test).float().mean().item(),
        "asr": (trig[other] == target).float().mean().item(),
        "found_acc": (predict(model, x_found) == y_found).float().mean().item(),
    }
    return ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=16, help="ResNet-18 base width (64 is the standard)")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs of the poisoned model")
    ap.add_argument("--rate", type=float, default=0.5, help="share of the poisoned images that were found")
    ap.add_argument("--steps", type=int, default=None, help="unlearning steps (default: the cpu profile's budget)")
    ap.add_argument(
        "--method",
        default="rem",
        help="unlearning method (rem, rem-sp, npo, finetune, scrub, ...), or several, comma-separated: each heals "
        "the same trained model",
    )
    ap.add_argument("--branch-init", default="zero", choices=["zero", "default"], help="the branches' up projection")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method setting, repeatable (e.g. expand_ratio=0.25)",
    )
    ap.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (default $REM_DATA_DIR)")
    args = ap.parse_args()

    from rem.profiles import get_profile, profile_data, profile_task

    # The poisoned data set, as plain arrays (what a user would have on disk).
    profile = get_profile("cpu")
    if args.steps is None:
        args.steps = profile.unlearn.steps
    data = profile_data(profile, args.data_dir)
    task = profile_task(profile, "poison", seed=0, data=data)
    x_train = data.x_train.clone()
    task.trigger.stamp(x_train, task.triggered)  # the trigger is in the stored images
    y_train = task.y_train.clone()
    images = x_train.permute(0, 2, 3, 1).numpy()  # N, H, W, C uint8, as image libraries give them
    labels = y_train.numpy()
    found = task.forget_idx(args.rate).numpy()  # the indices the user found (in a real case: found.txt)
    x_test, y_test = data.x_test, data.y_test
    x_test_trig = task.trigger.stamp(x_test.clone())
    x_found, y_found = x_train[found], y_train[found]
    print(
        f"data: {len(labels)} training images {tuple(images.shape[1:3])}, {len(task.corrupt_idx)} poisoned, "
        f"{len(found)} found; {len(y_test)} test images"
    )

    torch.manual_seed(0)
    model = ResNet18(num_classes=10, width=args.width)
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    print(f"training ResNet-18 (width {args.width}, {n_params:,} parameters) for {args.epochs} epochs")
    train(model, x_train, y_train, args.epochs)
    t_train = time.perf_counter() - t0
    before = report(model, x_test, y_test, x_test_trig, x_found, y_found)
    print(f"before: {before}  (training {t_train:.0f} s)", flush=True)

    for method in args.method.split(","):
        heal(model, images, labels, found, method, args, (x_test, y_test, x_test_trig, x_found, y_found), n_params)


def heal(model, images, labels, found, method, args, evaluation, n_params) -> None:
    """Heal ``model`` with ``method`` and print what changed; the healed model is the user's own class."""
    import rem
    from rem.cli.settings import settings_for

    # Healing: the user's module, the user's arrays, the found indices. Nothing else.
    t0 = time.perf_counter()
    healed, history = rem.unlearn(
        model,
        (images, labels),
        np.asarray(found),
        method=method,
        device="cpu",
        steps=args.steps,
        batch_size=512,
        lr=0.005,
        branch_init=args.branch_init,
        **settings_for(args.set, method),  # text, parsed by each setting's declared type
    )
    t_heal = time.perf_counter() - t0
    after = report(healed, *evaluation)
    print(f"after:  {after}  ({method} {t_heal:.0f} s)")

    # The healed model is the user's own class with the user's own state_dict keys.
    assert type(healed) is ResNet18
    ResNet18(num_classes=10, width=args.width).load_state_dict(healed.state_dict(), strict=True)
    assert sum(p.numel() for p in healed.parameters()) == n_params
    print(
        f"healed model: {type(healed).__name__}, {n_params:,} parameters, loads strictly into ResNet18; "
        f"best round {history[-1].get('best_round')}",
        flush=True,
    )


if __name__ == "__main__":
    main()
