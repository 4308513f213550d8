"""Data sets: CIFAR-10, SVHN and generated images, as in-memory uint8 tensors."""

from rem.data.datasets import *  # noqa: F403 (the public names are datasets.__all__)
from rem.data.datasets import __all__  # noqa: F401
