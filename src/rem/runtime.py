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
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {name!r}: this machine or torch has no usable Apple MPS; use --device cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA; nothing on CPU (CPU autocast is slower for these convnets)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of handing it back to the OS after every step.

    With glibc's defaults, every activation buffer above the mmap threshold is mapped and unmapped per
    step, and the heap top is trimmed as soon as it is freed, so each training step faults its buffers
    in again (page faults, zeroing, system time). Here big blocks come from the heap (no mmap), the heap
    is trimmed only past 2 GiB free, and it grows 1 GiB at a time (its measured effect:
    ``docs/performance.md``). Called by the ``rem`` command
    and its bench workers at start-up; a no-op (False) where the C library is not glibc, or when
    ``REM_MALLOC_TUNING=0``.
    """
    if os.environ.get("REM_MALLOC_TUNING", "1") == "0" or platform.system() != "Linux":
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok &= mallopt(_M_TOP_PAD, 1 << 30) == 1
    return bool(ok)


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

    from rem.version import __version__

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
