"""Baselines of SPEC §5, each a registered :class:`rem.methods.base.Method` (importing registers them).

| name | module | uses |
|---|---|---|
| ``none``, ``retrain``, ``finetune``, ``cf-2``, ``cf-4``, ``eu-2``, ``eu-4`` | :mod:`.simple` | —, D_r |
| ``scrub``, ``badt`` | :mod:`.distill` | D_f + D_r, D_tr |
| ``ssd``, ``potion`` | :mod:`.dampening` | D_f + D_r |
| ``salun`` | :mod:`.salun` | D_f + D_r |

``npo`` and ``ascent`` (REM's step 2 alone) live in :mod:`rem.methods.npo`. Every baseline runs on an ``etd``
starting model and returns the deployed model without extra units (see :mod:`rem.methods.common`); the
last-``k``-layers baselines see a model's layers as :mod:`.layers` lists them.
"""

from rem.methods.baselines import dampening, distill, salun, simple
from rem.methods.baselines.layers import last_layers, layer_groups

__all__ = ["dampening", "distill", "last_layers", "layer_groups", "salun", "simple"]
