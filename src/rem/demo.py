"""`rem demo` (what `make demo` runs): REM against the strongest baselines on CIFAR-10, two CPU cores.

The `cpu` profile cut down to one task of high regularity (poison) at a partial discovery rate (0.5),
with REM, NPO, fine-tuning, SCRUB and Bad Teacher next to the starting model. Runs through the same
benchmark machinery as `rem bench` (so it resumes if interrupted), then prints the table and the path
of the HTML report. About 15 minutes on two CPU cores, most of it pretraining the starting model.
"""

from __future__ import annotations

from pathlib import Path

DEMO_METHODS = ("none", "rem", "npo", "finetune", "scrub", "badt")


def run_demo(args) -> int:
    from rem.bench.executors import run_grid
    from rem.bench.grid import Grid
    from rem.report import build_report

    grid = Grid(profile=getattr(args, "profile", "cpu"), methods=DEMO_METHODS, tasks=("poison",), rates=(0.5,),
                seeds=(0,))
    run_dir = Path(args.run_dir)
    print(f"rem demo: CIFAR-10 (cpu profile), poison task, discovery rate 0.5, methods {', '.join(DEMO_METHODS)}")
    print(f"results store: {run_dir / 'results.sqlite'} (rerun to resume)")
    summary = run_grid(grid, run_dir, device=args.device, data_dir=args.data_dir, progress=not args.quiet)
    report = build_report(run_dir)
    print(report.table_md.read_text())
    print(f"HTML report: {report.html.resolve()}")
    return 1 if getattr(summary, "failed", 0) else 0
