"""Settings given as text or loose values, checked and converted by each field's declared type.

One function, :func:`coerce_fields`, serves every way a setting reaches a config dataclass: ``--set
KEY=VALUE`` on ``rem unlearn`` and ``rem bench``, the ``settings`` table of a grid file, and keyword
overrides of :func:`rem.get_method`. A value is parsed by the field's type hint (read with
:func:`typing.get_type_hints`, since ``from __future__ import annotations`` makes the annotations strings):

- ``bool``: a bool, 0 / 1, or the text true/false/1/0/yes/no/on/off in any case (never ``bool("False")``);
- ``int``: an integer (numpy's too), or text of one (``1.5``, ``64.0`` and ``True`` are refused);
- ``float``: a finite number, or text of one;
- ``str``: text; ``Literal[...]``: one of its values; ``X | None``: also ``None`` or the text none/null;
- ``tuple[X, ...]``: a list or tuple, or comma-separated text, each item as ``X``.

Anything else raises :class:`~rem.errors.ConfigError` naming the setting, its type and the value.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Literal, Union

from rem.errors import ConfigError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class _Bad(Exception):
    pass


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type hint of every dataclass field of ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def type_name(tp) -> str:
    """A short readable name of a type hint: ``int``, ``float or None``, ``one of 'sgd', 'adam'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list of {type_name(args[0])}" if args else "a list"
    if tp is bool:
        return "a boolean (true/false/yes/no/1/0)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "text"
    return getattr(tp, "__name__", str(tp))


def _union(value, args):
    if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))):
        return None
    for a in args:
        if a is type(None):
            continue
        try:
            return coerce_value(value, a)
        except _Bad:
            pass
    raise _Bad


def _literal(value, args):
    for a in args:
        try:
            v = coerce_value(value, type(a))
        except _Bad:
            continue
        if v == a:
            return a
    raise _Bad


def _tuple(value, args):
    if isinstance(value, str):
        value = [s for s in value.split(",") if s.strip()]
    if not isinstance(value, (list, tuple)):
        raise _Bad
    item = args[0] if args else Any
    return tuple(coerce_value(v, item) for v in value)


def _bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Bad


def _int(value):
    if isinstance(value, bool):
        raise _Bad
    if isinstance(value, numbers.Integral):  # int, numpy's integers (np.int64(3))
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            raise _Bad from None
    raise _Bad


def _float(value):
    if isinstance(value, bool):
        raise _Bad
    if isinstance(value, numbers.Real):  # int, float, numpy's numbers
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            raise _Bad from None
    else:
        raise _Bad
    if not math.isfinite(v):
        raise _Bad
    return v


def _str(value):
    if isinstance(value, str):
        return value
    raise _Bad


_GENERIC = {Union: _union, types.UnionType: _union, Literal: _literal, tuple: _tuple}
_PLAIN = {bool: _bool, int: _int, float: _float, str: _str}


def coerce_value(value, tp):
    """``value`` converted to the type hint ``tp``; raises ValueError-like ``_Bad`` when it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _GENERIC:
        return _GENERIC[origin](value, args)
    if tp is Any:
        return value
    if tp in _PLAIN:
        return _PLAIN[tp](value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Bad


def coerce_fields(cls: type, values: dict, owner: str | None = None) -> dict:
    """``values`` (field name → value, text or loose) converted by the field types of dataclass ``cls``.

    Unknown names and values that are not of the field's type raise :class:`ConfigError` (one line).
    """
    owner = owner or cls.__name__
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(f"{owner} has no setting(s) {unknown}; known: {sorted(types_)}")
    out = {}
    for name, value in values.items():
        try:
            out[name] = coerce_value(value, types_[name])
        except _Bad:
            raise ConfigError(f"{owner}: setting {name!r} must be {type_name(types_[name])}, got {value!r}") from None
    return out
