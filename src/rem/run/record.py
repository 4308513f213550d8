"""One run and its record: :func:`unlearn_and_record` runs a cell's method on a starting model, timed and
measured, then evaluated, and returns the :class:`~rem.methods.Unlearned` result and the cell's record (SPEC §2
metrics, full resolved config, split hash, wall time, peak memory, environment, history), as plain JSON
(:func:`dumps`: the one encoding of records, which the results store writes too).

``rem unlearn``, ``rem bench`` (every executor), ``rem demo`` and ``benchmarks/`` all go through it, so the
same cell is the same computation and the same record whichever way it was started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from rem.data.tasks import REGULARITY, Task
from rem.run.spec import Cell


def _jsonable(o):
    """JSON fallback for tensors, numpy values, paths and dataclasses found in histories and configs."""
    import dataclasses

    if hasattr(o, "tolist"):  # torch.Tensor, numpy arrays and scalars
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


def dumps(obj) -> str:
    """``obj`` (a record) as JSON: keys sorted, tensors, numpy values, paths and dataclasses as plain values."""
    return json.dumps(obj, default=_jsonable, sort_keys=True)


def unlearn_and_record(
    cell: Cell,
    model,
    task: Task,
    forget_idx: torch.Tensor,
    *,
    start_meta: dict,
    device: torch.device,
    progress: bool = False,
    on_step=None,
):
    """Run ``cell``'s method (:class:`~rem.run.spec.Cell`) on ``model``; returns (Unlearned, record).

    ``start_meta`` is the starting checkpoint's metadata (its metrics go into the record). The record holds
    only plain JSON types (tensors in histories become lists); nothing is written here.
    """
    from rem.methods import Context, get_method
    from rem.metrics import evaluate
    from rem.runtime import environment, measure

    method = get_method(cell.method, **cell.overrides)
    ctx = Context(
        device=device,
        pretrain_type=cell.pretrain_type,
        pretrain_recipe=cell.profile.pretrain,
        progress=progress,
        on_step=on_step,
    )
    with measure(device) as m:
        result = method.unlearn(model, task, forget_idx, ctx)
    metrics = evaluate(result.model, task, forget_idx, device=device)
    relearn = _relearn(cell, result.model, task, metrics, device)
    record = {
        "key": cell.key,
        "method": cell.method,
        "pretrain_type": cell.pretrain_type,
        "task": cell.task,
        "regularity": REGULARITY[cell.task],
        "rate": cell.rate,
        "seed": cell.seed,
        "metrics": metrics,
        "params": metrics["params"],
        "n_forget": len(forget_idx),
        "n_corrupt": len(task.corrupt_idx),
        "split_hash": task.split_hash(forget_idx),
        "start_key": cell.start_key,
        "start_metrics": start_meta.get("metrics"),
        "config": cell.config(),
        "method_config": method.config.for_arch(cell.profile.arch).as_dict(),
        "wall_s": m.wall_s,
        "peak_mem_mb": m.peak_mem_mb,
        "mem_kind": m.mem_kind,
        "env": environment(device),
        "history": result.history,
        "finished_at": time.time(),
        **relearn,
    }
    return result, json.loads(dumps(record))


def _relearn(cell, model, task, metrics: dict, device) -> dict:
    """The relearning check (:mod:`rem.run.relearn`) when the cell asks for it: its metrics go into ``metrics``,
    its settings and sample counts into the record's ``relearn`` (nothing when off)."""
    ks = getattr(cell, "relearn", ())
    if not ks:
        return {}
    from rem.run.relearn import relearn_metrics

    extra, details = relearn_metrics(model, task, ks, device=device, seed=cell.seed)
    metrics.update(extra)
    return {"relearn": details}
