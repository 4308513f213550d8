"""Unlearning methods behind one interface (see :mod:`rem.methods.base`); importing registers them all."""

from rem.methods import baselines as _baselines  # noqa: F401  (the baselines of SPEC §5)
from rem.methods import defences as _defences  # noqa: F401  (post-training backdoor defences)
from rem.methods import npo as _npo  # noqa: F401  (npo and ascent: REM's step 2 alone)
from rem.methods import rem as _rem  # noqa: F401  (REM, its oracle and ablation)
from rem.methods import rem_discover as _rem_discover  # noqa: F401  (REM that grows its shared set)
from rem.methods import rem_reset as _rem_reset  # noqa: F401  ([beyond] REM that resets θ_o1 first)
from rem.methods.base import (
    REGISTRY,
    Context,
    Method,
    MethodConfig,
    Unlearned,
    get_method,
    method_family,
    method_label,
    method_names,
    register,
    settings_help,
)

__all__ = [
    "REGISTRY",
    "Context",
    "Method",
    "MethodConfig",
    "Unlearned",
    "get_method",
    "method_family",
    "method_label",
    "method_names",
    "register",
    "settings_help",
]
