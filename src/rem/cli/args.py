"""What the commands share on their command lines: the parser, argument types, option groups, output format.

Every command module adds its sub-parser with these pieces, so an option that two commands share is
written once: the data / device / progress options (:func:`add_common`), the discovered set
(:func:`add_forget_options`) and a user's own model and data (:func:`add_user_model_options`).
"""

from __future__ import annotations

import argparse
import json
import math

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


def number_in(low: float | None = None, high: float | None = None, *, low_open: bool = True):
    """An argparse type: a finite number in (``low``, ``high``] (``low_open=False``: [``low``, ``high``])."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and (v <= low if low_open else v < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {text}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return v

    parse.__name__ = "number"
    return parse


def numbers(
    text: str | None, option: str, low: float | None = None, high: float | None = None, positive: bool = False
) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` → ``(0.5, 0.5, 0.5)`` (``None`` stays ``None``), each finite, in [``low``, ``high``]
    and (``positive``) > 0; ``option`` names it in the error."""
    from rem.errors import ConfigError

    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise ConfigError(f"{option} must be comma-separated numbers, got {text!r}") from e
    for v in vals:
        if not math.isfinite(v):
            raise ConfigError(f"{option} must be finite numbers, got {text!r}")
        if (low is not None and v < low) or (high is not None and v > high):
            raise ConfigError(f"{option} values must lie in [{low:g}, {high:g}] (shares of 255), got {text!r}")
        if positive and v <= 0:
            raise ConfigError(f"{option} values must be > 0, got {text!r}")
    return vals


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
    g.add_argument(
        "--num-classes", type=int_at_least(1), default=None, help="number of classes (default: from the data)"
    )
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


#: The options of a user's own model and data, with their defaults: none applies to ``--checkpoint``.
USER_MODEL_OPTIONS = {
    "--data": ("data", None),
    "--weights": ("weights", None),
    "--factory-kwargs": ("factory_kwargs", None),
    "--num-classes": ("num_classes", None),
    "--targets": ("targets", None),
    "--exclude": ("exclude", None),
    "--mean": ("mean", None),
    "--std": ("std", None),
    "--crop-pad": ("crop_pad", None),
    "--pad-mode": ("pad_mode", "zeros"),
    "--no-flip": ("no_flip", False),
}


def refuse_inapplicable(args) -> None:
    """Refuse options that cannot apply to the branch the command line chose, naming the option and why:
    a user's model and data options with ``--checkpoint`` (a checkpoint brings its own data, preparation and
    capacity), and a benchmark task's options with ``--model``."""
    from rem.errors import ConfigError

    if getattr(args, "model", None) is None:
        given = [o for o, (dest, default) in USER_MODEL_OPTIONS.items() if getattr(args, dest, default) != default]
        if given:
            raise ConfigError(
                f"{given[0]} does not apply to --checkpoint: a checkpoint written by rem brings its own data, "
                f"its preparation and its capacity; {given[0]} belongs to --model (your own model)"
            )
        return
    if getattr(args, "within_corrupt", False):
        raise ConfigError(
            "--within-corrupt does not apply to --model: it checks against a benchmark task's corrupted set "
            "D_c, which your own data set does not know"
        )
    if getattr(args, "rate", None) is not None:
        raise ConfigError("--rate does not apply to --model: it picks a benchmark task's own D_f; give --forget")
    if getattr(args, "checkpoint", None):
        raise ConfigError("give --checkpoint (a model written by rem) or --model (your own), not both")


def refuse_setting(method: str, option: str, setting: str) -> None:
    """Refuse ``option`` (a shortcut of ``--set SETTING=...``) when ``method`` has no such setting."""
    from rem.errors import ConfigError
    from rem.methods import REGISTRY
    from rem.settings import field_types

    if method in REGISTRY and setting not in field_types(REGISTRY[method].config_cls):
        has = sorted(n for n, cls in REGISTRY.items() if setting in field_types(cls.config_cls))
        raise ConfigError(
            f"{option} does not apply to method {method!r}: it adds no such capacity ({option} is a setting of "
            f"{', '.join(has)})"
        )


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
