"""Running a grid (:func:`run_grid`, :mod:`~rem.bench.executors.driver`) with one executor per backend."""

from rem.bench.executors.driver import EXECUTORS, run_grid
from rem.bench.executors.plan import GridBar, Plan, RunSummary, Sink

__all__ = ["EXECUTORS", "GridBar", "Plan", "RunSummary", "Sink", "run_grid"]
