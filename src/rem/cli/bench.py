"""``rem bench``: run the benchmark grid (methods × pretraining × tasks × rates × seeds), resumably."""

from __future__ import annotations

import argparse

from rem.cli.args import (
    add_data_options,
    add_device_option,
    add_n_corrupt_option,
    add_quiet_option,
    int_at_least,
    number_in,
)
from rem.cli.settings import parse_settings

BENCH_EPILOG = """examples:
  rem bench --profile smoke --run-dir runs/smoke
  rem bench --profile cpu --run-dir runs/cpu --methods none,finetune,rem --rates 0.1,0.5,1.0
  rem bench --config grid.toml --run-dir runs/x --executor ray --ray-address auto
  rem bench --profile paper --run-dir runs/paper --executor slurm --slurm-partition gpu --slurm-gpus 1
  rem report --run-dir runs/smoke

Rerunning the same command resumes: cells already in <run-dir>/results.sqlite are skipped."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmark grid (methods × pretraining × tasks × rates × seeds), resumably",
        description="Run every cell of a benchmark grid not yet in <run-dir>/results.sqlite: pretrain each "
        "starting model once (cached in <run-dir>/models), run each method on it, evaluate, and "
        "store one record per cell. Defaults come from the profile; methods default to all "
        "registered ones (see `rem methods`).",
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("grid")
    g.add_argument(
        "--profile",
        default=None,
        help="settings profile: smoke, cpu, paper, paper-vit (default: the config file's, else cpu)",
    )
    g.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="grid settings from a .json or .toml file (keys: profile, methods, tasks, rates, seeds, "
        "pretrain_types, dataset, width, n_corrupt, steps, pretrain_steps, expand_ratio, "
        "exclude_methods, settings); options given here override it",
    )
    g.add_argument("--methods", default=None, help="comma-separated methods, or 'all' (default: all registered)")
    g.add_argument("--exclude-methods", default=None, help="comma-separated methods to leave out, e.g. retrain")
    g.add_argument(
        "--tasks",
        default=None,
        help="comma-separated tasks: poison (high regularity), interclass (medium), random (low); default all three",
    )
    g.add_argument(
        "--rates", default=None, help="comma-separated discovery rates, each in (0, 1] (default: the profile's)"
    )
    g.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    g.add_argument(
        "--pretrain-types",
        default=None,
        help="comma-separated pretraining types: capacity-0.5, etd, full (default: the profile's)",
    )
    g.add_argument("--dataset", default=None, help="override the profile's data set: cifar10, svhn, generated")
    g.add_argument(
        "--width",
        type=number_in(0),
        default=None,
        help="override the ResNet-9 width multiplier (default: the profile's)",
    )
    add_n_corrupt_option(g)
    g.add_argument(
        "--steps",
        type=int_at_least(1),
        default=None,
        help="override the unlearning step budget of every method, >= 1 (default: the profile's)",
    )
    g.add_argument(
        "--pretrain-steps",
        type=int_at_least(1),
        default=None,
        help="override the number of pretraining steps, >= 1 (default: the profile's)",
    )
    g.add_argument(
        "--expand-ratio",
        type=number_in(0),
        default=None,
        help="shortcut of --set expand_ratio=R for REM and its variants: extra capacity ratio "
        "r = |θ_o2|/|θ_o1| in (0, 8] (default 1, the paper's)",
    )
    g.add_argument(
        "--set",
        action="append",
        metavar="[METHOD.]KEY=VALUE",
        help="another method setting, parsed by its type, for one method (rem.beta=0.5) or every method of "
        "the grid that has it (alpha=0.1; refused if none has it); repeatable; `rem methods --settings NAME` "
        "lists a method's settings",
    )
    g.add_argument(
        "--relearn",
        default=None,
        metavar="K[,K...]",
        help="after each cell, the relearning check (rem.run.relearn): re-tune a copy of the healed model on K "
        "corrupted + K clean samples and measure healed / ASR again, e.g. 5,50, or off (default: the profile's: "
        "5,50 on cpu, off on the others; it enters the cells' keys only when on)",
    )
    g.add_argument("--dry-run", action="store_true", help="list the cells and how many are stored; run nothing")
    g.add_argument(
        "--limit",
        type=int_at_least(0),
        default=None,
        help="run at most this many of the missing cells, >= 0 (default: all)",
    )

    e = p.add_argument_group("execution")
    e.add_argument(
        "--run-dir",
        required=True,
        help="run folder: results.sqlite (the results store), models/ (starting models), report/; several "
        "rem bench processes may share one (each claims the cells it computes)",
    )
    e.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray", "slurm"],
        help="local: cells on this machine (default; see --workers); ray: Ray tasks on a cluster; "
        "slurm: a submitit job array",
    )
    e.add_argument(
        "--workers",
        default="auto",
        help="local: worker processes sharing the cells; auto = one one-thread worker per CPU core on a "
        "CPU device (one on a GPU), at most one per cell (default auto)",
    )
    e.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray instance)",
    )
    e.add_argument("--cpus-per-cell", type=number_in(0), default=1, help="Ray: CPUs reserved per task (default 1)")
    e.add_argument(
        "--gpus-per-cell",
        type=number_in(0, low_open=False),
        default=None,
        help="Ray: GPUs reserved per task (default 1 if --device is cuda, else 0)",
    )
    e.add_argument(
        "--slurm-cluster",
        default=None,
        choices=["slurm", "local"],
        help="submitit back end: slurm (default when sbatch is found) or local processes",
    )
    e.add_argument("--slurm-partition", default=None, help="SLURM partition")
    e.add_argument(
        "--slurm-timeout-min", type=int_at_least(1), default=240, help="time limit of each job in minutes (default 240)"
    )
    e.add_argument("--slurm-cpus", type=int_at_least(1), default=4, help="CPUs per job (default 4)")
    e.add_argument("--slurm-gpus", type=int_at_least(0), default=0, help="GPUs per job (default 0)")
    e.add_argument(
        "--slurm-mem-gb", type=number_in(0), default=None, help="memory per job in GB (default: the cluster's)"
    )
    e.add_argument(
        "--slurm-array-parallelism",
        type=int_at_least(1),
        default=None,
        help="at most this many jobs of the array at once",
    )
    e.add_argument("--slurm-account", default=None, help="SLURM account to charge")
    add_data_options(e, download=False)
    add_device_option(e)
    e.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell (default: record it, go on)")
    e.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    add_quiet_option(e)
    p.set_defaults(func=run)


def given_list(text: str | None, option: str, kind=str) -> tuple | None:
    """A comma-separated option as a tuple without repeats (``None``: not given); an empty list is refused
    (leave the option out for the default)."""
    from rem.bench.grid import parse_list
    from rem.errors import ConfigError

    items = parse_list(text, kind)
    if items is not None and not items:
        raise ConfigError(f"{option} {text!r} lists nothing: name at least one, or leave {option} out for the default")
    return None if items is None else tuple(dict.fromkeys(items))


def grid_from_args(args):
    from rem.bench.grid import Grid

    over = {
        "profile": args.profile,
        "methods": given_list(args.methods, "--methods"),
        "exclude_methods": given_list(args.exclude_methods, "--exclude-methods"),
        "tasks": given_list(args.tasks, "--tasks"),
        "rates": given_list(args.rates, "--rates", float),
        "seeds": given_list(args.seeds, "--seeds", int),
        "pretrain_types": given_list(args.pretrain_types, "--pretrain-types"),
        "dataset": args.dataset,
        "width": args.width,
        "n_corrupt": args.n_corrupt,
        "steps": args.steps,
        "pretrain_steps": args.pretrain_steps,
        "expand_ratio": args.expand_ratio,
        "settings": parse_settings(args.set) or None,
        "relearn": getattr(args, "relearn", None),
    }
    if args.config:
        return Grid.from_file(args.config, **over)
    return Grid(profile="cpu").override(**over)


def dry_run(grid, run_dir) -> int:
    """List the grid's cells, each as stored or to run, and how many are stored; run nothing."""
    from pathlib import Path

    from rem.bench.store import ResultStore

    cells = grid.cells()
    done = set()
    if (Path(run_dir) / "results.sqlite").exists():
        with ResultStore.in_run_dir(run_dir, create=False) as store:
            done = store.done_keys()
    for c in cells:
        print(f"{'stored ' if c.key in done else 'to run '} {c.key}  {c.label()}")
    print(f"{len(cells)} cells, {sum(c.key in done for c in cells)} stored")
    return 0


def executor_options(args) -> dict:
    """The options of the chosen executor (:func:`rem.bench.executors.run_grid`'s keywords)."""
    if args.executor == "local":
        return {"workers": args.workers}
    if args.executor == "ray":
        return {
            "ray_address": args.ray_address,
            "cpus_per_cell": args.cpus_per_cell,
            "gpus_per_cell": args.gpus_per_cell,
        }
    return {
        "cluster": args.slurm_cluster,
        "slurm": {
            "partition": args.slurm_partition,
            "timeout_min": args.slurm_timeout_min,
            "cpus_per_task": args.slurm_cpus,
            "gpus_per_node": args.slurm_gpus,
            "mem_gb": args.slurm_mem_gb,
            "array_parallelism": args.slurm_array_parallelism,
            "account": args.slurm_account,
        },
    }


def run(args) -> int:
    from rem.bench.executors import run_grid
    from rem.output import check_folder
    from rem.runtime import pick_device

    grid = grid_from_args(args)
    pick_device(args.device)  # a device this torch cannot use is refused before any work
    check_folder(args.run_dir, "run folder")  # a run proves it can write there before any work (run_grid)
    if args.dry_run:
        return dry_run(grid, args.run_dir)
    summary = run_grid(
        grid,
        args.run_dir,
        args.executor,
        device=args.device,
        data_dir=args.data_dir,
        progress=not args.quiet,
        fail_fast=args.fail_fast,
        limit=args.limit,
        **executor_options(args),
    )
    print(summary)
    if not args.no_report and summary.skipped + summary.done > 0:
        from rem.report import build_report

        rep = build_report(args.run_dir)
        print(f"report: {rep.html}")
    return 0 if not summary.failed else 1
