"""Device choice, mixed precision, seeding, and wall-time / peak-memory measurement."""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU. A device this torch cannot use raises ConfigError."""
    from rem.errors import ConfigError

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}: this torch ({torch.__version__}) has no usable CUDA; "
                "use --device cpu (or auto), or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type not in ("cpu", "mps"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA; nothing on CPU (CPU autocast is slower for these convnets)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Measurement:
    wall_s: float = 0.0
    peak_mem_mb: float = 0.0
    mem_kind: str = ""


@contextlib.contextmanager
def measure(device: torch.device) -> Iterator[Measurement]:
    """Wall time and peak memory of the block.

    CUDA: peak allocated GPU memory. CPU: peak resident set size *above the level at entry*, sampled
    every 5 ms by a thread (the process's own RSS, so it includes the data and models it created).
    """
    m = Measurement()
    stop = threading.Event()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        m.mem_kind = "cuda_peak_allocated_above_entry"
    else:
        base = _rss_bytes()
        peak = [base]

        def sample() -> None:
            while not stop.wait(0.005):
                peak[0] = max(peak[0], _rss_bytes())

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        m.mem_kind = "cpu_peak_rss_above_entry"
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            m.peak_mem_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            stop.set()
            th.join()
            m.peak_mem_mb = (max(peak[0], _rss_bytes()) - base) / 2**20
        m.wall_s = time.perf_counter() - t0


def environment(device: torch.device) -> dict:
    """Software versions and the device, recorded with every result."""
    import numpy

    from rem import __version__

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "rem": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "device": f"{device.type}: {dev}",
        "threads": torch.get_num_threads(),
        "host": platform.node(),
    }
