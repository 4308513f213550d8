"""``rem demo`` (what ``make demo`` runs): remove a backdoor from a CIFAR-10 model with REM and baselines.

By default the demo *unlearns* and never pretrains: the poisoned starting model ships inside the
package (``rem/assets``, a small ResNet-9 of the ``demo`` profile, checked against its sha256 before
use) and is copied into the run folder's model cache, where the benchmark machinery finds it as if it
had pretrained it. Then REM and a few baselines run on it at discovery rate 0.5 (half of the poisoned
images found), and the demo prints the backdoor's attack success rate (ASR) before and after each
method, the table, and the path of the HTML report. The run goes through ``rem bench``'s store, so
rerunning the command resumes.

``--full`` is the larger ``cpu`` profile, pretrained from scratch first (much longer on a CPU);
``--profile smoke`` runs on generated images. Every check that can fail (run folder, device, the
shipped model, the data set, its download) runs before any cell, so a failure is one line naming
the cause and the fix (exit code 2), never a store of failed cells.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from importlib import resources
from pathlib import Path

from rem.errors import CheckpointError, ConfigError
from rem.profiles import PROFILES

DEMO_PROFILE = PROFILES["demo"]

#: The shipped starting model (package data) and its sha256; rebuilt by ``python -m rem.demo --build``.
STARTER_FILE = "demo-poison-capacity-0.5-seed0.safetensors"
STARTER_SHA256 = "5d75222278b1ce1416879e636ec1bfd02f9e808930397604d053236770bac8c4"

DEMO_METHODS = ("none", "rem", "npo", "eu-4", "potion", "scrub")
FULL_METHODS = ("none", "rem", "npo", "finetune", "scrub", "badt")
TASK, RATE, SEED, PTYPE = "poison", 0.5, 0, "capacity-0.5"

DATA_NAMES = {"cifar10": "CIFAR-10", "svhn": "SVHN", "generated": "generated images"}


def _say(text: str) -> None:
    print(text, flush=True)


def starter_path() -> Path:
    """The shipped starting model's file inside the installed package."""
    return Path(str(resources.files("rem") / "assets" / STARTER_FILE))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_starter() -> Path:
    """The shipped starting model's path, after checking its sha256; a missing or altered file is a
    :class:`~rem.errors.CheckpointError` naming the fix."""
    src = starter_path()
    fix = "reinstall rem (pip install --force-reinstall rem-unlearning), or run `rem demo --full` to pretrain"
    if not src.is_file():
        raise CheckpointError(f"the demo's starting model {src} is missing from the installed package; {fix}")
    if sha256_file(src) != STARTER_SHA256:
        raise CheckpointError(f"the demo's starting model {src} is damaged (its sha256 differs); {fix}")
    return src


def install_starter(spec, run_dir: Path) -> bool:
    """Copy the shipped starting model into the run folder's model cache (sha256-checked); False if it was
    there already. A missing or altered package file is a :class:`~rem.errors.CheckpointError` naming the fix."""
    dest = spec.path(run_dir)
    if dest.is_file():
        return False
    src = check_starter()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    return True


def _choose(args) -> tuple[str, tuple[str, ...]]:
    profile = getattr(args, "profile", None)
    if getattr(args, "full", False):
        if profile not in (None, "cpu"):
            raise ConfigError("--full is the cpu profile; give either --full or --profile")
        return "cpu", FULL_METHODS
    profile = profile or "demo"
    return profile, DEMO_METHODS if profile == "demo" else FULL_METHODS


def preflight(args, name: str):
    """Everything that can fail before the first cell, in order: run folder, device, the shipped model,
    the data (loaded, or downloaded, once: the cells reuse it). Returns (grid-less start spec, device)."""
    from rem.bench.cell import StartSpec, make_cell_task
    from rem.output import check_folder, probe_folder
    from rem.profiles import get_profile
    from rem.runtime import pick_device

    profile = get_profile(name)
    run_dir = check_folder(Path(args.run_dir), "run folder")
    dev = pick_device(args.device)
    spec = StartSpec(profile, PTYPE, TASK, SEED)
    if name == "demo" and not spec.path(run_dir).is_file():
        check_starter()
    if profile.dataset != "generated":
        from rem.data.datasets import load_dataset

        load_dataset(profile.dataset, data_dir=args.data_dir, download=not getattr(args, "no_download", False))
    make_cell_task(spec, args.data_dir)  # the task the cells use (kept in memory for them)
    probe_folder(run_dir, "run folder")  # created, and written to, before the first cell
    if name == "demo":
        install_starter(spec, run_dir)
    return spec, dev


def first_table(markdown: str) -> str:
    """The first Markdown table of ``markdown`` (the report's Table 1)."""
    lines = markdown.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def _asr_line(label: str, metrics: dict | None) -> str:
    from rem.units import percent

    if not metrics or metrics.get("asr") is None:
        return f"  {label:<16}      –"
    extra = ""
    if metrics.get("utility") is not None:
        extra = f"   (clean test accuracy {percent(metrics['utility']):.1f} %)"
    return f"  {label:<16} {percent(metrics['asr']):6.1f} %{extra}"


def run_demo(args) -> int:
    from rem.bench.executors import run_grid
    from rem.bench.grid import Grid
    from rem.bench.store import ResultStore
    from rem.report import build_report
    from rem.units import percent

    t0 = time.time()
    name, methods = _choose(args)
    spec, dev = preflight(args, name)
    profile = spec.profile
    run_dir = Path(args.run_dir)
    data = DATA_NAMES.get(profile.dataset, profile.dataset)
    start = "the shipped starting model" if name == "demo" else "a starting model pretrained first"
    _say(
        f"rem demo: {data} ({name} profile), backdoor (poison) task, half of the poisoned images found "
        f"(discovery rate {RATE}); {start}; methods {', '.join(m for m in methods if m != 'none')}"
    )
    _say(f"results store: {run_dir / 'results.sqlite'} (rerun the same command to resume)")
    failed = 0
    for m in methods:
        grid = Grid(profile=name, methods=(m,), tasks=(TASK,), rates=(RATE,), seeds=(SEED,), pretrain_types=(PTYPE,))
        t = time.time()
        label = "starting model (evaluated)" if m == "none" else m
        _say(f"[{time.time() - t0:5.0f} s] {label} ...")
        summary = run_grid(grid, run_dir, device=dev, data_dir=args.data_dir, progress=not args.quiet)
        with ResultStore.in_run_dir(run_dir, create=False) as store:
            rec = next((r for r in store.records("done") if r["key"] == grid.cells()[0].key), None)
        if summary.failed:
            failed += 1
            err = summary.failed[0][1].strip().splitlines()
            _say(f"           {m} failed: {err[-1] if err else '?'}")
        elif rec is not None:
            met = rec["metrics"] if m != "none" else rec.get("start_metrics") or rec["metrics"]
            asr = "–" if met.get("asr") is None else f"{percent(met['asr']):.1f} %"
            how = "stored earlier" if summary.skipped else f"{time.time() - t:.0f} s"
            _say(f"           ASR {asr}, uxh {percent(met['uxh']):.1f} ({how})")
    report = build_report(run_dir)
    _say("")
    _say(first_table(report.table_md.read_text()))
    with ResultStore.in_run_dir(run_dir, create=False) as store:
        keys = {
            c.key: m
            for m in methods
            for c in Grid(
                profile=name, methods=(m,), tasks=(TASK,), rates=(RATE,), seeds=(SEED,), pretrain_types=(PTYPE,)
            ).cells()
        }
        recs = {keys[r["key"]]: r for r in store.records("done") if r["key"] in keys}
    _say("")
    _say(
        "Backdoor attack success rate (ASR: share of triggered test images of another class that the model "
        "labels as the attacker's class; lower is better):"
    )
    first = next(iter(recs.values()), None)
    _say(_asr_line("starting model", (first or {}).get("start_metrics")))
    for m in methods:
        if m != "none" and m in recs:
            _say(_asr_line(m, recs[m]["metrics"]))
    _say(f"HTML report: {report.html.resolve()}")
    _say(f"rem demo: {time.time() - t0:.0f} s")
    return 1 if failed else 0


def build_starter(out: Path, data_dir=None) -> None:  # pragma: no cover - run by hand when the profile changes
    """Pretrain the demo's starting model (as ``rem bench`` would) and write it to ``out``."""
    import tempfile

    from rem.bench.cell import StartSpec, ensure_start

    spec = StartSpec(DEMO_PROFILE, PTYPE, TASK, SEED)
    with tempfile.TemporaryDirectory() as d:
        rec = ensure_start(spec, d, device="cpu", data_dir=data_dir, progress=True)
        shutil.copyfile(spec.path(d), out)
    print(f"wrote {out}: sha256 {sha256_file(out)}; metrics {rec['metrics']}")


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:2] == ["--build"]:
        build_starter(starter_path())
