"""The ``slurm`` executor: a submitit job array (see :mod:`rem.bench.executors`); ``pip install 'rem[slurm]'``."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from rem.bench.cell import StartSpec, ensure_start, make_cell_task, run_cell_to_file, start_specs
from rem.bench.executors.plan import Plan, set_threads
from rem.errors import ConfigError, RemError
from rem.run.spec import Cell


def _import_submitit():
    try:
        import submitit
    except ImportError as e:
        raise ConfigError("the slurm executor needs submitit: pip install 'rem[slurm]'") from e
    return submitit


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
    set_threads(threads)
    return ensure_start(spec, run_dir, device=device, data_dir=data_dir)


def _slurm_cell(cell: Cell, run_dir, device, data_dir, threads) -> dict:
    set_threads(threads)
    return run_cell_to_file(cell, run_dir, device=device, data_dir=data_dir)


def _wait_jobs(jobs: dict, on_done: Callable, poll_s: float) -> None:
    while jobs:
        for job in [j for j in jobs if j.done()]:
            on_done(job, jobs.pop(job))
        if jobs:
            time.sleep(poll_s)


def run_slurm(plan: Plan, *, cluster: str | None = None, slurm: dict | None = None, poll_s: float = 2.0) -> None:
    todo, run_dir, sink, device, data_dir = plan.todo, plan.run_dir, plan.sink, plan.device, plan.data_dir
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
