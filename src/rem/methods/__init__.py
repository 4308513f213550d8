"""Unlearning methods behind one interface (see :mod:`rem.methods.base`); importing registers them all."""

from rem.methods import baselines as _baselines  # noqa: F401,E402  (the baselines of SPEC §5)
from rem.methods import rem as _rem  # noqa: F401,E402  (REM, its oracle and ablations, npo, ascent)
from rem.methods.base import REGISTRY, Context, Method, MethodConfig, get_method, register

__all__ = ["REGISTRY", "Context", "Method", "MethodConfig", "get_method", "register"]
