"""``rem.heal``: the former name of :func:`rem.unlearn` for a user's own model, kept for one release.

:func:`rem.unlearn` takes rem's own models and any ``nn.Module``, with a benchmark task or a user's own
data, and every keyword :func:`heal` took (``labels``, ``num_classes``, ``preprocess``, ``targets``,
``exclude``, ``branch_act``, ``branch_init``, ``capacity``); ``heal`` calls it and warns.
"""

from __future__ import annotations

import warnings

from rem.api import CAPACITY, NEEDS_RECIPE, NEEDS_TRUTH, check_logits, unlearn
from rem.methods import Unlearned


def heal(model, data, forget_idx, method: str = "rem", **kwargs) -> Unlearned:
    """Deprecated: :func:`rem.unlearn` (same arguments, same result); emits a :class:`DeprecationWarning`."""
    warnings.warn(
        "rem.heal is deprecated and will be removed in the next release: call rem.unlearn (same arguments)",
        DeprecationWarning,
        stacklevel=2,
    )
    return unlearn(model, data, forget_idx, method, **kwargs)


__all__ = ["CAPACITY", "NEEDS_RECIPE", "NEEDS_TRUTH", "check_logits", "heal"]
