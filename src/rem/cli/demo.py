"""`rem demo` (what `make demo` runs): REM against the strongest baselines on CIFAR-10, two CPU cores.

The `cpu` profile cut down to one task of high regularity (poison) at a partial discovery rate (0.5),
with REM, NPO, fine-tuning, SCRUB and Bad Teacher next to the starting model. Runs through the same
benchmark machinery as `rem bench` (so it resumes if interrupted), then prints the table and the path
of the HTML report, with the backdoor's attack success rate (ASR) before and after each method. An
earlier measurement on this project's two-core machine took about 20 CPU-minutes, most of it pretraining
the starting model; ``--profile smoke`` (generated images) takes a minute or two.
"""

from __future__ import annotations

from pathlib import Path

from rem.cli.args import add_common

DEMO_METHODS = ("none", "rem", "npo", "finetune", "scrub", "badt")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: REM against the strongest baselines on CIFAR-10 (cpu profile)",
        description="Pretrain on the cpu profile of CIFAR-10 and compare REM with baselines.",
    )
    p.add_argument(
        "--run-dir", default="runs/demo", help="folder of the demo's results store and report (default runs/demo)"
    )
    p.add_argument("--profile", default="cpu", help="settings profile (default cpu; smoke for a quick look)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from rem.bench.executors import run_grid
    from rem.bench.grid import Grid
    from rem.bench.store import ResultStore
    from rem.output import probe_folder
    from rem.profiles import get_profile
    from rem.report import build_report
    from rem.runtime import pick_device
    from rem.units import percent

    name = getattr(args, "profile", "cpu")
    profile = get_profile(name)
    grid = Grid(profile=name, methods=DEMO_METHODS, tasks=("poison",), rates=(0.5,), seeds=(0,))
    pick_device(args.device)
    run_dir = probe_folder(Path(args.run_dir), "run folder")
    data = {"cifar10": "CIFAR-10", "svhn": "SVHN", "generated": "generated images"}.get(
        profile.dataset, profile.dataset
    )
    print(f"rem demo: {data} ({name} profile), poison task, discovery rate 0.5, methods {', '.join(DEMO_METHODS)}")
    print(f"results store: {run_dir / 'results.sqlite'} (rerun to resume)", flush=True)
    summary = run_grid(grid, run_dir, device=args.device, data_dir=args.data_dir, progress=not args.quiet)
    report = build_report(run_dir)
    print(report.table_md.read_text())
    with ResultStore.in_run_dir(run_dir, create=False) as store:
        cells = {c.key for c in grid.cells()}
        recs = [r for r in store.records() if r["key"] in cells]
    print(
        "Backdoor attack success rate (ASR: share of triggered test images of another class predicted as the "
        "attacker's label; lower is better):"
    )
    start = next((r.get("start_metrics") or {} for r in recs), {})
    if start.get("asr") is not None:
        print(f"  {'starting model':<16} {percent(start['asr']):6.1f} %")
    for m in DEMO_METHODS:
        r = next((r for r in recs if r["method"] == m), None)
        if r is not None and m != "none" and r["metrics"].get("asr") is not None:
            print(f"  {m:<16} {percent(r['metrics']['asr']):6.1f} %")
    print(f"HTML report: {report.html.resolve()}")
    return 1 if getattr(summary, "failed", 0) else 0
