"""The run path: what one run is (:mod:`~rem.run.spec`: a cell, its key, a method's settings) and one run with
its record (:mod:`~rem.run.record`). ``rem unlearn``, ``rem bench``, ``rem demo`` and ``benchmarks/`` build on it;
nothing here knows the grid, the store or the command line."""

from rem.run.record import dumps, unlearn_and_record
from rem.run.spec import (
    MODEL_LAYOUT,
    SHORTCUTS,
    Cell,
    checkpoint_cell,
    config_fields,
    method_settings,
    shortcut_settings,
    start_key,
)

__all__ = [
    "MODEL_LAYOUT",
    "SHORTCUTS",
    "Cell",
    "checkpoint_cell",
    "config_fields",
    "dumps",
    "method_settings",
    "shortcut_settings",
    "start_key",
    "unlearn_and_record",
]
