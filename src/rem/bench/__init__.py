"""The benchmark: the grid (:mod:`~rem.bench.grid`: a profile and overrides expanded into the run specs of
:mod:`rem.run`), one cell computed (:mod:`~rem.bench.cell`), the results store (:mod:`~rem.bench.store`) and the
executors (:mod:`~rem.bench.executors`)."""

from rem.bench.executors import EXECUTORS, RunSummary, run_grid
from rem.bench.grid import Grid
from rem.bench.store import ResultStore
from rem.run.spec import Cell

__all__ = ["EXECUTORS", "Cell", "Grid", "ResultStore", "RunSummary", "run_grid"]
