"""One grid cell, computed: starting model → D_f at the cell's rate → the method → metrics → a record.

The starting model of (profile, pretraining type, task, seed) is pretrained **once** and shared by
every method and rate of that task: it is cached in the run folder as
``models/<task>-<ptype>-seed<seed>-<hash8>.safetensors`` (written atomically by
:func:`~rem.checkpoint.save_checkpoint`; ``hash8`` is the start of :attr:`Cell.start_key`, so two grids
with different data or pretraining settings in one run folder never mix their models). Its header
carries the same metadata as ``rem train`` writes, so ``rem unlearn --checkpoint`` accepts it too. The
pretraining record (metrics of the starting model, wall time, peak memory) goes to the store's
``models`` table; the ``none`` method's cells evaluate the starting model as deployed at each rate.

Executors that run cells on other machines pass the checkpoint's bytes (``start=``) instead of a
path, so no shared file system is needed (Ray); the slurm executor uses the run folder, which
submitit needs to be shared anyway.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rem.bench.store import ResultStore
from rem.errors import CheckpointError
from rem.paths import write_atomic
from rem.profiles import Profile
from rem.run.record import dumps
from rem.run.spec import Cell, start_key

MODELS_DIR = "models"
INCOMING_DIR = "incoming"  # records written by workers that cannot reach the store (slurm)


@dataclass(frozen=True)
class StartSpec:
    """What a starting model is: the profile's data and pretraining recipe, a task, pretraining type, seed."""

    profile: Profile
    pretrain_type: str
    task: str
    seed: int

    @classmethod
    def of(cls, cell: Cell) -> StartSpec:
        return cls(cell.profile, cell.pretrain_type, cell.task, cell.seed)

    @cached_property
    def key(self) -> str:
        return start_key(self.profile, self.pretrain_type, self.task, self.seed)

    def filename(self) -> str:
        return f"{self.task}-{self.pretrain_type}-seed{self.seed}-{self.key[:8]}.safetensors"

    def path(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / MODELS_DIR / self.filename()

    def label(self) -> str:
        return f"{self.task} {self.pretrain_type} seed {self.seed}"


def start_specs(cells: list[Cell]) -> list[StartSpec]:
    """The distinct starting models ``cells`` need, in first-use order."""
    seen: dict[str, StartSpec] = {}
    for c in cells:
        s = StartSpec.of(c)
        seen.setdefault(s.key, s)
    return list(seen.values())


# --- data and tasks (cached per process: every cell of a task reuses them) -------------------------

_DATA_CACHE: dict[str, object] = {}


def _data(profile: Profile, data_dir):
    from rem.profiles import profile_data

    p = profile.as_dict()
    key = json.dumps(
        {k: p[k] for k in ("dataset", "n_train", "n_test", "image_size", "generated_kw")} | {"data_dir": str(data_dir)},
        sort_keys=True,
        default=str,
    )
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= 2:
            _DATA_CACHE.clear()
        _DATA_CACHE[key] = profile_data(profile, data_dir)
    return _DATA_CACHE[key]


def make_cell_task(spec: StartSpec, data_dir=None):
    from rem.data.tasks import make_task

    data = _data(spec.profile, data_dir)
    return make_task(data, spec.profile.task_config(spec.task, spec.seed))


# --- starting models ------------------------------------------------------------------------------


def pretrain_start(spec: StartSpec, *, device="auto", data_dir=None, progress: bool = False, on_step=None):
    """Pretrain the starting model of ``spec``; returns (model, task, record).

    ``on_step(done, total, loss)`` is called after every pretraining step (:mod:`rem.progress`)."""
    from rem.metrics import evaluate
    from rem.runtime import environment, measure, pick_device
    from rem.train import pretrain

    dev = pick_device(device)
    task = make_cell_task(spec, data_dir)
    with measure(dev) as m:
        model = pretrain(
            task,
            spec.profile.arch_spec(task.data.num_classes),
            spec.pretrain_type,
            spec.profile.pretrain,
            device=dev,
            seed=spec.seed,
            progress=progress,
            on_step=on_step,
        )
    metrics = evaluate(model, task, device=dev)
    record = {
        "key": spec.key,
        "path": f"{MODELS_DIR}/{spec.filename()}",
        "profile": spec.profile.as_dict(),
        "task": task.config.as_dict(),
        "pretrain_type": spec.pretrain_type,
        "seed": spec.seed,
        "split_hash": task.split_hash(),
        "metrics": metrics,
        "params": metrics["params"],
        "wall_s": m.wall_s,
        "peak_mem_mb": m.peak_mem_mb,
        "mem_kind": m.mem_kind,
        "env": environment(dev),
        "finished_at": time.time(),
    }
    return model, task, record


def _checkpoint_meta(record: dict) -> dict:
    # the keys `rem train` writes (so `rem unlearn` accepts the file), plus the whole pretraining record
    return {
        "profile": record["profile"],
        "task": record["task"],
        "pretrain_type": record["pretrain_type"],
        "seed": record["seed"],
        "split_hash": record["split_hash"],
        "metrics": record["metrics"],
        "start_key": record["key"],
        "pretrain_record": json.loads(dumps(record)),
    }


def ensure_start(
    spec: StartSpec,
    run_dir: str | Path,
    *,
    device="auto",
    data_dir=None,
    store: ResultStore | None = None,
    progress: bool = False,
    on_step=None,
) -> dict:
    """The pretraining record of ``spec``'s starting model, pretraining and caching it first if missing.

    A cached file that cannot be used (damaged, or not this model) is pretrained again, and a line on
    stderr says so. Two processes pretraining the same model at once would both write the same file
    atomically (wasting time, never corrupting it): the local executor claims the model in the store
    first (:meth:`ResultStore.claim`), the others run this before fanning out.
    """
    from rem.checkpoint import load_checkpoint, save_checkpoint
    from rem.progress import say

    path = spec.path(run_dir)
    if path.is_file():
        try:
            _, meta = load_checkpoint(path)
            rec = meta.get("pretrain_record")
            if rec and rec.get("key") == spec.key:
                if store is not None and store.model(spec.key) is None:
                    store.put_model(rec)
                return rec
            why = "it holds another model than its name says"
        except CheckpointError as e:  # damaged (e.g. a disk error)
            why = str(e)
        say(f"rem: the cached starting model {path} cannot be used ({why}); pretraining it again")
    model, _, rec = pretrain_start(spec, device=device, data_dir=data_dir, progress=progress, on_step=on_step)
    save_checkpoint(model, path, _checkpoint_meta(rec), overwrite=True)  # a damaged cache is replaced
    if store is not None:
        store.put_model(rec)
    return rec


def pretrain_start_bytes(spec: StartSpec, *, device="auto", data_dir=None) -> tuple[bytes, dict]:
    """Pretrain and return (checkpoint file bytes, record): for workers without the run folder (Ray)."""
    from rem.checkpoint import checkpoint_bytes

    model, _, rec = pretrain_start(spec, device=device, data_dir=data_dir)
    return checkpoint_bytes(model, _checkpoint_meta(rec)), rec


def _start_file(spec: StartSpec, run_dir, start: bytes | None) -> Path:
    if start is None:
        if run_dir is None:
            raise CheckpointError(f"no starting model for {spec.label()}: give run_dir or start bytes")
        return spec.path(run_dir)
    # a per-worker cache of the bytes sent by the driver (written once per process and model)
    p = Path(tempfile.gettempdir()) / f"rem-starts-{os.getuid()}" / spec.filename()
    if not p.is_file() or p.stat().st_size != len(start):
        write_atomic(p, start)
    return p


def load_start(spec: StartSpec, path: str | Path, *, device="cpu", data_dir=None):
    """(model, meta, task) of the cached starting model of ``spec`` at ``path``, read only: never
    pretrained here. A missing file, or one that is not this model or was trained on another split,
    raises :class:`~rem.errors.CheckpointError` saying so."""
    from rem.checkpoint import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no starting model for {spec.label()} at {path}: pretrain it first with `rem bench --profile "
            f"{spec.profile.name} --run-dir <run folder> --methods none --tasks {spec.task} --seeds {spec.seed}`"
        )
    model, meta = load_checkpoint(path, device)
    key = meta.get("start_key") or (meta.get("pretrain_record") or {}).get("key")
    if key is not None and key != spec.key:
        raise CheckpointError(f"{path} holds another starting model than {spec.label()} of this profile")
    task = make_cell_task(spec, data_dir)
    if meta.get("split_hash") != task.split_hash():
        raise CheckpointError(
            f"starting model {spec.filename()} was trained on another split "
            f"({meta.get('split_hash')} vs {task.split_hash()}): has the data changed?"
        )
    return model, meta, task


# --- cells ----------------------------------------------------------------------------------------


def run_cell(
    cell: Cell,
    run_dir: str | Path | None = None,
    *,
    device="auto",
    data_dir=None,
    progress: bool = False,
    start: bytes | None = None,
    on_step=None,
) -> dict:
    """Compute one cell and return its record (nothing is written to the store here).

    The starting model comes from ``start`` (checkpoint bytes) or the run folder, where it is
    pretrained first if missing. The record holds the SPEC §2 metrics, the full resolved config, the
    split hash, wall time and peak memory of the unlearning, the environment, the parameter count and
    the method's history. ``on_step(done, total, loss)`` is called after each of the method's steps.
    """
    from rem.run import unlearn_and_record
    from rem.runtime import pick_device

    dev = pick_device(device)
    spec = StartSpec.of(cell)
    if start is None and run_dir is not None:
        ensure_start(spec, run_dir, device=dev, data_dir=data_dir, progress=progress)
    model, meta, task = load_start(spec, _start_file(spec, run_dir, start), device=dev, data_dir=data_dir)
    _, record = unlearn_and_record(
        cell, model, task, task.forget_idx(cell.rate), start_meta=meta, device=dev, progress=progress, on_step=on_step
    )
    return record


def run_cell_to_file(cell: Cell, run_dir: str | Path, *, device="auto", data_dir=None) -> dict:
    """:func:`run_cell`, then write the record to ``<run_dir>/incoming/<key>.json`` atomically.

    For workers that cannot write to the store themselves (slurm jobs): the driver, or the next run,
    moves these files into the store (:func:`ingest_incoming`), so a record survives a dead driver.
    """
    rec = run_cell(cell, run_dir, device=device, data_dir=data_dir)
    write_atomic(Path(run_dir) / INCOMING_DIR / f"{cell.key}.json", dumps(rec).encode())
    return rec


def ingest_incoming(run_dir: str | Path, store: ResultStore) -> int:
    """Move records left in ``<run_dir>/incoming`` into the store; returns how many were new."""
    d = Path(run_dir) / INCOMING_DIR
    n = 0
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue  # not a finished write (cannot happen with atomic writes); leave it
        n += store.put(rec)
        p.unlink(missing_ok=True)
    return n
