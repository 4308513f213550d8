"""The ``ray`` executor: each cell a Ray task (see :mod:`rem.bench.executors`); ``pip install 'rem[ray]'``."""

from __future__ import annotations

import os
import traceback

from rem.bench.cell import StartSpec, ensure_start, pretrain_start_bytes, run_cell, start_specs
from rem.bench.executors.plan import Plan, set_threads
from rem.errors import ConfigError, RemError
from rem.paths import write_atomic
from rem.run.spec import Cell


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ConfigError("the ray executor needs Ray: pip install 'rem[ray]'") from e
    return ray


def _ray_pretrain(spec: StartSpec, device, data_dir, threads):
    set_threads(threads)
    return pretrain_start_bytes(spec, device=device, data_dir=data_dir)


def _ray_cell(cell: Cell, start: bytes, device, data_dir, threads):
    set_threads(threads)
    return run_cell(cell, None, device=device, data_dir=data_dir, start=start)


def _gpus(ray, device, gpus_per_cell):
    """(device, GPUs per cell): a GPU per cell for CUDA, or on "auto" if the cluster has GPUs; without a
    reserved GPU, "auto" means the CPU (never a GPU that another task holds)."""
    if gpus_per_cell is None:
        wants = str(device).startswith("cuda") or (
            device in (None, "auto") and ray.cluster_resources().get("GPU", 0) > 0
        )
        gpus_per_cell = 1 if wants else 0
    if not gpus_per_cell and device in (None, "auto"):
        device = "cpu"
    return device, gpus_per_cell


def run_ray(
    plan: Plan, *, ray_address: str | None = None, cpus_per_cell: float = 1, gpus_per_cell: float | None = None
) -> None:
    todo, run_dir, sink, device, data_dir = plan.todo, plan.run_dir, plan.sink, plan.device, plan.data_dir
    ray = _import_ray()
    own = not ray.is_initialized()
    if own:
        address = ray_address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        device, gpus_per_cell = _gpus(ray, device, gpus_per_cell)
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
