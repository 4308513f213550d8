"""Running a grid: :func:`run_grid` and its executors (``local``, ``ray``, ``slurm``), one module each
(:mod:`~rem.bench.executors.local`, :mod:`~rem.bench.executors.ray`, :mod:`~rem.bench.executors.slurm`)
over one shared :class:`~rem.bench.executors.plan.Plan`.

All three run the same :func:`rem.bench.cell.run_cell` and the driver (the process that called
:func:`run_grid`) writes every record to the store, one transaction per record, as cells finish:

- ``local`` (default): cells one after the other in this process, with a progress bar (cells done,
  elapsed, ETA; pretraining counts in the ETA, weighted by its samples against a cell's) and a nested
  bar of the current pretraining or cell's steps. Each starting model is pretrained just before the
  first cell that needs it, and cells are ordered so that all cells of a starting model run together.
  Several ``rem bench`` processes on one run folder share the work: each claims a cell (or a starting
  model) in the store before computing it and skips those another live process holds.
- ``ray``: each cell is a Ray task on the cluster at ``ray_address`` (or ``$RAY_ADDRESS``; else a
  local Ray instance is started and stopped). Starting models are pretrained first, as Ray tasks, one
  per model; the driver saves each in the run folder and puts its bytes in the object store, and the
  cells of that model are submitted as soon as it is ready. Workers need no shared file system.
- ``slurm``: a submitit job array (``submitit.AutoExecutor``, logs in ``<run_dir>/slurm``): first
  one job per missing starting model, then one job per cell. Jobs write their record to
  ``<run_dir>/incoming/<key>.json`` (the run folder must be on a shared file system, as submitit
  needs) and the driver moves them into the store as jobs finish; the next run ingests any a dead
  driver left. ``cluster="local"`` runs the jobs as local processes (for tests).

Ray and submitit are optional: ``pip install 'rem[ray]'`` / ``pip install 'rem[slurm]'``.

The ``ray`` and ``slurm`` drivers claim all the cells they submit. A cell that raises is stored as
``failed`` with its traceback (the report lists it; the next run
retries it) and the grid goes on, unless ``fail_fast``. Interrupting the driver loses only cells in
progress: rerunning the same command skips every stored cell.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from rem.bench.cell import ingest_incoming, start_specs
from rem.bench.executors.plan import GridBar, Plan, RunSummary, Sink
from rem.bench.grid import Grid
from rem.bench.store import ResultStore
from rem.errors import ConfigError
from rem.run.record import dumps

EXECUTORS = ("local", "ray", "slurm")


def _runner(executor: str):
    """The run function of ``executor`` (imported only when used)."""
    if executor == "local":
        from rem.bench.executors.local import run_local as run
    elif executor == "ray":
        from rem.bench.executors.ray import run_ray as run
    elif executor == "slurm":
        from rem.bench.executors.slurm import run_slurm as run
    else:
        raise ConfigError(f"unknown executor {executor!r}; expected one of {EXECUTORS}")
    return run


def _check_options(executor: str, run, options: dict) -> None:
    """Refuse options the executor does not take (a misspelt one would otherwise be ignored)."""
    known = [n for n, p in inspect.signature(run).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"the {executor} executor has no option(s) {unknown}; known: {known}")


def run_grid(
    grid: Grid,
    run_dir: str | Path,
    executor: str = "local",
    *,
    device="auto",
    data_dir=None,
    progress: bool = True,
    fail_fast: bool = False,
    limit: int | None = None,
    **executor_kw,
) -> RunSummary:
    """Run every cell of ``grid`` not yet in ``<run_dir>/results.sqlite``; returns a :class:`RunSummary`.

    ``executor`` is ``local``, ``ray`` or ``slurm``; ``executor_kw`` go to it (``ray_address``,
    ``cpus_per_cell``, ``gpus_per_cell`` for Ray; ``cluster``, ``slurm`` (a dict: partition,
    timeout_min, cpus_per_task, gpus_per_node, mem_gb, array_parallelism, account, qos, constraint),
    ``poll_s`` for slurm). ``limit`` runs at most that many of the missing cells.
    """
    run = _runner(executor)
    _check_options(executor, run, executor_kw)
    t0 = time.time()
    run_dir = Path(run_dir)
    cells = grid.cells()  # validates the grid before touching the run folder
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ConfigError("two cells of the grid resolve to the same configuration")
    from rem.output import probe_folder
    from rem.progress import bars_enabled

    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    if executor == "local":
        from rem.runtime import pick_device

        pick_device(device)  # a device this torch cannot use is refused here, not in every cell
    probe_folder(run_dir, "run folder")  # created, and written to, before any work
    with ResultStore.in_run_dir(run_dir) as store:
        store.set_meta("last_grid", dumps(grid.as_dict()))
        ingest_incoming(run_dir, store)
        stored = store.done_keys()
        todo = [c for c in cells if c.key not in stored]
        summary = RunSummary(run_dir=run_dir, total=len(cells), skipped=len(cells) - len(todo))
        if limit is not None:
            todo = todo[:limit]
        if executor != "local":  # the driver claims what it submits; cells another runner holds are its
            mine = [c for c in todo if store.claim(c.key)]
            summary.elsewhere = len(todo) - len(mine)
            todo = mine
        fresh = [s for s in start_specs(todo) if not s.path(run_dir).is_file()]  # to pretrain
        live = bars_enabled(progress)
        bar = None
        if live:
            p = grid.resolved_profile()
            weight = (p.pretrain.steps * p.pretrain.batch_size) / max(1, p.unlearn.steps * p.unlearn.batch_size)
            n_starts = len(fresh)
            bar = GridBar(
                summary.total,
                summary.skipped + summary.elsewhere,
                n_starts,
                weight,
                enabled=True,
                desc=f"bench ({executor})",
            )
        try:
            run(
                Plan(todo, run_dir, Sink(store, summary, fail_fast, bar, progress=live), device, data_dir),
                **executor_kw,
            )
        finally:
            if bar is not None:
                bar.close()
            store.release()  # every claim this process still holds (a cell interrupted mid-way)
        _count_pretraining(store, summary, fresh, t0)
        summary.wall_s = time.time() - t0
        return summary


def _count_pretraining(store: ResultStore, summary: RunSummary, fresh: list, t0: float) -> None:
    """Add to ``summary`` the starting models of ``fresh`` (not on disk when the run began) whose
    pretraining finished during it (by this run, its workers, or another runner on the same folder)."""
    for spec in fresh:
        rec = store.model(spec.key)
        if rec is not None and float(rec.get("finished_at") or 0.0) >= t0:
            summary.add_pretrain(rec)
