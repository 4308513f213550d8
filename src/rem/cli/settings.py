"""``--set [NAME.]KEY=VALUE`` as the commands read it: for a grid of methods (:func:`parse_settings`) or one
run of one method or score (:func:`settings_for`). Values stay text: the method's (or score's) config parses
each by its field's declared type (:func:`rem.settings.coerce_fields`)."""

from __future__ import annotations

from rem.errors import ConfigError


def parse_settings(items: list[str] | None) -> dict:
    """``["rem.beta=0.5", "alpha=0.1"]`` → ``{"rem": {"beta": "0.5"}, "*": {"alpha": "0.1"}}``.

    Values stay text here: the method's config parses each by its field's declared type
    (:func:`rem.settings.coerce_fields`), so ``remove_term=False`` is the boolean false, never the string.
    """
    out: dict[str, dict] = {}
    for it in items or []:
        lhs, eq, v = it.partition("=")
        method, _, key = lhs.strip().rpartition(".")
        if not eq or not key:
            raise ConfigError(f"--set expects [METHOD.]KEY=VALUE, got {it!r}")
        out.setdefault(method or "*", {})[key.replace("-", "_")] = v
    return out


def settings_for(items: list[str] | None, name: str, what: str = "method") -> dict:
    """``--set`` values for one run of ``name`` (a method, a score): ``key=value`` and ``name.key=value``
    merged, the latter winning; a ``other.key=value`` for any other name is refused, naming it."""
    by = parse_settings(items)
    others = sorted(set(by) - {"*", name})
    if others:
        raise ConfigError(f"--set for {', '.join(others)}, but this run's {what} is {name!r}")
    return {**by.get("*", {}), **by.get(name, {})}
