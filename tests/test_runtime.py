import os
import platform
import subprocess
import sys

import pytest

from rem.runtime import tune_allocator

# a few training steps of a conv layer on 32 MiB activations; prints the minor page faults of the steps
STEPS = """
import resource, sys, torch
from rem.runtime import tune_allocator
tune_allocator()
torch.set_num_threads(1)
conv = torch.nn.Conv2d(32, 32, 3, padding=1)
x = torch.randn(64, 32, 64, 64)
conv(x).square().mean().backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    conv(x).square().mean().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_allocator_tuning_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("REM_MALLOC_TUNING", "0")
    assert tune_allocator() is False


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"), reason="glibc")
def test_allocator_tuning_stops_refaulting_activation_buffers():
    """glibc's defaults map and unmap every big activation buffer, so each step faults its pages in
    again; tuned, the steps reuse the pages already in the process."""

    def faults(tuning: str) -> int:
        env = {**os.environ, "REM_MALLOC_TUNING": tuning, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    default, tuned = faults("0"), faults("1")
    assert default > 4 * 8192  # at least a 32 MiB buffer per step (4 KiB pages)
    assert tuned < default / 4, (default, tuned)
