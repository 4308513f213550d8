"""The package's layers (docs/architecture.md), kept by walking every import of every module (``ast``, so
imports inside functions count too): a module never imports one of a higher layer, and a command module of
``rem.cli`` never imports another command."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rem"

#: Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = [
    ("foundation", {"errors", "units", "seeding", "paths", "output", "settings", "progress", "runtime", "version"}),
    ("data and models", {"data", "models"}),
    ("training and measuring", {"train", "metrics", "checkpoint", "profiles"}),
    ("methods and discovery", {"methods", "discovery"}),  # rem-discover ranks with a score; the rem score runs REM
    ("run path", {"run"}),
    ("Python API", {"api", "heal", "__init__"}),
    ("benchmark", {"bench"}),
    ("report", {"report"}),
    ("demo", {"demo"}),  # rem demo: the shipped starting model, a grid of methods, the report
    ("commands", {"cli", "__main__"}),
]
LAYER_OF = {part: i for i, (_, parts) in enumerate(LAYERS) for part in parts}

#: The modules of ``rem.cli`` that commands share; every other module there is one command.
CLI_SHARED = {"__init__", "__main__", "args", "inputs", "settings"}
SHARED_NAMES = "rem.cli.args, rem.cli.inputs and rem.cli.settings"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``rem.cli.args``; a package is its ``__init__``)."""
    out = {}
    for f in sorted(SRC.rglob("*.py")):
        parts = ("rem", *f.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


def imported(name: str, path: Path) -> set[str]:
    """The ``rem`` modules that the module ``name`` (file ``path``) imports, as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import: from the package, up level - 1
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:  # `from rem import api` imports the module rem.api
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in out if m == "rem" or m.startswith("rem.")}


def layer(module: str) -> int:
    """The layer of a dotted module name: its first part below ``rem`` (``rem`` itself: its ``__init__``)."""
    parts = module.split(".")
    return LAYER_OF[parts[1] if len(parts) > 1 else "__init__"]


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """One line per import of a higher layer: who, whom, and both layers' names."""
    bad = []
    for name, path in modules.items():
        for target in sorted(imported(name, path)):
            if layer(target) > layer(name):
                bad.append(
                    f"{name} ({LAYERS[layer(name)][0]}) imports {target} ({LAYERS[layer(target)][0]}), a higher layer"
                )
    return bad


def command_imports(modules: dict[str, Path]) -> list[str]:
    """One line per command module of ``rem.cli`` (or shared module) that imports a command module."""
    commands = {n for n in modules if n.startswith("rem.cli.") and n.split(".")[2] not in CLI_SHARED}
    bad = []
    for name, path in modules.items():
        if not name.startswith("rem.cli.") or name.split(".")[2] in ("__init__", "__main__"):
            continue
        for target in sorted(imported(name, path)):
            if target in commands and target != name:
                bad.append(f"{name} imports the command module {target}: commands share code through {SHARED_NAMES}")
            elif target == "rem.cli":
                bad.append(f"{name} imports rem.cli, which wires every command together")
    return bad


def test_every_part_of_the_package_has_a_layer():
    parts = {n.split(".")[1] if "." in n else "__init__" for n in MODULES}
    missing = parts - set(LAYER_OF)
    assert not missing, f"not in any layer (add them to LAYERS and docs/architecture.md): {missing}"


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(MODULES)
    assert not bad, "imports against the layers (docs/architecture.md):\n" + "\n".join(bad)


def test_no_command_imports_another_command():
    bad = command_imports(MODULES)
    assert not bad, "\n".join(bad)


def test_the_walk_finds_lazy_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from rem.cli.args import shown\n    from . import tasks\n    import rem.report\n")
    assert imported("rem.data.m", f) == {"rem.cli.args", "rem.data.tasks", "rem.report"}
    with pytest.raises(AssertionError):
        assert not upward_imports({"rem.data.m": f})


def test_rem_unlearn_runs_without_the_benchmark():
    """``rem unlearn`` builds its cell with the run path alone (rem.run), as ``rem bench`` does."""
    seen, todo = set(), ["rem.cli.unlearn"]
    while todo:  # everything rem.cli.unlearn imports, directly or not
        name = todo.pop()
        if name in seen or name not in MODULES:
            continue
        seen.add(name)
        todo.extend(imported(name, MODULES[name]))
    assert "rem.run" in seen and not {n for n in seen if n.startswith("rem.bench")}
