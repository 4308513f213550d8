"""Levers on one training step of the ``cpu`` profile's ResNet-9 (issue 15), in one run, at one thread:
bf16 autocast against fp32 (channels-last and NCHW), and ``torch.compile`` (inductor) against eager.

    OMP_NUM_THREADS=1 python benchmarks/step_levers.py [--steps 5] [--no-compile]

Each configuration is timed twice, interleaved (A, B, A, B), after one warm-up step; the compile time of
the compiled step is printed separately.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from rem.models import build_model
from rem.profiles import get_profile
from rem.train import pretrain_spec


def _model(channels_last: bool):
    torch.manual_seed(0)
    m = build_model(pretrain_spec(get_profile("cpu").arch_spec(10), "capacity-0.5"))
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _batch(channels_last: bool, n: int = 256):
    x, y = torch.randn(n, 3, 16, 16), torch.randint(0, 10, (n,))
    return (x.to(memory_format=torch.channels_last) if channels_last else x), y


def _timed(step, steps: int) -> float:
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def _precision_times(channels_last: bool, steps: int) -> dict[str, list[float]]:
    m, (x, y) = _model(channels_last), _batch(channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(m(x, mode="drop"), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(2):
        times["fp32"].append(_timed(lambda: step(False), steps))
        times["bf16"].append(_timed(lambda: step(True), steps))
    return times


def precision(steps: int) -> None:
    for cl in (True, False):
        times = _precision_times(cl, steps)
        layout = "channels-last" if cl else "NCHW"
        print(f"{layout:>13}: fp32 {times['fp32']} s/step, bf16 {times['bf16']} s/step", flush=True)


def compiled(steps: int) -> None:
    m, (x, y) = _model(True), _batch(True)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

    def loss_fn(x, y):
        return F.cross_entropy(m(x, mode="drop"), y)

    fast = torch.compile(loss_fn)

    def step(f) -> None:
        loss = f(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step(fast)
    print(f"compile (first step): {time.perf_counter() - t:.1f} s", flush=True)
    times = {"eager": [], "compiled": []}
    for _ in range(2):
        times["eager"].append(_timed(lambda: step(loss_fn), steps))
        times["compiled"].append(_timed(lambda: step(fast), steps))
    print(f"eager {times['eager']} s/step, compiled {times['compiled']} s/step", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, capacity-0.5 ResNet-9 of the cpu profile, batch 256")
    precision(args.steps)
    if not args.no_compile:
        compiled(args.steps)


if __name__ == "__main__":
    main()
