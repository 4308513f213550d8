"""One place that builds a run (nanoGPT's ``train.py`` idea): a method's settings, then the run and its record.

``rem unlearn``, ``rem bench`` (every executor), ``rem demo`` and ``benchmarks/`` all go through these two
functions, so the same cell is the same computation and the same record whichever way it was started:

- :func:`method_settings`: the profile's unlearning recipe and the seed, for the fields the method has,
  then the user's ``--set`` settings (``{"*": {...}, "<method>": {...}}``);
- :func:`unlearn_and_record`: the method on a starting model, timed and measured, then evaluated; returns
  the :class:`~rem.methods.Unlearned` result and the cell's record (SPEC §2 metrics, full resolved config,
  split hash, wall time, peak memory, environment, history).

``--expand-ratio`` (``rem unlearn``, ``rem bench``, a grid file's ``expand_ratio``) and the report's
``--expand-ratio`` filter are shortcuts of ``--set expand_ratio=R`` for the methods that have the setting
(REM and its variants); :func:`shortcut_settings` is where they turn into one.
"""

from __future__ import annotations

import dataclasses
import json
import time

import torch

from rem.data.tasks import REGULARITY, Task
from rem.profiles import Profile

#: Options kept as documented shortcuts of ``--set KEY=VALUE`` for every method that has the setting.
SHORTCUTS = ("expand_ratio",)


def shortcut_settings(**values) -> dict:
    """The shortcut options given (``None`` = not given) as settings: ``{"expand_ratio": 0.25}``."""
    unknown = sorted(set(values) - set(SHORTCUTS))
    if unknown:
        raise TypeError(f"not a shortcut: {unknown}")
    out = {k: v for k, v in values.items() if v is not None}
    if "expand_ratio" in out:
        out["expand_ratio"] = float(out["expand_ratio"])
    return out


def config_fields(method: str) -> set[str]:
    """The setting names of ``method``'s config."""
    from rem.methods import REGISTRY, get_method

    get_method(method)  # refuses an unknown name
    return {f.name for f in dataclasses.fields(REGISTRY[method].config_cls)}


def method_settings(
    method: str, profile: Profile, seed: int, sets: dict | None = None, shortcuts: dict | None = None
) -> dict:
    """The settings ``method`` runs with: the profile's unlearning recipe (steps, lr, batch size, optimiser,
    weight decay, momentum) and ``seed``, then ``shortcuts`` and ``sets["*"]`` — each only where the method
    has the setting — then ``sets[method]`` (which must exist: :func:`rem.get_method` checks)."""
    sets = sets or {}
    fields = config_fields(method)
    u = profile.unlearn
    base = {
        "steps": u.steps,
        "lr": u.lr,
        "batch_size": u.batch_size,
        "optimizer": u.optimizer,
        "weight_decay": u.weight_decay,
        "momentum": u.momentum,
        "seed": seed,
        **(shortcuts or {}),
        **sets.get("*", {}),
    }
    out = {k: v for k, v in base.items() if k in fields}
    out.update(sets.get(method, {}))
    return out


def unlearn_and_record(
    cell,
    model,
    task: Task,
    forget_idx: torch.Tensor,
    *,
    start_meta: dict,
    device: torch.device,
    progress: bool = False,
    on_step=None,
):
    """Run ``cell``'s method (:class:`~rem.bench.grid.Cell`) on ``model``; returns (Unlearned, record).

    ``start_meta`` is the starting checkpoint's metadata (its metrics go into the record). The record holds
    only plain JSON types (tensors in histories become lists); nothing is written here.
    """
    from rem.bench.store import dumps
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


def _relearn(cell, model, task: Task, metrics: dict, device) -> dict:
    """The relearning check (:mod:`rem.relearn`) when the cell asks for it: its metrics go into ``metrics``,
    its settings and sample counts into the record's ``relearn`` (nothing when off)."""
    ks = getattr(cell, "relearn", ())
    if not ks:
        return {}
    from rem.relearn import relearn_metrics

    extra, details = relearn_metrics(model, task, ks, device=device, seed=cell.seed)
    metrics.update(extra)
    return {"relearn": details}
