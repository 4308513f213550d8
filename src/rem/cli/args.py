"""What the commands share on their command lines: the parser, argument types, option groups, output format.

Every command module adds its sub-parser with these pieces, so an option that two commands share is
written once: the data / device / progress options (:func:`add_common`), the discovered set
(:func:`add_forget_options`) and a user's own model and data (:func:`add_user_model_options`).
"""

from __future__ import annotations

import argparse
import json

TASK_HELP = "corruption task: poison (high regularity), interclass (medium) or random (low)"
TASKS = ("poison", "interclass", "random")


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors on one line of stderr (exit 2), like rem's own errors, and no usage dump."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    parse.__name__ = f"integer >= {low}"
    return parse


def rate_type(text: str) -> float:
    """An argparse type: a discovery rate in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"a discovery rate is in (0, 1], got {text}")
    return v


def numbers(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` → ``(0.5, 0.5, 0.5)`` (``None`` stays ``None``); ``option`` names it in the error."""
    from rem.errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise ConfigError(f"{option} must be comma-separated numbers, got {text!r}") from e


def names(text: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``: a comma-separated list of layer names or patterns (``None``: not given)."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def shown(metrics: dict) -> str:
    """Metrics as the commands print them: the shares in percent, two decimals (files keep the shares)."""
    from rem.units import percent_metrics

    return json.dumps(percent_metrics(metrics, 2))


def add_data_options(p, download: bool = True) -> None:
    """``--data-dir`` and (with ``download``) ``--no-download``."""
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the data sets (default: "
        "$REM_DATA_DIR, else ~/.cache/rem/data; CIFAR-10 is downloaded there if missing)",
    )
    if download:
        p.add_argument(
            "--no-download",
            action="store_true",
            help="never download a missing data set; fail with an error instead",
        )


def add_device_option(p) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="compute device: auto (CUDA if available), cpu, cuda, cuda:1 (default auto)",
    )


def add_quiet_option(p) -> None:
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (they are drawn only when stderr is a terminal anyway)",
    )


def add_common(p, data: bool = True) -> None:
    """``--data-dir`` and ``--no-download`` (with ``data``), ``--device`` and ``--quiet``."""
    if data:
        add_data_options(p)
    add_device_option(p)
    add_quiet_option(p)


def add_n_corrupt_option(p) -> None:
    """``--n-corrupt``: |D_c| instead of the profile's."""
    p.add_argument(
        "--n-corrupt",
        type=int_at_least(1),
        default=None,
        help="override |D_c|, the number of corrupted samples, >= 1 (default: the profile's)",
    )


def add_forget_options(p: argparse.ArgumentParser) -> None:
    """The discovered set D_f: ``--rate`` (a checkpoint task's own) or ``--forget-file`` / ``--forget``."""
    p.add_argument(
        "--rate",
        type=rate_type,
        default=None,
        help="discovery rate |D_f|/|D_c| in (0, 1]: D_f is the checkpoint task's own discovered set at this rate",
    )
    p.add_argument(
        "--forget-file",
        "--forget",
        dest="forget_file",
        default=None,
        help="file of the discovered samples: integer indices in the data's order (whitespace / comma separated, "
        "one JSON list; '#' starts a comment line) or, for an image folder, file names relative to it "
        "(one per line); give it or --rate",
    )


def add_user_model_options(p: argparse.ArgumentParser) -> None:
    """A user's own model and data (instead of ``--checkpoint``): the factory, its weights, the data and how
    its images are prepared, and the layers REM's branches go into."""
    g = p.add_argument_group("your own model and data (instead of --checkpoint)")
    g.add_argument(
        "--model",
        default=None,
        metavar="MODULE:FACTORY",
        help="function that builds your architecture: package.module:function or path/to/file.py:function",
    )
    g.add_argument("--factory-kwargs", default=None, metavar="JSON", help="keyword arguments of the factory, as JSON")
    g.add_argument("--weights", default=None, help="your trained weights, a .safetensors file (never unpickled)")
    g.add_argument(
        "--data",
        default=None,
        help="your training data with its labels as trained: an .npz file (images x, labels y) or a folder of "
        "class folders",
    )
    g.add_argument("--num-classes", type=int, default=None, help="number of classes (default: from the data)")
    g.add_argument(
        "--targets",
        default=None,
        help="REM: layers that get extra capacity, comma-separated names / suffixes / globs "
        "(default: every Conv2d and Linear but the last)",
    )
    g.add_argument("--exclude", default=None, help="REM: layers to leave out, same forms as --targets")
    g.add_argument(
        "--mean", default=None, help="per-channel normalisation mean in [0, 1], e.g. 0.5,0.5,0.5 (default: CIFAR-10's)"
    )
    g.add_argument("--std", default=None, help="per-channel normalisation std, e.g. 0.25,0.25,0.25")
    g.add_argument(
        "--crop-pad", type=int, default=None, help="padding of training crops in pixels (default size/8; 0: no crops)"
    )
    g.add_argument(
        "--pad-mode", default="zeros", choices=["zeros", "reflect"], help="how crops are padded (default zeros)"
    )
    g.add_argument("--no-flip", action="store_true", help="no horizontal flips in training")


def print_settings(name: str, summary: str, config_cls: type, usage: str) -> None:
    """The settings of a method or a score: one line each with its help text, type and default."""
    from rem.methods import settings_help

    print(f"{name}: {summary}")
    print(f"settings ({usage}):")
    rows = settings_help(config_cls)
    width = max(len(n) for n, *_ in rows)
    for key, tp, default, text in rows:
        print(f"  {key:<{width}}  {text} ({tp}; default {default!r})")


def show_defaults(ap: argparse.ArgumentParser) -> None:
    """Append "(default X)" to every option's help that has a default and does not name it yet."""
    for act in ap._actions:
        if isinstance(act, argparse._SubParsersAction):
            for p in act.choices.values():
                show_defaults(p)
        elif act.help and act.default not in (None, False, argparse.SUPPRESS) and "default" not in act.help:
            act.help += f" (default {act.default})"
