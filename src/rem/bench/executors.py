"""Running a grid: :func:`run_grid` and its executors (``local``, ``ray``, ``slurm``).

All three run the same :func:`rem.bench.cell.run_cell` and the driver (the process that called
:func:`run_grid`) writes every record to the store, one transaction per record, as cells finish:

- ``local`` (default): cells one after the other in this process, with a progress bar (done/total,
  elapsed, ETA). Each starting model is pretrained just before the first cell that needs it (one
  process: no race), and cells are ordered so that all cells of a starting model run together.
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

A cell that raises is stored as ``failed`` with its traceback (the report lists it; the next run
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
    write_bytes_atomic,
)
from rem.bench.grid import Cell, Grid
from rem.bench.store import ResultStore, dumps
from rem.errors import ConfigError, RemError

EXECUTORS = ("local", "ray", "slurm")


@dataclass
class RunSummary:
    """What :func:`run_grid` did."""

    run_dir: Path
    total: int = 0  # cells in the grid
    skipped: int = 0  # already in the store before this run
    done: int = 0  # finished in this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (cell label, error)
    wall_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.failed and self.skipped + self.done == self.total

    def __str__(self) -> str:
        s = (
            f"{self.total} cells: {self.skipped} already stored, {self.done} run now, "
            f"{len(self.failed)} failed "
            f"({self.wall_s:.0f} s); results in {self.run_dir}"
        )
        for label, err in self.failed[:10]:
            s += f"\n  failed: {label}: {err.strip().splitlines()[-1] if err.strip() else err}"
        return s


class _Sink:
    """Writes finished and failed cells to the store and counts them."""

    def __init__(self, store: ResultStore, summary: RunSummary, fail_fast: bool, bar=None) -> None:
        self.store, self.summary, self.fail_fast, self.bar = store, summary, fail_fast, bar

    def ok(self, record: dict) -> None:
        self.store.put(record)
        self.summary.done += 1
        self._tick()

    def fail(self, cell: Cell, error: str) -> None:
        self.store.put_failure(cell.config(), cell.key, error)
        self.summary.failed.append((cell.label(), error))
        self._tick()
        if self.fail_fast:
            raise RemError(f"cell {cell.label()} failed (fail-fast):\n{error}")

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failed=len(self.summary.failed), refresh=False)


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
    todo: list[Cell], run_dir: Path, sink: _Sink, *, device="auto", data_dir=None, progress: bool = False, **_
) -> None:
    ready: set[str] = set()
    broken: dict[str, str] = {}  # starting models whose pretraining failed: their cells fail at once
    for cell in todo:
        spec = StartSpec.of(cell)
        if spec.key in broken:
            sink.fail(cell, broken[spec.key])
            continue
        if spec.key not in ready:
            _describe(sink, f"pretrain {spec.label()}")
            try:
                ensure_start(spec, run_dir, device=device, data_dir=data_dir, store=sink.store)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception:
                broken[spec.key] = traceback.format_exc()
                sink.fail(cell, broken[spec.key])
                continue
            ready.add(spec.key)
        _describe(sink, cell.label())
        try:
            rec = run_cell(cell, run_dir, device=device, data_dir=data_dir, progress=False)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            sink.fail(cell, traceback.format_exc())
            continue
        sink.ok(rec)


def _describe(sink: _Sink, text: str) -> None:
    if sink.bar is not None:
        sink.bar.set_description_str(text)


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
                write_bytes_atomic(what.path(run_dir), data)
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
    with ResultStore.in_run_dir(run_dir) as store:
        store.set_meta("last_grid", dumps(grid.as_dict()))
        ingest_incoming(run_dir, store)
        stored = store.done_keys()
        todo = [c for c in cells if c.key not in stored]
        summary = RunSummary(run_dir=run_dir, total=len(cells), skipped=len(cells) - len(todo))
        if limit is not None:
            todo = todo[:limit]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(cells),
                initial=summary.skipped,
                unit="cell",
                dynamic_ncols=True,
                desc=f"bench ({executor})",
            )
        try:
            _RUNNERS[executor](
                todo,
                run_dir,
                _Sink(store, summary, fail_fast, bar),
                device=device,
                data_dir=data_dir,
                progress=progress,
                **executor_kw,
            )
        finally:
            if bar is not None:
                bar.close()
        summary.wall_s = time.time() - t0
        return summary
