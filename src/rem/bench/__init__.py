"""The benchmark: grid spec (:mod:`~rem.bench.grid`), one cell (:mod:`~rem.bench.cell`), the results
store (:mod:`~rem.bench.store`) and the executors (:mod:`~rem.bench.executors`)."""

from rem.bench.executors import EXECUTORS, RunSummary, run_grid
from rem.bench.grid import Cell, Grid
from rem.bench.store import ResultStore

__all__ = ["EXECUTORS", "Cell", "Grid", "ResultStore", "RunSummary", "run_grid"]
