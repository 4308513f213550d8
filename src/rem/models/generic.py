"""REM's extra capacity θ_o2 on *any* classifier: a gated side branch per target layer.

The built-in models (:mod:`rem.models.resnet9`, :mod:`rem.models.vit`) widen their own layers. A user's
network is an arbitrary ``nn.Module`` whose class rem does not know, so :class:`GenericCapacity`
adds capacity the way PEFT adds LoRA: it picks *target layers* (``nn.Conv2d`` / ``nn.Linear``, by
type or by name pattern, like PEFT's ``target_modules``) and attaches to each a side branch

    y = layer(x) + up(g ⊙ act(down(x)))

- ``down`` has the layer's own geometry (a Conv2d with the same kernel, stride, padding and dilation,
  or a Linear) and ``w = round(r · out_units)`` outputs, r being the expand ratio (default 1);
- ``g`` is the per-sample gate of the ``w`` hidden units: 0 in ``drop`` mode, the sample's mask in
  ``mask`` mode (:class:`rem.models.capacity.MaskSpec`, the same hashing as the built-in models, one
  mask group per branch, all of D_f on the shared key), 1 in ``full`` mode;
- ``up`` (a 1×1 conv or a Linear, no bias) is initialised to **zero** by default, as LoRA's B: with θ_o2
  never trained every mode computes the original function, while ``down`` gets the default
  initialisation so that gradients reach ``up`` at once (and ``down`` once ``up`` moves).
  ``up_init="default"`` gives ``up`` the framework's default initialisation instead, as the built-in
  expansion gives its new channels: ``drop`` mode is still exactly the original function, but the
  ``mask`` / ``full`` outputs differ from the start (measured against zero in
  ``docs/results/measurements.md``).

The branches are attached with forward hooks, never by replacing modules: the user's module keeps its
structure and its ``state_dict`` keys (the wrapper's keys are ``model.<original key>`` and
``branches.<i>.…``), and :meth:`GenericCapacity.unwrap` hands back the user's own object, of its own
class, hooks removed: ``OriginalClass(...).load_state_dict(unwrapped.state_dict(), strict=True)`` works.
The hooks are bound methods of the branch modules, so ``copy.deepcopy`` of the wrapper re-binds them to
the copied branches. Batch norm and dropout of the user's model behave as the user's model does: the
wrapper only propagates ``train()`` / ``eval()``.

:class:`GenericCapacity` is a :class:`rem.models.CapacityNet` (``kept`` = each target's output units,
``extra`` = each branch's width), so :func:`rem.models.expand` / :func:`rem.models.shrink` and every
method that asks for a forward ``mode`` work on it unchanged. :func:`rem.models.shrink` returns the
wrapper without branches; :meth:`GenericCapacity.unwrap` returns the user's module.

Default targets: every ``Conv2d`` and ``Linear`` except the last one registered (the classifier) and
except the projections of ``nn.MultiheadAttention`` (it reads their weights without calling them, so
a hook would never run). A target that never runs during a forward pass is reported as an error on the
first forward in ``mask`` or ``full`` mode.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Sequence

import torch
from torch import nn

from rem.errors import ConfigError
from rem.models.base import CapacityNet
from rem.models.capacity import MaskSpec, validate_mode

TARGET_TYPES = (nn.Conv2d, nn.Linear)
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "identity": nn.Identity}
UP_INITS = ("zero", "default")


def _check_branch_options(act: str, up_init: str) -> None:
    if act not in ACTIVATIONS:
        raise ConfigError(f"unknown branch activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
    if up_init not in UP_INITS:
        raise ConfigError(f"unknown branch up_init {up_init!r}; expected one of {list(UP_INITS)}")


def _out_units(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _matches(name: str, module: nn.Module, pattern) -> bool:
    """PEFT-like matching: a type, an exact name, a dotted suffix (``fc`` matches ``head.fc``) or a glob."""
    if isinstance(pattern, type):
        return isinstance(module, pattern)
    pattern = str(pattern)
    return name == pattern or name.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern)


def _select(patterns, name: str, module: nn.Module) -> bool:
    if isinstance(patterns, str):  # one string is a regular expression over the full name, as in PEFT
        return re.fullmatch(patterns, name) is not None
    return any(_matches(name, module, p) for p in patterns)


def select_targets(model: nn.Module, targets=None, exclude=None) -> list[str]:
    """Names of the layers that get a branch (see the module docstring for the defaults).

    ``targets``: None (default), a regular expression (str), or a list of types / names / dotted
    suffixes / globs. A pattern that picks a container (a block, a ``Sequential``) picks every Conv2d /
    Linear inside it. ``exclude``: the same forms, removed afterwards. Raises :class:`ConfigError`
    when a pattern picks a layer that is neither a Conv2d / Linear nor holds one, or when nothing is left.
    """
    if isinstance(targets, (list, tuple)) and not targets:
        return []  # explicitly none: no branches (the copies with_extra makes of a model without targets)
    for option, patterns in (("targets", targets), ("exclude", exclude)):
        if isinstance(patterns, str):
            try:
                re.compile(patterns)
            except re.error as e:
                raise ConfigError(f"{option} {patterns!r} is not a valid regular expression: {e}") from None
    named = [(n, m) for n, m in model.named_modules() if n]
    in_mha = {f"{n}.{c}" for n, m in named if isinstance(m, nn.MultiheadAttention) for c, _ in m.named_children()}
    layers = [n for n, m in named if isinstance(m, TARGET_TYPES) and n not in in_mha]

    def picked(patterns, strict: bool) -> set[str]:
        out: set[str] = set()
        for n, m in named:
            if not _select(patterns, n, m):
                continue
            inside = [x for x in layers if x == n or x.startswith(n + ".")]
            if not inside and strict:
                why = (
                    "belongs to nn.MultiheadAttention, which never calls it"
                    if n in in_mha
                    else f"is a {type(m).__name__}, neither a Conv2d / Linear nor a block holding one"
                )
                raise ConfigError(f"target {n!r} {why}: target other layers")
            out.update(inside)
        return out

    if targets is None:
        chosen = layers[:-1]  # the last Conv2d / Linear registered is taken to be the classifier
    else:
        sel = picked(targets, strict=True)
        chosen = [n for n in layers if n in sel]
    if exclude is not None:
        drop = picked(exclude, strict=False)
        chosen = [n for n in chosen if n not in drop]
    if not chosen and targets is None and exclude is None and len(layers) <= 1:
        return []  # only a classifier: no branches, which the methods that add no capacity do not need
    if not chosen:
        raise ConfigError(no_target_message(model, targets, exclude))
    return chosen


def no_target_message(model: nn.Module, targets=None, exclude=None) -> str:
    """Why no layer can get a branch: a pattern that matches nothing (or is not a valid regular expression),
    or a model whose only Conv2d / Linear layer is its classifier."""
    named = [n for n, _ in model.named_modules() if n]
    for pattern in [targets] if isinstance(targets, str) else list(targets or []):
        if isinstance(pattern, type):
            continue
        try:
            re.compile(str(pattern))
        except re.error as e:
            if not any(fnmatch.fnmatchcase(n, str(pattern)) or n.endswith("." + str(pattern)) for n in named):
                return (
                    f"target {pattern!r} matches no layer of {type(model).__name__} and is not a valid regular "
                    f"expression ({e})"
                )
    if targets is None and exclude is None:
        return (
            f"no target layer: {type(model).__name__} has no Conv2d / Linear layer but its classifier, so REM has "
            "nowhere to add capacity; give targets (e.g. the classifier's name), or use a method that adds none "
            "(npo, finetune, scrub, ...)"
        )
    return (
        f"no target layer: no Conv2d / Linear layer of {type(model).__name__} is left for the branches "
        f"(targets={targets!r}, exclude={exclude!r}; its layers: {named[:8]})"
    )


class Branch(nn.Module):
    """The side branch of one target layer; its :meth:`hook` adds ``up(g ⊙ act(down(x)))`` to the output."""

    def __init__(self, layer: nn.Module, width: int, act: str = "relu", up_init: str = "zero") -> None:
        super().__init__()
        _check_branch_options(act, up_init)
        if width < 1:
            raise ConfigError(f"a branch needs at least one unit, got width {width}")
        if isinstance(layer, nn.Conv2d):
            self.down = nn.Conv2d(
                layer.in_channels,
                width,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                layer.dilation,
                padding_mode=layer.padding_mode,
            )
            self.up = nn.Conv2d(width, layer.out_channels, 1, bias=False)
        elif isinstance(layer, nn.Linear):
            self.down = nn.Linear(layer.in_features, width)
            self.up = nn.Linear(width, layer.out_features, bias=False)
        else:
            raise ConfigError(f"cannot attach a branch to a {type(layer).__name__}; only Conv2d and Linear")
        self.act = ACTIVATIONS[act]()
        if up_init == "zero":
            nn.init.zeros_(self.up.weight)  # LoRA-style: the branch adds exactly 0 until trained
        self.width = width
        self.conv = isinstance(layer, nn.Conv2d)
        self._mode: str = "drop"
        self._gate: torch.Tensor | None = None
        self.fired = 0

    def hook(self, module: nn.Module, args: tuple, out: torch.Tensor):
        self.fired += 1
        if self._mode == "drop":
            return None  # the original function, and no gradient into θ_o2
        h = self.act(self.down(args[0]))
        if self._mode == "mask":
            g = self._gate.to(h.dtype)
            if h.shape[0] != g.shape[0]:
                raise ConfigError(
                    f"{type(module).__name__} input of shape {tuple(args[0].shape)} does not start "
                    f"with the batch ({g.shape[0]}): only batch-first layers can be targets"
                )
            g = g.view(g.shape[0], -1, 1, 1) if self.conv else g.view(g.shape[0], *([1] * (h.dim() - 2)), -1)
            h = h * g
        return out + self.up(h).to(out.dtype)


def _is_our_hook(fn) -> bool:
    return isinstance(getattr(fn, "__self__", None), Branch) and getattr(fn, "__name__", "") == "hook"


def _remove_hooks(model: nn.Module) -> None:
    for m in model.modules():
        for key in [k for k, fn in m._forward_hooks.items() if _is_our_hook(fn)]:
            del m._forward_hooks[key]


class GenericCapacity(CapacityNet):
    """Any image classifier ``model`` (images → logits) with gated side branches as θ_o2.

    ``targets`` / ``exclude``: which layers get a branch (:func:`select_targets`). ``extra``: each
    branch's width (None: no branches yet; :func:`rem.models.expand` adds ``round(r · out_units)``).
    ``act``: the branch's hidden activation. ``up_init``: ``"zero"`` or ``"default"`` (module docstring).
    ``seed``: the branches' initialisation. The wrapper takes
    ``model`` as it is (no copy): wrap a copy if the original must stay free of hooks.
    """

    arch = "generic"

    def __init__(
        self,
        model: nn.Module,
        targets=None,
        exclude=None,
        extra: Sequence[int] | None = None,
        mask: MaskSpec | None = None,
        act: str = "relu",
        seed: int = 0,
        up_init: str = "zero",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, GenericCapacity):
            raise ConfigError("the model is already wrapped")
        names = select_targets(model, targets, exclude)
        mods = dict(model.named_modules())
        kept = [_out_units(mods[n]) for n in names]
        extra = [0] * len(names) if extra is None else [int(e) for e in extra]
        super().__init__(kept, extra, mask)
        _check_branch_options(act, up_init)  # also when no branch is built yet
        self.model = model
        self.target_names = names
        self.act_name = act
        self.up_init = up_init
        self.branches = nn.ModuleDict()
        self._checked = False
        _remove_hooks(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i, (n, e) in enumerate(zip(names, self.extra)):
                if e > 0:
                    layer = mods[n]
                    ref = next(layer.parameters())
                    self.branches[str(i)] = Branch(layer, e, act, up_init).to(device=ref.device, dtype=ref.dtype)
        for i, n in enumerate(names):
            if str(i) in self.branches:
                mods[n].register_forward_hook(self.branches[str(i)].hook)
        self.train(model.training)

    # -- description -----------------------------------------------------------------------------
    def hparams(self) -> dict:
        return {
            "module": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "targets": list(self.target_names),
            "act": self.act_name,
        }

    # -- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        mode: str = "drop",
        keys: torch.Tensor | None = None,
        masks: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        validate_mode(mode)
        gates = self.group_masks(mode, keys, masks) if self.branches else []
        live = list(self.branches.items())
        for key, b in live:
            b._mode, b._gate, b.fired = mode, (gates[int(key)] if mode == "mask" else None), 0
        try:
            out = self.model(x)
        finally:
            for _, b in live:
                b._mode, b._gate = "drop", None
        if mode != "drop" and not self._checked and live:
            idle = [self.target_names[int(k)] for k, b in live if b.fired == 0]
            if idle:
                raise ConfigError(
                    f"target layers {idle[:5]} never ran in {type(self.model).__name__}'s forward "
                    "pass: exclude them (their branches would never train)"
                )
            self._checked = True
        return out

    # -- partition -------------------------------------------------------------------------------
    def with_extra(self, extra: Sequence[int], seed: int = 0) -> GenericCapacity:
        """A copy with branches of widths ``extra`` (0: none): existing branch weights are copied into the
        leading slices, new ones get a fresh initialisation under ``seed`` (``up`` as ``up_init`` says)."""
        if len(extra) != len(self.target_names):
            raise ConfigError(f"expected {len(self.target_names)} branch widths, got {len(extra)}")
        new = GenericCapacity(
            self.unwrap(copy_model=True),
            targets=list(self.target_names),
            extra=extra,
            mask=MaskSpec(**self.mask_spec.as_dict()),
            act=self.act_name,
            seed=seed,
            up_init=self.up_init,
        )
        with torch.no_grad():
            for key, b in new.branches.items():
                if key in self.branches:
                    old = self.branches[key].state_dict()
                    for name, t in b.state_dict().items():
                        lead = tuple(slice(0, min(a, c)) for a, c in zip(old[name].shape, t.shape))
                        t[lead] = old[name][lead]
        new.train(self.training)
        return new

    def no_capacity_message(self) -> str:
        """Why :func:`rem.models.expand` cannot add capacity: no target layer."""
        return no_target_message(self.model)

    def extra_param_masks(self) -> dict[str, torch.Tensor]:
        """True on every entry of θ_o2 (all branch parameters), False on the user's parameters."""
        return {n: torch.full_like(p, n.startswith("branches."), dtype=torch.bool) for n, p in self.named_parameters()}

    def unwrap(self, copy_model: bool = False) -> nn.Module:
        """The user's own module (its class, its state_dict keys), branches and hooks removed.

        ``copy_model``: a deep copy, leaving this wrapper intact; otherwise the wrapped object itself.
        """
        model = copy.deepcopy(self.model) if copy_model else self.model
        _remove_hooks(model)
        return model

    def layer_groups(self) -> list[list[str]]:
        """The user's model's layers (its top-level children with parameters; a ModuleList counts one per
        item), named as in the wrapper: for ``cf-k``."""
        out: list[list[str]] = []
        for name, child in self.model.named_children():
            if isinstance(child, nn.ModuleList):
                out.extend([[f"model.{name}.{i}"] for i, c in enumerate(child) if any(True for _ in c.parameters())])
            elif any(True for _ in child.parameters()):
                out.append([f"model.{name}"])
        return out

    def fresh(self, seed: int) -> GenericCapacity:
        """A randomly re-initialised copy of the same architecture (Bad Teacher's incompetent teacher).

        **[choice]** rem does not know how the user initialises the model: every submodule with a
        ``reset_parameters`` method is reset (its default initialisation); parameters owned by no such
        module (a ViT's class token, position embeddings) are drawn from N(0, 0.02²).
        """
        new = copy.deepcopy(self)
        covered: set[int] = set()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for m in new.modules():
                if hasattr(m, "reset_parameters") and m is not new:
                    m.reset_parameters()
                    covered.update(id(p) for p in m.parameters(recurse=False))
            for p in new.parameters():
                if id(p) not in covered:
                    p.normal_(0.0, 0.02)
        return new


def wrap(
    model: nn.Module,
    targets=None,
    exclude=None,
    ratio: float = 0.0,
    *,
    act: str = "relu",
    mask: MaskSpec | None = None,
    seed: int = 0,
    up_init: str = "zero",
) -> GenericCapacity:
    """Wrap a deep copy of ``model``; with ``ratio`` > 0, branches of width ``round(ratio · out_units)``."""
    from rem.models.capacity import extra_sizes

    w = GenericCapacity(copy.deepcopy(model), targets, exclude, mask=mask, act=act, up_init=up_init)
    return w if ratio == 0 else w.with_extra(extra_sizes(w.kept, ratio), seed=seed)


__all__ = ["Branch", "GenericCapacity", "select_targets", "wrap"]
