"""``rem demo`` (what ``make demo`` runs): its options; the demo itself is :mod:`rem.demo`."""

from __future__ import annotations

from rem.cli.args import add_common


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: remove a backdoor from a CIFAR-10 model with REM and baselines (minutes on a CPU)",
        description="Heal the shipped poisoned CIFAR-10 model with REM and baselines; print the backdoor's "
        "attack success rate before and after each, and the report's path.",
    )
    p.add_argument(
        "--run-dir", default="runs/demo", help="folder of the demo's results store and report (default runs/demo)"
    )
    p.add_argument("--profile", default=None, help="settings profile (default demo; smoke: generated images)")
    p.add_argument("--full", action="store_true", help="the cpu profile, pretrained from scratch first (long)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from rem.demo import run_demo

    return run_demo(args)
