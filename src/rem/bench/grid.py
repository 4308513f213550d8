"""The benchmark grid: a profile plus overrides, expanded into cells (SPEC §6).

A :class:`Grid` names a profile (``smoke``, ``cpu``, ``paper``, ``paper-vit``) and optionally overrides
what to run. It expands into :class:`Cell` s, one per

    method × pretraining type × task × discovery rate × seed

and every cell carries its *full resolved* configuration (the profile with its overrides applied, the
task's config, the method's resolved settings), so a cell's :attr:`Cell.key` — a hash of that
configuration — names exactly one computation. The results store is keyed by it: rerunning a grid
skips the cells whose key already has a record, and changing any setting makes new keys.

**Default methods: every registered method** (``rem methods`` lists them), in their own order
(:func:`rem.methods.method_names`). Defaults for everything else come from the profile. A method's
settings come from :func:`rem.run.method_settings`, the same function ``rem unlearn`` uses: the
profile's unlearning recipe and the cell's seed, then ``settings`` — any method field, for all methods
that have it (``{"*": {"beta": 0.5}}``) or for one (``{"scrub": {"alpha": 0.1}}``). ``expand_ratio``
is the documented shortcut of ``{"*": {"expand_ratio": r}}`` (:data:`rem.run.SHORTCUTS`) that, unlike
``"*"``, is no error when no method of the grid has it.

A grid can be read from a JSON or TOML file whose keys are the fields of :class:`Grid` (dashes or
underscores), e.g.::

    profile = "cpu"
    methods = ["none", "finetune", "rem"]
    rates = [0.1, 0.5, 1.0]
    [settings.rem]
    beta = 0.5
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rem.data.tasks import KINDS
from rem.errors import ConfigError
from rem.profiles import Profile, get_profile
from rem.run.spec import CURVE_RATE, Cell, config_fields, method_settings, shortcut_settings
from rem.train import PRETRAIN_TYPES


@dataclass(frozen=True)
class Grid:
    """What to run. ``None`` fields take the profile's value; ``methods=None`` means every registered one."""

    profile: str = "cpu"
    methods: tuple[str, ...] | None = None
    exclude_methods: tuple[str, ...] = ()  # taken out of ``methods`` (handy with the default: all)
    tasks: tuple[str, ...] = KINDS
    rates: tuple[float, ...] | None = None
    seeds: tuple[int, ...] | None = None
    pretrain_types: tuple[str, ...] | None = None
    dataset: str | None = None
    width: float | None = None  # ResNet-9 width multiplier (of the full-width model)
    n_corrupt: int | None = None
    steps: int | None = None  # unlearning step budget
    pretrain_steps: int | None = None
    expand_ratio: float | None = None  # shortcut of settings["*"]["expand_ratio"] (rem.run.SHORTCUTS)
    settings: dict = field(default_factory=dict)  # {"*": {...}, "<method>": {...}}: other method settings
    # the relearning check after every cell, e.g. (5, 50) (rem.run.relearn); () or "off" = off; None = the profile's
    relearn: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        from rem.run.relearn import parse_ks

        if self.relearn is not None:
            object.__setattr__(self, "relearn", parse_ks(self.relearn))
        for name in ("methods", "exclude_methods", "tasks", "rates", "seeds", "pretrain_types"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = [s for s in v.split(",") if s.strip()]
            if v is not None:
                object.__setattr__(self, name, tuple(v))
        if self.methods is not None:
            object.__setattr__(self, "methods", tuple(m.strip() for m in self.methods))
        if self.rates is not None:
            object.__setattr__(self, "rates", tuple(round(float(r), 6) for r in self.rates))
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        bad = [t for t in self.tasks if t not in KINDS]
        if bad:
            raise ConfigError(f"unknown task(s) {bad}; expected some of {KINDS}")
        bad = [t for t in self.pretrain_types or () if t not in PRETRAIN_TYPES]
        if bad:
            raise ConfigError(f"unknown pretraining type(s) {bad}; expected some of {PRETRAIN_TYPES}")
        bad = [r for r in self.rates or () if not 0 < r <= 1]
        if bad:
            raise ConfigError(f"discovery rates must be in (0, 1], got {bad}")
        if not isinstance(self.settings, dict) or any(not isinstance(v, dict) for v in self.settings.values()):
            raise ConfigError("settings must map a method name (or '*') to a table of settings")

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        """A grid from a table (a config file): each value checked against its field's type."""
        from rem.settings import coerce_fields

        d = {k.replace("-", "_"): v for k, v in d.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown grid setting(s) {unknown}; known: {sorted(known)}")
        return cls(**coerce_fields(cls, d, "grid"))

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> Grid:
        """A grid from a ``.json``, ``.toml`` or ``.yaml`` file (YAML needs PyYAML); non-``None`` ``overrides``
        win over the file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no grid config file at {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the grid file {path}: {e}") from None
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            d = _read_yaml(path, text)
            if not isinstance(d, dict):
                raise ConfigError(f"{path}: expected a table of grid settings")
            return cls.from_dict(d).override(**overrides)
        try:
            if suffix == ".toml":
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python 3.10
                    import tomli as tomllib  # type: ignore[no-redef]
                d = tomllib.loads(text)
            else:
                d = json.loads(text)
        except ModuleNotFoundError as e:
            raise ConfigError("reading TOML on Python 3.10 needs `pip install tomli`; or use JSON") from e
        except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {e}") from e
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a table of grid settings")
        return cls.from_dict(d).override(**overrides)

    def override(self, **kw) -> Grid:
        kw = {k: v for k, v in kw.items() if v is not None}
        if "settings" in kw:  # merge per method
            merged = {m: dict(s) for m, s in self.settings.items()}
            for m, s in kw["settings"].items():
                merged.setdefault(m, {}).update(s)
            kw["settings"] = merged
        return dataclasses.replace(self, **kw)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    # --- resolution ---------------------------------------------------------------------------

    def resolved_profile(self) -> Profile:
        p = get_profile(self.profile)
        kw: dict = {
            "dataset": self.dataset,
            "n_corrupt": self.n_corrupt,
            "rates": self.rates,
            "seeds": self.seeds,
            "pretrain_types": self.pretrain_types,
        }
        if self.width is not None:
            if isinstance(self.width, bool) or not isinstance(self.width, (int, float)):
                raise ConfigError(f"width must be a number, got {self.width!r}")
            if not math.isfinite(self.width) or self.width <= 0:
                raise ConfigError(f"width must be a finite number > 0, got {self.width}")
            if p.arch != "resnet9":
                raise ConfigError(f"width applies to ResNet-9; profile {p.name!r} uses {p.arch}")
            kw["arch_kw"] = {**p.arch_kw, "width": float(self.width)}
        if self.steps is not None:
            kw["unlearn"] = dataclasses.replace(p.unlearn, steps=int(self.steps))
        if self.pretrain_steps is not None:
            kw["pretrain"] = dataclasses.replace(p.pretrain, steps=int(self.pretrain_steps))
        return p.override(**kw)

    def method_names(self) -> list[str]:
        from rem.methods import REGISTRY, method_names

        names = method_names() if self.methods in (None, (), ("all",)) else list(self.methods)
        unknown = [m for m in names + list(self.exclude_methods) if m not in REGISTRY]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; registered: {', '.join(method_names())}")
        if len(set(names)) != len(names):
            raise ConfigError(f"a method is listed twice in {names}")
        names = [m for m in names if m not in self.exclude_methods]
        if not names:
            raise ConfigError("no method left to run")
        bad = sorted(set(self.settings) - set(REGISTRY) - {"*"})
        if bad:
            raise ConfigError(f"settings for unknown method(s) {bad}; registered: {', '.join(method_names())}")
        has = set().union(*(config_fields(m) for m in names))
        orphans = sorted(set(self.settings.get("*", {})) - has)
        if orphans:  # a setting no method of the grid has would be dropped silently
            raise ConfigError(f"no method of this grid ({', '.join(names)}) has the setting(s) {orphans}")
        return names

    def method_overrides(self, method: str, profile: Profile, seed: int) -> dict:
        """The settings a method gets (:func:`rem.run.method_settings`)."""
        return method_settings(method, profile, seed, self.settings, shortcut_settings(expand_ratio=self.expand_ratio))

    def cells(self) -> list[Cell]:
        """Every cell, grouped by starting model (pretraining type, task, seed), then method, then rate."""
        from rem.methods import get_method

        profile = self.resolved_profile()
        names = self.method_names()
        for t in self.tasks:  # validates n_corrupt for each task (e.g. interclass needs it even)
            profile.task_config(t)
        n_train = training_samples(profile)
        if n_train is not None and profile.n_corrupt > n_train:
            raise ConfigError(
                f"n_corrupt={profile.n_corrupt} exceeds the {n_train} training samples of profile "
                f"{profile.name!r}'s data ({profile.dataset}): give at most {n_train}"
            )
        for r in profile.rates:
            if round(r * profile.n_corrupt) < 1:
                raise ConfigError(f"rate {r} of n_corrupt={profile.n_corrupt} discovers no sample")
        relearn = profile.relearn if self.relearn is None else self.relearn
        out = []
        for ptype in profile.pretrain_types:
            for task in self.tasks:
                for seed in profile.seeds:
                    for m in names:
                        ov = self.method_overrides(m, profile, seed)
                        get_method(m, **ov)  # validate once, before any work
                        for rate in profile.rates:
                            ov_items = tuple(sorted({**ov, **self._tracking(m, ov, profile, rate, seed)}.items()))
                            out.append(Cell(m, ptype, task, float(rate), int(seed), profile, ov_items, relearn))
        return out

    @staticmethod
    def _tracking(method: str, overrides: dict, profile: Profile, rate: float, seed: int) -> dict:
        """REM's per-round analysis (``track``, result-neutral: not in the key) only on the cells the report's
        redirection curve draws (the first seed, the rate nearest :data:`~rem.run.spec.CURVE_RATE`), unless
        the grid sets it; it costs ~14 % of a REM cell."""
        if "track" not in config_fields(method) or "track" in overrides:
            return {}
        nearest = min(profile.rates, key=lambda r: (abs(r - CURVE_RATE), r))
        return {"track": bool(seed == min(profile.seeds) and rate == nearest)}


#: Training samples of each data set when a profile takes all of them.
FULL_TRAIN = {"cifar10": 50_000, "svhn": 73_257}


def training_samples(profile: Profile) -> int | None:
    """How many training samples the profile's data has (None: not known before loading it)."""
    if profile.dataset == "generated":
        n = profile.generated_kw.get("n_train")
        return min(n, profile.n_train) if n is not None and profile.n_train is not None else (n or profile.n_train)
    full = FULL_TRAIN.get(profile.dataset)
    if profile.n_train is None:
        return full
    return min(profile.n_train, full) if full else profile.n_train


def _read_yaml(path: Path, text: str):
    """A YAML grid file's table (PyYAML's safe loader: plain data only, never Python objects)."""
    try:
        import yaml
    except ModuleNotFoundError:
        raise ConfigError(
            f"{path}: reading a YAML grid file needs PyYAML (pip install pyyaml); or write it as .json or .toml"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def parse_list(text: str | None, kind=str) -> tuple | None:
    """``"a,b"`` → ``("a", "b")`` (``None`` stays ``None``), converting each item with ``kind``."""
    if text is None:
        return None
    try:
        return tuple(kind(s.strip()) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise ConfigError(f"cannot read {text!r} as a comma-separated list of {kind.__name__}: {e}") from e
