"""The ``rem`` command: train, eval, unlearn, methods, discover, bench, report, demo.

One module per command (``add_parser(sub)`` adds its sub-parser, ``run(args)`` runs it); what commands
share lives in :mod:`~rem.cli.args` (the parser, argument types, option groups), :mod:`~rem.cli.inputs`
(the forget-file reader, a checkpoint's task, a user's model and data) and :mod:`~rem.cli.settings`
(``--set``). No command module imports another; this package wires them together.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time

from rem.cli import bench, demo, discover, eval, methods, report, train, unlearn
from rem.cli.args import OneLineParser, show_defaults
from rem.errors import RemError

#: The commands, in the order ``rem --help`` lists them.
COMMANDS = (train, eval, unlearn, methods, discover, bench, report, demo)


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(
        prog="rem",
        description="Corrective machine unlearning of image classifiers "
        "with REM (Redirection for Erasing Memory) and its baselines.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    show_defaults(ap)
    return ap


def system_error(e: BaseException) -> str:
    """An error of the file system or of SQLite as one line: what failed, where, and what to do."""
    from rem.output import why

    if isinstance(e, sqlite3.Error):
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = "; free space and run again (finished cells are kept)" if "full" in text else ""
        return f"the results store failed: {text}{hint}"
    where = f": {e.filename}" if getattr(e, "filename", None) else ""
    hint = "; free space and run again" if e.errno == 28 else ""
    return f"{why(e)}{where}{hint}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    from rem.runtime import tune_allocator

    tune_allocator()  # before the first big tensor (see its docstring)
    try:
        return int(args.func(args) or 0)
    except RemError as e:
        print(f"rem {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as e:  # the file system or the results store refused: one line, never a traceback
        print(f"rem {args.command}: error: {system_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rem {args.command}: interrupted after {time.time() - t0:.0f} s", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "build_parser", "main"]
