"""What one grid cell costs, before versus after a change of rem, in one run (issue 15).

Each method's cell (one task, one discovery rate, seed 0, the profile's starting model) runs as its own
``rem bench`` process twice: once with the *before* source tree (a git revision, checked out into a
temporary worktree) and once with this checkout's. The two runs of a method go side by side, one
thread each, so they share the machine's conditions; the methods run one after another. Every run gets
a fresh run folder holding only a copy of the starting model, so the cell is computed, never skipped.

Per run: the cell's unlearning wall time and peak memory (from its record), and the whole process's
CPU time (user, system) and minor page faults. Per method: the after / before ratios and the largest
metric difference (0 when the arithmetic is unchanged).

    python benchmarks/cell_cost.py --models runs/cpu/models --before 015f50e \
        [--methods rem,retrain,npo,scrub] [--task poison] [--rate 0.5] [--out runs/cell_cost.json]

``--placement`` instead measures thread placement with this checkout: the same two cells as one
process with two threads after the other, versus two one-thread processes side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _proc(src: Path, run_dir: Path, method: str, task: str, rate: float, profile: str, threads: int, env):
    cmd = [sys.executable, "-m", "rem.cli", "bench", "--profile", profile, "--run-dir", str(run_dir)]
    cmd += ["--methods", method, "--tasks", task, "--rates", str(rate), "--seeds", "0", "--quiet", "--no-report"]
    e = {**os.environ, **env, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    out = open(run_dir / "bench.log", "w")
    return subprocess.Popen(cmd, env=e, stdout=out, stderr=subprocess.STDOUT, cwd=run_dir)


def _wait(procs: dict) -> dict:
    """Wait for every process; per name its CPU time and page faults (from wait4), wall time."""
    out, t0 = {}, time.perf_counter()
    pending = dict(procs)
    while pending:
        pid, status, ru = os.wait4(-1, 0)
        for name, p in list(pending.items()):
            if p.pid == pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                out[name] = {
                    "rc": p.returncode,
                    "process_wall_s": time.perf_counter() - t0,
                    "user_s": ru.ru_utime,
                    "sys_s": ru.ru_stime,
                    "minflt": ru.ru_minflt,
                    "maxrss_mb": ru.ru_maxrss / 1024,
                }
                del pending[name]
    return out


def _record(run_dir: Path) -> dict:
    with sqlite3.connect(run_dir / "results.sqlite") as c:
        rows = c.execute("SELECT record FROM records WHERE status='done'").fetchall()
    if len(rows) != 1:
        log = (run_dir / "bench.log").read_text()[-2000:]
        raise SystemExit(f"{run_dir}: expected one finished cell, found {len(rows)}; log:\n{log}")
    return json.loads(rows[0][0])


def _shares(metrics: dict) -> dict:
    """Metrics as shares (records of rem before issue 18 held percent)."""
    pct = any(isinstance(v, float) and v > 1.0 for k, v in metrics.items() if k != "params")
    return {k: (v / 100 if pct and k != "params" else v) for k, v in metrics.items()}


def _fresh(base: Path, name: str, models: Path) -> Path:
    d = base / name
    d.mkdir(parents=True)
    shutil.copytree(models, d / "models")
    return d


def compare(args, before_src: Path, base: Path) -> list[dict]:
    rows = []
    for method in args.methods.split(","):
        dirs = {v: _fresh(base, f"{method}-{v}", args.models) for v in ("before", "after")}
        srcs = {"before": before_src, "after": ROOT / "src"}
        procs = {
            v: _proc(srcs[v], dirs[v], method, args.task, args.rate, args.profile, 1, {}) for v in ("before", "after")
        }
        res = _wait(procs)
        row = {"method": method}
        for v in ("before", "after"):
            if res[v]["rc"] != 0:
                raise SystemExit(f"{method} ({v}) failed:\n{(dirs[v] / 'bench.log').read_text()[-3000:]}")
            rec = _record(dirs[v])
            row[v] = {**res[v], "wall_s": rec["wall_s"], "peak_mem_mb": rec["peak_mem_mb"]}
            row[v]["metrics"] = _shares(rec["metrics"])
        mb, ma = row["before"]["metrics"], row["after"]["metrics"]
        row["max_metric_diff"] = max(abs(ma[k] - mb[k]) for k in mb if k in ma and k != "params")
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    b, a = row["before"], row["after"]
    cpu_b, cpu_a = b["user_s"] + b["sys_s"], a["user_s"] + a["sys_s"]
    return (
        f"{row['method']:<10} cell {b['wall_s']:7.1f} → {a['wall_s']:7.1f} s ({a['wall_s'] / b['wall_s']:.2f}×)  "
        f"process CPU {cpu_b:7.1f} → {cpu_a:7.1f} s (sys {b['sys_s']:.1f} → {a['sys_s']:.1f})  "
        f"minflt {b['minflt'] / 1e6:.2f}M → {a['minflt'] / 1e6:.2f}M  "
        f"peak {b['peak_mem_mb']:.0f} → {a['peak_mem_mb']:.0f} MB  "
        f"max |Δ metric| {row['max_metric_diff']:.4f}"
    )


def placement(args, base: Path) -> dict:
    """Two cells (two tasks) as one two-thread process after the other vs two one-thread processes at once."""
    method, (t1, t2) = args.methods.split(",")[0], ("poison", "random")
    src = ROOT / "src"
    t0 = time.perf_counter()
    for t in (t1, t2):
        d = _fresh(base, f"two-threads-{t}", args.models)
        r = _wait({"p": _proc(src, d, method, t, args.rate, args.profile, 2, {})})["p"]
        if r["rc"] != 0:
            raise SystemExit((d / "bench.log").read_text()[-3000:])
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    dirs = {t: _fresh(base, f"one-thread-{t}", args.models) for t in (t1, t2)}
    res = _wait({t: _proc(src, dirs[t], method, t, args.rate, args.profile, 1, {}) for t in (t1, t2)})
    if any(r["rc"] for r in res.values()):
        raise SystemExit("a one-thread run failed")
    side = time.perf_counter() - t0
    out = {"method": method, "two_threads_in_turn_s": serial, "one_thread_side_by_side_s": side}
    print(
        f"{method}: 2 cells, one 2-thread process after the other {serial:.1f} s; "
        f"two 1-thread processes side by side {side:.1f} s (throughput ×{serial / side:.2f})",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True, help="a run folder's models/ (the starting models)")
    ap.add_argument("--before", default="HEAD", help="git revision of the 'before' rem (default HEAD)")
    ap.add_argument("--methods", default="rem,retrain,npo,scrub")
    ap.add_argument("--task", default="poison")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--placement", action="store_true", help="measure thread placement instead")
    ap.add_argument("--out", type=Path, help="also write the results as JSON")
    args = ap.parse_args()
    if not args.models.is_dir():
        raise SystemExit(f"no models folder {args.models} (run `rem bench` once to pretrain the starting models)")
    base = Path(tempfile.mkdtemp(prefix="rem-cell-cost-"))
    try:
        if args.placement:
            result = {"placement": placement(args, base)}
        else:
            wt = base / "before-tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), args.before], check=True)
            try:
                result = {"before": args.before, "rows": compare(args, wt / "src", base)}
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], check=False)
        result.update(profile=args.profile, task=args.task, rate=args.rate, cpu=os.cpu_count())
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
