"""The run spec: what one run is (:class:`Cell`), its key, and the settings a method runs with.

A cell is one computation: a method run on one starting model, task, discovery rate and seed, with the
*full resolved* configuration (the profile with its overrides applied, the task's config, the method's
resolved settings). :attr:`Cell.key`, a hash of that configuration, names exactly one computation: the
results store is keyed by it, and :attr:`Cell.start_key` names the starting model. Both are pinned by
tests (``tests/test_run.py``): stores written earlier must find their cells again.

A method's settings come from :func:`method_settings`: the profile's unlearning recipe and the seed, for
the fields the method has, then the user's ``--set`` settings (``{"*": {...}, "<method>": {...}}``).
``--expand-ratio`` (``rem unlearn``, ``rem bench``, a grid file's ``expand_ratio``) and the report's
``--expand-ratio`` filter are shortcuts of ``--set expand_ratio=R`` for the methods that have the setting
(REM and its variants); :func:`shortcut_settings` is where they turn into one.

``rem unlearn`` builds its cell with :func:`checkpoint_cell`, ``rem bench`` with
:meth:`rem.bench.grid.Grid.cells`: the same cell is the same key and the same computation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

from rem.data.tasks import TaskConfig
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


#: The discovery rate whose cells (nearest it, first seed) the report's redirection curve draws.
CURVE_RATE = 0.5


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


#: Profile fields that describe the grid's shape (which cells exist), not how one cell is computed: they are
#: left out of a cell's configuration and key, so a grid re-run with other rates, seeds or pretraining types
#: finds the cells it shares with earlier runs.
GRID_SHAPE_FIELDS = ("rates", "seeds", "pretrain_types", "relearn")  # relearn: a cell's own, when on (Cell.relearn)


#: Version of the models' layout, in every cell's configuration and starting-model key: a store or model
#: cache written before a change of what the architectures compute is never reused. 2: ResNet-9's residual
#: hidden layers at full width, never gated (SPEC §3 as corrected).
MODEL_LAYOUT = 2


def cell_profile_dict(profile_dict: dict) -> dict:
    """A profile's settings as they enter a cell's configuration: without :data:`GRID_SHAPE_FIELDS`."""
    return {k: v for k, v in profile_dict.items() if k not in GRID_SHAPE_FIELDS}


@dataclass(frozen=True)
class Cell:
    """One computation of the grid: a method run on one starting model, task, discovery rate and seed."""

    method: str
    pretrain_type: str
    task: str
    rate: float
    seed: int
    profile: Profile  # resolved (overrides applied)
    method_overrides: tuple[tuple[str, object], ...] = ()  # sorted (name, value) pairs given to get_method
    relearn: tuple[int, ...] = ()  # the relearning check's sample counts (rem.run.relearn); () = off

    @property
    def overrides(self) -> dict:
        return dict(self.method_overrides)

    def task_config(self) -> TaskConfig:
        return self.profile.task_config(self.task, self.seed)

    def method_config(self) -> dict:
        """The method's resolved settings (:meth:`~rem.methods.base.MethodConfig.key_dict`: its config for the
        profile's architecture (:meth:`~rem.methods.base.MethodConfig.for_arch`) as a dict, less the
        ``keyed_when_set`` settings at the value cells stored before them ran at)."""
        from rem.methods import get_method

        return get_method(self.method, **self.overrides).config.for_arch(self.profile.arch).key_dict()

    def config(self) -> dict:
        """The full resolved configuration; :attr:`key` is its hash."""
        return {
            "method": self.method,
            "pretrain_type": self.pretrain_type,
            "task": self.task_config().as_dict(),
            "rate": self.rate,
            "seed": self.seed,
            "profile": cell_profile_dict(self.profile.as_dict()),
            "method_config": self.method_config(),
            "model_layout": MODEL_LAYOUT,
            **self._relearn_config(),
        }

    def _relearn_config(self) -> dict:
        """The relearning check's settings, only when on: cells stored without it keep their keys."""
        from rem.run.relearn import relearn_settings

        return {"relearn": relearn_settings(self.relearn)} if self.relearn else {}

    @cached_property
    def key(self) -> str:
        return _hash(self.config())

    @cached_property
    def start_key(self) -> str:
        """Hash of what determines the starting model (shared by every method and rate of a task)."""
        return start_key(self.profile, self.pretrain_type, self.task, self.seed)

    def label(self) -> str:
        return f"{self.method} {self.pretrain_type} {self.task} r={self.rate:g} s={self.seed}"


def start_key(profile: Profile, pretrain_type: str, task: str, seed: int) -> str:
    """Hash of the settings a starting model depends on (not the unlearning recipe, rates or seeds list)."""
    p = profile.as_dict()
    for k in ("name", "unlearn", *GRID_SHAPE_FIELDS):
        p.pop(k, None)
    tc = profile.task_config(task, seed).as_dict()
    return _hash({"profile": p, "task": tc, "pretrain_type": pretrain_type, "seed": seed, "model_layout": MODEL_LAYOUT})


def checkpoint_cell(
    meta: dict, profile: Profile, task, method: str, rate: float | None, sets: dict, shortcuts: dict, steps=None
) -> Cell:
    """The :class:`Cell` that ``rem unlearn`` runs on a checkpoint (metadata ``meta``, its ``profile`` and
    ``task``): the same one (same key, same settings from :func:`method_settings`) that ``rem bench`` would
    run at this rate; ``steps`` (as ``rem bench --steps``) replaces the profile's unlearning budget."""
    if steps is not None:
        profile = dataclasses.replace(profile, unlearn=dataclasses.replace(profile.unlearn, steps=steps))
    seed = int(meta.get("seed", task.config.seed))
    ptype = meta.get("pretrain_type") or "capacity-0.5"
    settings = method_settings(method, profile, seed, sets, shortcuts)
    return Cell(
        method, ptype, task.kind, None if rate is None else float(rate), seed, profile, tuple(sorted(settings.items()))
    )
