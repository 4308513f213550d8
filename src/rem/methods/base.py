"""One interface for every unlearning method, its config, and the registry (the pieces methods share are in
:mod:`rem.methods.common`).

A method is a class with a frozen, self-validating config dataclass (paper defaults) and one call::

    method = get_method("rem", steps=100)             # overrides go into the config
    result = method.unlearn(model, task, forget_idx, ctx)
    result.model, result.history                       # the healed model, per-round records of the run

``unlearn`` never modifies the model it is given; the model it returns has the original partition
removed (deployable in ``drop`` mode, the same parameter count as the input's kept part).

A method owns its settings (each config field carries its help text, PEFT's ``metadata={"help": ...}``;
``rem methods --settings NAME`` prints them), its display label in reports (:meth:`Method.label`) and
its place in listings (:attr:`Method.order`): the grid, the CLIs and the report know methods only by
name and ``--set method.key=value``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from rem.data.tasks import Task
from rem.errors import ConfigError
from rem.models import CapacityNet
from rem.settings import coerce_fields
from rem.train import Recipe

_UNSET = object()


def setting(default, help: str, *, keyed_when_set: bool = False, absent=_UNSET, neutral: bool = False):
    """A config field with its help text (PEFT's ``field(default=..., metadata={"help": ...})``).

    ``keyed_when_set``: a setting added after cells were stored; at the value those cells ran at
    (``absent``, by default the setting's default) it is left out of the record's settings and of the cell
    key (:meth:`MethodConfig.key_dict`), so those cells keep their keys. ``absent`` differs from the default
    when the default is resolved later (e.g. ``"auto"``, per architecture: :meth:`MethodConfig.for_arch`).

    ``neutral``: a setting that does not change the result (what is only recorded for analysis): the key
    and the record's settings carry it at its default whatever it is set to, so cells computed with and
    without it are one cell (a test checks that the model does not change).
    """
    meta = {
        "help": help,
        "keyed_when_set": keyed_when_set,
        "absent": default if absent is _UNSET else absent,
        "neutral": neutral,
    }
    return field(default=default, metadata=meta)


def absent_value(f: dataclasses.Field):
    """The value a record without the ``keyed_when_set`` setting ``f`` ran at."""
    return f.metadata.get("absent", f.default)


def settings_help(config_cls: type) -> list[tuple[str, str, object, str]]:
    """(name, type, default, help) of every field of a method's config dataclass, in declaration order."""
    from rem.settings import field_types, type_name

    types_ = field_types(config_cls)
    return [
        (f.name, type_name(types_[f.name]), f.default, f.metadata.get("help", ""))
        for f in dataclasses.fields(config_cls)
    ]


@dataclass(frozen=True)
class MethodConfig:
    """Settings every method shares (SPEC §5: SGD momentum 0.9, wd 5e-4, lr 0.005, REM's step budget)."""

    steps: int = setting(980, "budget of training steps on D_r / D_tr")
    lr: float = setting(0.005, "learning rate of unlearning (constant)")
    batch_size: int = setting(512, "batch size of unlearning")
    optimizer: str = setting("sgd", "optimiser: sgd or adam")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(5e-4, "weight decay")
    gamma: float = setting(0.2, "forget-accuracy threshold γ (a share in [0, 1], as every accuracy in rem)")
    max_epochs: int = setting(100, "cap of forget-set epochs per removal phase")
    seed: int = setting(0, "seed of the method's batches, masks and initialisations")

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"{type(self).__name__}: steps must be >= 0, got {self.steps}")
        if self.lr <= 0 or self.batch_size < 1:
            raise ConfigError(f"{type(self).__name__}: lr and batch_size must be positive")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"{type(self).__name__}: gamma is a share in [0, 1], got {self.gamma}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"{type(self).__name__}: optimizer must be sgd or adam")
        self.validate()

    def validate(self) -> None:
        """Method-specific checks (override)."""

    def recipe(self, steps: int | None = None) -> Recipe:
        """The constant-learning-rate recipe of unlearning (no warm-up, no decay)."""
        return Recipe(
            steps=max(1, self.steps if steps is None else steps),
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            warmup=0.0,
            horizon=0.0,
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def for_arch(self, arch: str) -> MethodConfig:
        """This config with its per-architecture (``"auto"``) settings resolved for ``arch`` (``"resnet9"``,
        ``"vit"``, or ``""`` for a user's model); a method without such settings returns itself."""
        return self

    def key_dict(self) -> dict:
        """:meth:`as_dict` without the ``keyed_when_set`` settings at their :func:`absent_value` and with the
        ``neutral`` ones at their defaults: what a cell's key and record carry (a record without such a
        setting ran at that value)."""
        d = self.as_dict()
        for f in dataclasses.fields(self):
            if f.metadata.get("neutral"):
                d[f.name] = f.default
            if f.metadata.get("keyed_when_set") and d.get(f.name) == absent_value(f):
                d.pop(f.name)
        return d


class Unlearned(NamedTuple):
    """What :meth:`Method.unlearn` returns: the healed model and the run's records (per round or phase)."""

    model: CapacityNet
    history: list[dict]


@dataclass
class Context:
    """What a method may need beyond the model and the data: device, pretraining info, progress."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    pretrain_type: str = "capacity-0.5"
    pretrain_recipe: Recipe | None = None  # for `retrain` / `eu-k`
    progress: bool = False  # draw a bar of the method's steps (when stderr is a terminal)
    on_step: Callable[[int, int, object], None] | None = None  # (done, total, loss) after every step

    def step(self, done: int, total: int, loss=None) -> None:
        """Report that ``done`` of ``total`` steps are finished (``loss``: a float or 0-d tensor, or None)."""
        if self.on_step is not None:
            self.on_step(done, total, loss)


class Method:
    """Base class: subclasses set ``name``, ``config_cls``, ``summary``, ``uses``, ``order`` and implement
    ``_unlearn``; :meth:`label` names a run of the method in reports. ``family`` says what kind of method it
    is, for reports that set kinds side by side: ``"unlearning"``, ``"defence"`` (a post-training backdoor
    defence, :class:`rem.methods.defences.common.Defence`) or ``"reference"`` (``none``, the starting model)."""

    name: str = ""
    config_cls: type[MethodConfig] = MethodConfig
    summary: str = ""
    uses: str = ""  # which data it touches: "D_f", "D_r", "D_f, D_r", "D_tr" or "—"
    order: int = 1000  # place in listings, reports and default grids (then by name)
    family: str = "unlearning"  # "unlearning", "defence", "reference", "oracle" or "ablation"

    @classmethod
    def label(cls, config: dict) -> str:
        """How reports name a run of this method with the resolved settings ``config`` (a dict)."""
        return cls.name

    def __init__(self, config: MethodConfig | None = None, **overrides) -> None:
        cfg = config or self.config_cls()
        if overrides:  # each value checked and parsed by its field's declared type (rem.settings)
            cfg = dataclasses.replace(cfg, **coerce_fields(type(cfg), overrides, f"method {self.name!r}"))
        self.config = cfg

    def unlearn(
        self, model: CapacityNet, task: Task, forget_idx: torch.Tensor, ctx: Context | None = None
    ) -> Unlearned:
        from rem.progress import StepBar, bars_enabled, chain

        ctx = ctx or Context()
        forget_idx = torch.as_tensor(forget_idx, dtype=torch.int64).cpu()
        model = copy.deepcopy(model).to(ctx.device)
        history: list[dict] = []
        with StepBar(self.name, bars_enabled(ctx.progress)) as bar:
            ctx = dataclasses.replace(ctx, on_step=chain(ctx.on_step, bar))
            out = self._unlearn(model, task, forget_idx, ctx, history)
        return Unlearned(out.eval(), history)

    def _unlearn(
        self, model: CapacityNet, task: Task, forget_idx: torch.Tensor, ctx: Context, history: list[dict]
    ) -> CapacityNet:
        raise NotImplementedError


REGISTRY: dict[str, type[Method]] = {}


def add_to_registry(registry: dict, cls: type, kind: str) -> type:
    """Add ``cls`` to ``registry`` under its ``name``; a nameless class or a second ``kind`` of the same name
    is refused (methods here, discovery scores in :mod:`rem.discovery.base`)."""
    if not cls.name:
        raise ConfigError(f"{cls.__name__} has no name")
    if cls.name in registry:
        raise ConfigError(f"a {kind} named {cls.name!r} is already registered ({registry[cls.name].__name__})")
    registry[cls.name] = cls
    return cls


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry; a second method of the same name is refused."""
    return add_to_registry(REGISTRY, cls, "method")


def method_names() -> list[str]:
    """Every registered method, by :attr:`Method.order`, then by name."""
    import rem.methods  # noqa: F401  (importing the package registers every method)

    return sorted(REGISTRY, key=lambda n: (REGISTRY[n].order, n))


def method_label(record: dict) -> str:
    """A record's method as reports name it (:meth:`Method.label`; an unregistered one by its name)."""
    import rem.methods  # noqa: F401

    cls = REGISTRY.get(record.get("method"))
    return cls.label(record.get("method_config") or {}) if cls is not None else record.get("method")


def method_family(name: str | None) -> str | None:
    """The :attr:`Method.family` of the method registered as ``name`` (None for a name not registered)."""
    import rem.methods  # noqa: F401

    cls = REGISTRY.get(name)
    return cls.family if cls is not None else None


def get_method(name: str, config: MethodConfig | None = None, **overrides) -> Method:
    import rem.methods  # noqa: F401  (importing the package registers every method)

    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](config, **overrides)
