"""Running a grid: :func:`run_grid` and its executors (``local``, ``ray``, ``slurm``).

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

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rem.bench.cell import (
    StartSpec,
    ensure_start,
    ingest_incoming,
    make_cell_task,
    pretrain_start_bytes,
    run_cell,
    run_cell_to_file,
    start_specs,
)
from rem.bench.grid import Cell, Grid
from rem.bench.store import ResultStore, dumps
from rem.errors import ConfigError, RemError
from rem.paths import write_atomic

EXECUTORS = ("local", "ray", "slurm")


@dataclass
class RunSummary:
    """What :func:`run_grid` did."""

    run_dir: Path
    total: int = 0  # cells in the grid
    skipped: int = 0  # already in the store before this run
    done: int = 0  # finished in this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (cell label, error)
    elsewhere: int = 0  # computed (or being computed) by another rem bench process on the same run folder
    wall_s: float = 0.0
    cost: dict[str, list[float]] = field(default_factory=dict)  # method → [cells, wall s, core-seconds] run now

    def add_cost(self, record: dict) -> None:
        """Count a finished cell's unlearning time (wall × the threads it ran on) under its method."""
        wall = float(record.get("wall_s") or 0.0)
        threads = int((record.get("env") or {}).get("threads") or 1)
        c = self.cost.setdefault(record.get("method", "?"), [0, 0.0, 0.0])
        c[0], c[1], c[2] = c[0] + 1, c[1] + wall, c[2] + wall * threads

    def cost_table(self) -> str:
        """Per method: cells run now, their unlearning wall time and core-seconds (most expensive first)."""
        if not self.cost:
            return ""
        rows = sorted(self.cost.items(), key=lambda kv: -kv[1][2])
        width = max(len(m) for m, _ in rows)
        lines = [f"  {'method':<{width}}  cells  wall s  core-s"]
        lines += [f"  {m:<{width}}  {int(n):5d}  {w:6.0f}  {c:6.0f}" for m, (n, w, c) in rows]
        total = [sum(v[i] for v in self.cost.values()) for i in range(3)]
        lines.append(f"  {'all':<{width}}  {int(total[0]):5d}  {total[1]:6.0f}  {total[2]:6.0f}")
        return "unlearning cost of the cells run now (wall × threads = core-seconds):\n" + "\n".join(lines)

    @property
    def complete(self) -> bool:
        return not self.failed and self.skipped + self.done + self.elsewhere == self.total and not self.elsewhere

    def __str__(self) -> str:
        s = (
            f"{self.total} cells: {self.skipped} already stored, {self.done} run now, "
            f"{len(self.failed)} failed"
            + (f", {self.elsewhere} left to another rem bench on this run folder" if self.elsewhere else "")
            + f" ({self.wall_s:.0f} s); results in {self.run_dir}"
        )
        for label, err in self.failed[:10]:
            s += f"\n  failed: {label}: {err.strip().splitlines()[-1] if err.strip() else err}"
        if self.cost:
            s += "\n" + self.cost_table()
        return s


class GridBar:
    """The grid's bar: cells done of the grid, with pretraining counted in the ETA.

    Its unit of work is one cell; a starting model still to pretrain counts ``start_weight`` cells (its
    samples seen, steps × batch size, over a cell's). Step callbacks (:meth:`steps`) move it *within*
    a pretraining or a cell, so it shows signs of life and a live ETA; a nested :class:`StepBar` below it
    shows the current job's own steps and loss. Nothing is drawn unless ``enabled``.
    """

    def __init__(self, total_cells: int, done_cells: int, n_starts: int, start_weight: float, *,
                 enabled: bool, desc: str = "bench", file=None) -> None:
        self.total_cells, self.cells = total_cells, done_cells
        self.start_weight = start_weight
        self.base = float(done_cells)  # work finished, in cell units
        self.partial = 0.0  # of the job in progress
        self.failed = 0
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(total_cells + n_starts * start_weight, 3), initial=done_cells,
                            desc=desc, position=0, dynamic_ncols=True, file=file,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
            self._postfix()

    @property
    def n(self) -> float:
        return self.base + self.partial

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.cells}/{self.total_cells} cells, {self.failed} failed", refresh=False)

    def _move(self, partial: float) -> None:
        self.partial = partial
        if self.bar is not None:
            self.bar.n = min(self.bar.total, round(self.base + self.partial, 6))
            self.bar.update(0)  # redraws when tqdm's refresh interval has passed

    def steps(self, weight: float):
        """An ``on_step(done, total, loss)`` moving the bar through a job worth ``weight`` cells."""

        def on_step(done: int, total: int, loss=None) -> None:
            self._move(weight * min(1.0, done / max(1, total)))

        return on_step

    def finish(self, weight: float, cell: bool, failed: bool = False) -> None:
        """A job worth ``weight`` cells ended (a cell, or a pretraining when ``cell`` is False)."""
        self._move(weight)
        self.base, self.partial = self.base + weight, 0.0
        if cell:
            self.cells += 1
            self.failed += failed
        self._postfix()
        if self.bar is not None:
            self.bar.refresh()

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Sink:
    """Writes finished and failed cells to the store and counts them."""

    def __init__(self, store: ResultStore, summary: RunSummary, fail_fast: bool, bar: GridBar | None = None,
                 progress: bool = False) -> None:
        self.store, self.summary, self.fail_fast, self.bar = store, summary, fail_fast, bar
        self.progress = progress  # nested step bars wanted (and allowed)

    def ok(self, record: dict) -> None:
        self.store.put(record)
        self.summary.done += 1
        self.summary.add_cost(record)
        self._tick()

    def fail(self, cell: Cell, error: str) -> None:
        self.store.put_failure(cell.config(), cell.key, error)
        self.summary.failed.append((cell.label(), error))
        self._tick(failed=True)
        if self.fail_fast:
            raise RemError(f"cell {cell.label()} failed (fail-fast):\n{error}")

    def _tick(self, failed: bool = False) -> None:
        if self.bar is not None:
            self.bar.finish(1.0, cell=True, failed=failed)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ConfigError("the ray executor needs Ray: pip install 'rem[ray]'") from e
    return ray


def _import_submitit():
    try:
        import submitit
    except ImportError as e:
        raise ConfigError("the slurm executor needs submitit: pip install 'rem[slurm]'") from e
    return submitit


# --- local ----------------------------------------------------------------------------------------


def run_local(
    todo: list[Cell], run_dir: Path, sink: _Sink, *, device="auto", data_dir=None, poll_s: float = 2.0, **_
) -> None:
    """Cells one by one, each claimed in the store first; cells and starting models that another live
    ``rem bench`` holds are left to it (a starting model it is pretraining is waited for)."""
    from rem.progress import StepBar, chain

    store, bar = sink.store, sink.bar
    ready: set[str] = set()
    broken: dict[str, str] = {}  # starting models whose pretraining failed: their cells fail at once
    pending = list(todo)
    while pending:
        progressed = False
        for cell in list(pending):
            spec = StartSpec.of(cell)
            if store.is_done(cell.key) or store.claimed_elsewhere(cell.key):
                pending.remove(cell)  # stored or being computed by another runner
                sink.summary.elsewhere += 1
                if bar is not None:
                    bar.finish(1.0, cell=True)
                continue
            if spec.key in broken:
                pending.remove(cell)
                sink.fail(cell, broken[spec.key])
                continue
            if spec.key not in ready:
                if not store.claim(f"start:{spec.key}"):
                    continue  # another runner is pretraining it: come back to it later
                weight = 0.0 if spec.path(run_dir).is_file() or bar is None else bar.start_weight
                if bar is not None:
                    bar.describe(f"pretrain {spec.label()}")
                try:
                    with StepBar(f"pretrain {spec.label()}", sink.progress, position=1) as inner:
                        ensure_start(spec, run_dir, device=device, data_dir=data_dir, store=store,
                                     on_step=chain(inner, bar.steps(weight) if bar is not None else None))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception:
                    broken[spec.key] = traceback.format_exc()
                    pending.remove(cell)
                    sink.fail(cell, broken[spec.key])
                    continue
                finally:
                    store.release(f"start:{spec.key}")
                    if bar is not None:
                        bar.finish(weight, cell=False)
                ready.add(spec.key)
            if not store.claim(cell.key):
                continue  # taken by another runner in the meantime: counted on the next pass
            pending.remove(cell)
            progressed = True
            if bar is not None:
                bar.describe(cell.label())
            try:
                with StepBar(cell.method, sink.progress, position=1) as inner:
                    rec = run_cell(cell, run_dir, device=device, data_dir=data_dir,
                                   on_step=chain(inner, bar.steps(1.0) if bar is not None else None))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception:
                sink.fail(cell, traceback.format_exc())
                continue
            sink.ok(rec)
        if pending and not progressed:
            time.sleep(poll_s)  # every cell left waits for a starting model another runner pretrains


# --- ray ------------------------------------------------------------------------------------------


def _set_threads(n: float | int | None) -> None:
    """Torch's CPU threads = the CPUs a worker was given (results then match a local run at that count)."""
    if n:
        import torch

        torch.set_num_threads(max(1, int(n)))


def _ray_pretrain(spec: StartSpec, device, data_dir, threads):
    _set_threads(threads)
    return pretrain_start_bytes(spec, device=device, data_dir=data_dir)


def _ray_cell(cell: Cell, start: bytes, device, data_dir, threads):
    _set_threads(threads)
    return run_cell(cell, None, device=device, data_dir=data_dir, start=start)


def run_ray(
    todo: list[Cell],
    run_dir: Path,
    sink: _Sink,
    *,
    device="auto",
    data_dir=None,
    ray_address: str | None = None,
    cpus_per_cell: float = 1,
    gpus_per_cell: float | None = None,
    **_,
) -> None:
    ray = _import_ray()
    own = not ray.is_initialized()
    if own:
        address = ray_address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        if gpus_per_cell is None:  # a GPU per cell for CUDA, or on "auto" if the cluster has GPUs
            wants = str(device).startswith("cuda") or (
                device in (None, "auto") and ray.cluster_resources().get("GPU", 0) > 0
            )
            gpus_per_cell = 1 if wants else 0
        if not gpus_per_cell and device in (None, "auto"):
            device = "cpu"  # no GPU reserved: never use one that another task holds
        opts = {"num_cpus": cpus_per_cell, "num_gpus": gpus_per_cell, "max_retries": 0}
        pre_task = ray.remote(_ray_pretrain).options(**opts)
        cell_task = ray.remote(_ray_cell).options(**opts)
        by_start: dict[str, list[Cell]] = {}
        for c in todo:
            by_start.setdefault(c.start_key, []).append(c)
        pending: dict = {}  # ObjectRef -> ("start", spec) | ("cell", cell)

        def submit_cells(spec: StartSpec, data: bytes) -> None:
            ref = ray.put(data)
            for c in by_start[spec.key]:
                pending[cell_task.remote(c, ref, str(device), data_dir, cpus_per_cell)] = ("cell", c)

        for spec in start_specs(todo):  # wave 1: starting models (cells follow each as it is ready)
            path = spec.path(run_dir)
            if path.is_file():
                try:
                    ensure_start(spec, run_dir, store=sink.store)  # loads and checks it
                    submit_cells(spec, path.read_bytes())
                    continue
                except RemError:
                    pass
            pending[pre_task.remote(spec, str(device), data_dir, cpus_per_cell)] = ("start", spec)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            kind, what = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception:
                err = traceback.format_exc()
                for c in by_start[what.key] if kind == "start" else [what]:
                    sink.fail(c, err)
                continue
            if kind == "start":
                data, rec = result
                write_atomic(what.path(run_dir), data)
                sink.store.put_model(rec)
                submit_cells(what, data)
            else:
                sink.ok(result)
    finally:
        if own:
            ray.shutdown()


# --- slurm (submitit) -----------------------------------------------------------------------------


def _slurm_executor(run_dir: Path, cluster: str | None, slurm: dict):
    submitit = _import_submitit()
    if cluster not in (None, "slurm", "local"):
        raise ConfigError(f"slurm executor: cluster must be slurm or local, got {cluster!r}")
    ex = submitit.AutoExecutor(folder=str(run_dir / "slurm"), cluster=cluster)
    params = {
        "name": "rem-bench",
        "timeout_min": int(slurm.get("timeout_min", 240)),
        "cpus_per_task": int(slurm.get("cpus_per_task", 4)),
        "gpus_per_node": int(slurm.get("gpus_per_node", 0)),
    }
    if ex.cluster == "slurm":
        for k in ("partition", "array_parallelism", "account", "qos", "constraint"):
            if slurm.get(k) is not None:
                params[f"slurm_{k}"] = slurm[k]
        if slurm.get("mem_gb") is not None:
            params["mem_gb"] = slurm["mem_gb"]
    ex.update_parameters(**params)
    return ex


def _slurm_start(spec: StartSpec, run_dir, device, data_dir, threads) -> dict:
    _set_threads(threads)
    return ensure_start(spec, run_dir, device=device, data_dir=data_dir)


def _slurm_cell(cell: Cell, run_dir, device, data_dir, threads) -> dict:
    _set_threads(threads)
    return run_cell_to_file(cell, run_dir, device=device, data_dir=data_dir)


def _wait_jobs(jobs: dict, on_done: Callable, poll_s: float) -> None:
    while jobs:
        for job in [j for j in jobs if j.done()]:
            on_done(job, jobs.pop(job))
        if jobs:
            time.sleep(poll_s)


def run_slurm(
    todo: list[Cell],
    run_dir: Path,
    sink: _Sink,
    *,
    device="auto",
    data_dir=None,
    cluster: str | None = None,
    slurm: dict | None = None,
    poll_s: float = 2.0,
    **_,
) -> None:
    slurm = slurm or {}
    ex = _slurm_executor(run_dir, cluster, slurm)
    threads = int(slurm.get("cpus_per_task", 4))
    specs = start_specs(todo)
    missing = [s for s in specs if not s.path(run_dir).is_file()]
    for s in {json.dumps(s.profile.as_dict(), sort_keys=True): s for s in missing}.values():
        make_cell_task(s, data_dir)  # fetch each data set once here, not in many jobs at once
    bad_starts: dict[str, str] = {}
    if missing:  # wave 1: one job per missing starting model
        with ex.batch():
            jobs = [ex.submit(_slurm_start, s, run_dir, str(device), data_dir, threads) for s in missing]
        jobs_map = dict(zip(jobs, missing))

        def start_done(job, spec):
            try:
                sink.store.put_model(job.result())
            except Exception:
                bad_starts[spec.key] = traceback.format_exc()

        _wait_jobs(jobs_map, start_done, poll_s)
    for s in specs:
        if s.key not in bad_starts:
            try:
                ensure_start(s, run_dir, store=sink.store)  # now only loads (and records) it
            except RemError:
                bad_starts[s.key] = traceback.format_exc()
    runnable = []
    for c in todo:
        if c.start_key in bad_starts:
            sink.fail(c, bad_starts[c.start_key])
        else:
            runnable.append(c)
    if not runnable:
        return
    with ex.batch():  # wave 2: one job per cell
        jobs = [ex.submit(_slurm_cell, c, run_dir, str(device), data_dir, threads) for c in runnable]

    def cell_done(job, cell):
        try:
            rec = job.result()
        except Exception:
            sink.fail(cell, traceback.format_exc())
            return
        sink.ok(rec)
        (run_dir / "incoming" / f"{cell.key}.json").unlink(missing_ok=True)

    _wait_jobs(dict(zip(jobs, runnable)), cell_done, poll_s)


_RUNNERS = {"local": run_local, "ray": run_ray, "slurm": run_slurm}


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
    if executor not in _RUNNERS:
        raise ConfigError(f"unknown executor {executor!r}; expected one of {EXECUTORS}")
    t0 = time.time()
    run_dir = Path(run_dir)
    cells = grid.cells()  # validates the grid before touching the run folder
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ConfigError("two cells of the grid resolve to the same configuration")
    from rem.paths import check_output_dir
    from rem.progress import bars_enabled

    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    check_output_dir(run_dir, "run folder")
    if executor == "local":
        from rem.runtime import pick_device

        pick_device(device)  # a device this torch cannot use is refused here, not in every cell
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
        live = bars_enabled(progress)
        bar = None
        if live:
            p = grid.resolved_profile()
            weight = (p.pretrain.steps * p.pretrain.batch_size) / max(1, p.unlearn.steps * p.unlearn.batch_size)
            n_starts = sum(not s.path(run_dir).is_file() for s in start_specs(todo))
            bar = GridBar(summary.total, summary.skipped + summary.elsewhere, n_starts, weight, enabled=True,
                          desc=f"bench ({executor})")
        try:
            _RUNNERS[executor](
                todo,
                run_dir,
                _Sink(store, summary, fail_fast, bar, progress=live),
                device=device,
                data_dir=data_dir,
                **executor_kw,
            )
        finally:
            if bar is not None:
                bar.close()
            store.release()  # every claim this process still holds (a cell interrupted mid-way)
        summary.wall_s = time.time() - t0
        return summary
