"""The benchmark machinery: grid, results store, executors (local, Ray, submitit), resume, report.

Tiny grids on the smoke profile with the cheapest methods (none, finetune), one rate and few steps.
Runs that are compared with each other use one CPU thread each, so their metrics are bit-identical.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rem.bench import Grid, ResultStore, run_grid
from rem.bench.store import SCHEMA_VERSION
from rem.cli.settings import parse_settings
from rem.errors import ConfigError, RemError, StoreError
from rem.methods import method_names

TINY = {"profile": "smoke", "methods": ("none", "finetune"), "rates": (0.5,), "pretrain_steps": 20, "steps": 4}


def tiny_grid(**kw) -> Grid:
    return Grid(**{**TINY, "tasks": ("poison", "random"), **kw})


def _metrics(run_dir) -> dict:
    with ResultStore.in_run_dir(run_dir, create=False) as s:
        return {r["key"]: r["metrics"] for r in s.records()}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, one_thread):
    """The tiny grid run with the local executor (shared by the tests that compare executors)."""
    d = tmp_path_factory.mktemp("local")
    summary = run_grid(tiny_grid(), d, progress=False)
    return d, summary


# --- grid -----------------------------------------------------------------------------------------


def test_grid_cells_and_keys():
    g = tiny_grid()
    cells = g.cells()
    assert len(cells) == 2 * 2 * 1 * 1  # methods × tasks × rates × seeds (one pretraining type)
    keys = [c.key for c in cells]
    assert len(set(keys)) == len(keys)
    assert keys == [c.key for c in tiny_grid().cells()]  # stable
    assert set(keys).isdisjoint(c.key for c in tiny_grid(steps=5).cells())  # any setting changes the key
    # cells of one starting model share its key; every method gets the profile's recipe and the seed
    by_start = {}
    for c in cells:
        by_start.setdefault(c.start_key, set()).add(c.method)
    assert all(v == {"none", "finetune"} for v in by_start.values()) and len(by_start) == 2
    ft = next(c for c in cells if c.method == "finetune")
    assert ft.overrides["steps"] == 4 and ft.overrides["seed"] == 0 and ft.method_config()["steps"] == 4
    assert ft.config()["profile"]["pretrain"]["steps"] == 20
    # a cell's key does not depend on which other rates, seeds or pretraining types the grid holds
    wider = {
        (c.method, c.task): c.key
        for c in tiny_grid(rates=(0.1, 0.5), seeds=(0, 1)).cells()
        if c.rate == 0.5 and c.seed == 0
    }
    assert wider == {(c.method, c.task): c.key for c in cells}


def test_grid_defaults_and_overrides(tmp_path):
    g = Grid(profile="smoke")
    names = g.method_names()
    assert names == method_names() and "none" in names and "finetune" in names
    assert "retrain" not in Grid(profile="smoke", exclude_methods="retrain").method_names()
    with pytest.raises(ConfigError, match="unknown method"):
        Grid(profile="smoke", methods=("nope",)).cells()
    with pytest.raises(ConfigError, match="unknown task"):
        Grid(tasks=("poison", "bad"))
    with pytest.raises(ConfigError, match="rates"):
        Grid(rates=(0.0,))
    # settings: "*" reaches only methods that have the field, a named one must exist in that method
    g = Grid(
        profile="smoke",
        methods=("none", "rem"),
        rates=(1.0,),
        tasks=("poison",),
        expand_ratio=0.5,
        settings=parse_settings(["rem.beta=0.5", "gamma=0.3"]),
    )
    cfg = {c.method: c.method_config() for c in g.cells()}
    assert cfg["rem"]["beta"] == 0.5 and cfg["rem"]["expand_ratio"] == 0.5 and cfg["rem"]["gamma"] == 0.3
    assert "expand_ratio" not in cfg["none"] and cfg["none"]["gamma"] == 0.3
    with pytest.raises(ConfigError):
        Grid(profile="smoke", methods=("none",), settings={"none": {"beta": 1.0}}).cells()
    # config files, JSON and TOML, with CLI-style overrides on top
    (tmp_path / "g.json").write_text(
        json.dumps({"profile": "smoke", "methods": ["none"], "rates": [0.5, 1.0], "pretrain-types": ["capacity-0.5"]})
    )
    gj = Grid.from_file(tmp_path / "g.json", rates=(1.0,))
    assert gj.methods == ("none",) and gj.rates == (1.0,) and gj.pretrain_types == ("capacity-0.5",)
    (tmp_path / "g.toml").write_text('profile = "smoke"\nmethods = ["none", "rem"]\n[settings.rem]\nbeta = 0.25\n')
    gt = Grid.from_file(tmp_path / "g.toml")
    assert gt.settings == {"rem": {"beta": 0.25}}
    (tmp_path / "bad.json").write_text('{"profile": "smoke", "colour": 1}')
    with pytest.raises(ConfigError, match="colour"):
        Grid.from_file(tmp_path / "bad.json")


# --- store ----------------------------------------------------------------------------------------


def test_store_upsert_never_duplicates(tmp_path):
    with ResultStore.in_run_dir(tmp_path) as s:
        cfg = {"method": "m", "pretrain_type": "etd", "task": {"kind": "poison"}, "rate": 0.5, "seed": 0}
        assert s.put_failure(cfg, "k1", "Traceback: boom")
        assert s.count("failed") == 1 and s.done_keys() == set()
        rec = {"key": "k1", "method": "m", "task": "poison", "rate": 0.5, "seed": 0}
        assert s.put({**rec, "metrics": {"uxh": 1}})
        assert not s.put({**rec, "metrics": {}})
        assert not s.put_failure(cfg, "k1", "late failure")  # a finished cell is never replaced
        assert s.count(None) == 1 and s.get("k1")["metrics"] == {"uxh": 1}


def test_store_refuses_another_key_version_or_the_percent_schema(tmp_path):
    """A store keyed by another key function, or holding metrics in percent (schema 1), is refused with its
    version named, before anything is written."""
    with ResultStore.in_run_dir(tmp_path) as s:
        s.set_meta("key_version", "1")
    with pytest.raises(StoreError, match="key version 1,"):
        ResultStore.in_run_dir(tmp_path)
    with pytest.raises(StoreError, match="key version 1,"):  # before any work
        run_grid(tiny_grid(), tmp_path, progress=False)
    with ResultStore.in_run_dir(tmp_path / "b") as s:
        s.set_meta("schema_version", "1")
    with pytest.raises(StoreError, match=r"results schema 1 \(metrics in percent\)"):
        ResultStore.in_run_dir(tmp_path / "b")


def test_store_refuses_other_schema_or_kind(tmp_path):
    with ResultStore.in_run_dir(tmp_path):
        pass
    db = tmp_path / "results.sqlite"
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value=? WHERE name='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer rem"):
        ResultStore(db)
    with pytest.raises(StoreError, match="newer rem"):  # before any work
        run_grid(tiny_grid(), tmp_path, progress=False)
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value='other-tool' WHERE name='kind'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a rem results store"):
        ResultStore(db)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a rem results store"):
        ResultStore(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        ResultStore(junk)
    with pytest.raises(StoreError, match="no results store"):
        ResultStore(tmp_path / "missing" / "results.sqlite", create=False)


def test_report_from_records(tmp_path):
    """Table 1 maths (mean ± SEM, sorted by uxh) and the warning when two grids share a run folder."""
    from rem.report import build_report
    from rem.report.tables import mean_sem

    m, sem, n = mean_sem([1.0, 2.0, 3.0, float("nan")])
    assert (m, n) == (2.0, 3) and sem == pytest.approx((1 / 3) ** 0.5)
    with ResultStore.in_run_dir(tmp_path) as s:
        for i, (method, uxh) in enumerate([("a", 0.1), ("a", 0.3), ("b", 0.5), ("b", 0.5)]):
            s.put(
                {
                    "key": f"k{i}",
                    "method": method,
                    "pretrain_type": "etd",
                    "task": "random",
                    "rate": 0.5,
                    "seed": i % 2,
                    "metrics": {"uxh": uxh, "healed": uxh, "utility": 1.0},
                    "start_key": "s",
                    "start_metrics": {"uxh": 0.05, "healed": 0.05, "utility": 1.0},
                }
            )
    rep = build_report(tmp_path)
    assert [r["method"] for r in rep.table] == ["b", "a"] and rep.table[1]["uxh_mean"] == pytest.approx(0.2)
    assert rep.table[1]["uxh_sem"] == pytest.approx(0.1) and not rep.warning  # shares, as the records
    md = rep.table_md.read_text()
    assert "| a | etd | 2 | 2 | 20.00 ± 10.00 | 100.00 ± 0.00 | 20.00 ± 10.00 | 20.00 ± 10.00 |" in md  # percent
    assert "a,etd,2,random,20.0,10.0,100.0,0.0,20.0,10.0,2,20.0,10.0," in rep.table_csv.read_text()
    assert "| a | etd | 5.00 | 20.00 ± 10.00 |" in md  # per rate: mean ± SEM over the two seeds
    assert "a,etd,random,low,0.5,1,30.0,30.0,100.0," in rep.cells_csv.read_text()
    with ResultStore.in_run_dir(tmp_path) as s:  # the same cell again, from another grid's settings
        s.put(
            {
                "key": "other",
                "method": "a",
                "pretrain_type": "etd",
                "task": "random",
                "rate": 0.5,
                "seed": 0,
                "metrics": {"uxh": 0.01, "healed": 0.01, "utility": 1.0},
            }
        )
    rep = build_report(tmp_path)
    assert "several records" in rep.warning and "several records" in rep.html.read_text()


def test_report_is_byte_identical_from_the_same_cells(tmp_path, local_run):
    """`rem report` twice on the same stored cells writes the same bytes (tables, CSV, HTML, figures)."""
    from rem.report import build_report

    a, b = tmp_path / "a", tmp_path / "b"
    build_report(local_run[0], a)
    time.sleep(1.1)  # a clock in the output would now differ
    build_report(local_run[0], b)
    files = sorted(p.name for p in a.iterdir())
    assert "report.html" in files and files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_report_rates_and_collapses(tmp_path):
    """uxh per task and rate, and the collapse rule: < 5 uxh points above the start, or > 10 utility below."""
    from rem.report import build_report

    start = {"uxh": 0.05, "healed": 0.0625, "utility": 0.8}
    cells = [
        ("none", 0.5, 0.05, 0.8),
        ("a", 0.5, 0.099, 0.8),
        ("a", 1.0, 0.4, 0.69),
        ("b", 0.5, 0.1, 0.7),  # on both thresholds: not a collapse (0.8 - 0.1 is 0.7000000000000001)
        ("b", 1.0, 0.3, 0.75),
    ]
    with ResultStore.in_run_dir(tmp_path) as s:
        for i, (method, rate, uxh, util) in enumerate(cells):
            s.put(
                {
                    "key": f"k{i}",
                    "method": method,
                    "pretrain_type": "capacity-0.5",
                    "task": "random",
                    "rate": rate,
                    "seed": 0,
                    "metrics": {"uxh": uxh, "healed": uxh, "utility": util},
                    "start_key": "s",
                    "start_metrics": start,
                }
            )
    rep = build_report(tmp_path)
    got = {e["method"]: [(c["rate"], c["reasons"]) for c in e["collapsed"]] for e in rep.collapses}
    assert got == {"a": [(0.5, ["no healing"]), (1.0, ["utility"])], "b": []}  # `none` is not judged
    md = rep.table_md.read_text()
    assert "| a | capacity-0.5 | 2 / 2 | random 0.5 (no healing); random 1 (utility) |" in md
    assert "| b | capacity-0.5 | 0 / 2 | none |" in md
    assert "| a | capacity-0.5 | 5.00 | 9.90 | 40.00 |" in md  # start, rate 0.5, rate 1
    assert "Where methods collapse" in rep.html.read_text()


def test_report_split_by_makes_a_setting_part_of_the_row(tmp_path):
    """--split-by steps: cells of two budgets are two rows (averaged together, with a warning, without it)."""
    from rem.report import build_report

    with ResultStore.in_run_dir(tmp_path) as s:
        for i, (method, mc, uxh) in enumerate(
            [("rem", {"steps": 100}, 0.4), ("rem", {"steps": 250}, 0.2), ("none", {}, 0.1)]
        ):
            s.put(
                {
                    "key": f"k{i}",
                    "method": method,
                    "pretrain_type": "full",
                    "task": "poison",
                    "rate": 0.5,
                    "seed": 0,
                    "method_config": mc,
                    "metrics": {"uxh": uxh, "healed": uxh, "utility": 1.0},
                }
            )
    split = build_report(tmp_path, tmp_path / "split", split_by=("steps",))
    assert {r["method"]: r["uxh_mean"] for r in split.table} == pytest.approx(
        {"rem [steps=100]": 0.4, "rem [steps=250]": 0.2, "none": 0.1}
    )
    assert not split.warning
    mixed = build_report(tmp_path, tmp_path / "mixed")
    assert {r["method"]: r["uxh_mean"] for r in mixed.table} == pytest.approx({"rem": 0.3, "none": 0.1})
    assert "averaged together" in mixed.warning


def test_report_separates_expansion_ratios(tmp_path):
    """REM cells with another extra-capacity ratio (or soft masks) are their own row, not averaged in."""
    from rem.report import build_report

    with ResultStore.in_run_dir(tmp_path) as s:
        for i, (mc, uxh) in enumerate(
            [
                ({"expand_ratio": 1.0}, 0.4),
                ({"expand_ratio": 0.25}, 0.2),
                ({"expand_ratio": 1.0, "soft_mask": True}, 0.1),
            ]
        ):
            s.put(
                {
                    "key": f"k{i}",
                    "method": "rem",
                    "pretrain_type": "full",
                    "task": "poison",
                    "rate": 0.5,
                    "seed": 0,
                    "method_config": mc,
                    "metrics": {"uxh": uxh, "healed": uxh, "utility": 1.0},
                }
            )
    rep = build_report(tmp_path)
    assert {r["method"]: r["uxh_mean"] for r in rep.table} == {
        "rem": 0.4,
        "rem (r=0.25)": 0.2,
        "rem (soft mask)": 0.1,
    }
    assert not rep.warning
    with ResultStore.in_run_dir(tmp_path) as s:
        s.put(
            {
                "key": "n",
                "method": "none",
                "pretrain_type": "capacity-0.5",
                "task": "poison",
                "rate": 0.5,
                "seed": 0,
                "method_config": {},
                "metrics": {"uxh": 0.05, "healed": 0.05, "utility": 1.0},
            }
        )
    rep = build_report(tmp_path, where={"*": {"expand_ratio": 1}})  # methods without a ratio pass
    assert {r["method"] for r in rep.table} == {"rem", "rem (soft mask)", "none"}
    rep = build_report(tmp_path, pretrain_types=["capacity-0.5"])
    assert [r["method"] for r in rep.table] == ["none"]
    with pytest.raises(StoreError, match="pretraining types"):
        build_report(tmp_path, pretrain_types=["etd"])


# --- local executor, end to end -------------------------------------------------------------------


def test_smoke_grid_end_to_end(local_run):
    from rem.report import build_report

    d, summary = local_run
    assert summary.complete and summary.done == 4 and summary.skipped == 0
    with ResultStore.in_run_dir(d) as s:
        recs = s.records()
        models = s.models()
    assert len(recs) == 4 and len(models) == 2
    assert sorted(p.name for p in (d / "models").iterdir()) == sorted(Path(m["path"]).name for m in models)
    for r in recs:
        want = {"healed", "healed_test", "utility", "uxh", "forget_acc", "test_acc", "params"}
        assert want <= r["metrics"].keys()
        assert all(0 <= v <= 1 for k, v in r["metrics"].items() if k != "params"), r["metrics"]  # shares
        assert r["metrics"]["uxh"] == pytest.approx(r["metrics"]["healed"] * r["metrics"]["utility"])
        assert r["split_hash"] and r["env"]["torch"] and r["wall_s"] >= 0 and "peak_mem_mb" in r
        assert r["config"]["method_config"] == r["method_config"] and r["n_forget"] == 25
        assert isinstance(r["history"], list)
        if r["method"] == "none":  # the starting model as deployed
            for k in ("healed", "utility", "uxh"):
                assert r["metrics"][k] == pytest.approx(r["start_metrics"][k])
    assert local_run[1].pretrain[0] == 2  # the two starting models (poison, random), pretrained by this run
    again = run_grid(tiny_grid(), d, progress=False)
    assert again.skipped == 4 and again.done == 0 and again.pretrain[0] == 0
    rep = build_report(d)
    for p in (rep.html, rep.table_md, rep.table_csv, rep.cells_csv, *rep.heatmaps.values()):
        assert p.is_file() and p.stat().st_size > 0
    assert set(rep.heatmaps) == {"uxh", "healed", "utility"}
    html = rep.html.read_text()
    assert html.count("data:image/png;base64,") == 3 and "<img" in html
    assert "http" not in html.split("<body>")[1]  # self-contained: nothing fetched
    b64 = html.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    md = rep.table_md.read_text()
    assert "| finetune |" in md and "| none |" in md and "±" in md
    assert rep.table_csv.read_text().splitlines()[0].startswith("method,pretrain_type,cells")


def test_failed_cell_is_recorded_and_retried(tmp_path, monkeypatch, one_thread):
    from rem.methods import REGISTRY, Method

    class Explode(Method):
        name = "test-explode"
        summary = "raises (test only)"

        def _unlearn(self, model, task, forget_idx, ctx, history):
            raise RuntimeError("boom")

    monkeypatch.setitem(REGISTRY, "test-explode", Explode)
    g = Grid(**{**TINY, "methods": ("none", "test-explode"), "tasks": ("poison",)})
    summary = run_grid(g, tmp_path, progress=False)
    assert summary.done == 1 and len(summary.failed) == 1 and "boom" in summary.failed[0][1]
    with ResultStore.in_run_dir(tmp_path) as s:
        assert s.count("done") == 1 and s.count("failed") == 1
        assert "RuntimeError: boom" in s.records("failed")[0]["error"]
    with pytest.raises(RemError, match="fail-fast"):
        run_grid(g, tmp_path, progress=False, fail_fast=True)  # the failed cell is retried, not skipped


def _read_into(stream, buf: bytearray) -> None:
    while True:
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            return
        buf.extend(chunk)


@pytest.mark.slow
def test_resume_after_sigkill_at_random_moments(tmp_path, one_thread):
    """Kill `rem bench` (SIGKILL) six times at random moments, during pretraining and inside cells (found
    from its live bars), resuming each time; then finish it. Every cell is stored once, a record stored
    before a kill is never changed, and the results equal an uninterrupted run's, bit for bit."""
    import random
    import threading

    run_dir = tmp_path / "run"
    grid = Grid(profile="smoke", methods=("none", "finetune"), rates=(0.5,), pretrain_steps=150, steps=60)
    args = [
        sys.executable,
        "-m",
        "rem",
        "bench",
        "--profile",
        "smoke",
        "--run-dir",
        str(run_dir),
        "--methods",
        "none,finetune",
        "--rates",
        "0.5",
        "--tasks",
        "poison,interclass,random",
        "--pretrain-steps",
        "150",
        "--steps",
        "60",
        "--device",
        "cpu",
        "--no-report",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REM_PROGRESS": "1"}
    rng = random.Random(14)
    kills, seen = [], {}
    for target in ("pretrain", "pretrain", "finetune", "pretrain", "finetune", "finetune"):
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        buf = bytearray()
        reader = threading.Thread(target=_read_into, args=(proc.stderr, buf), daemon=True)
        reader.start()
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and target.encode() not in buf:
            time.sleep(0.01)
        if proc.poll() is None:
            time.sleep(rng.uniform(0.0, 0.3))  # a random moment inside the pretraining or the cell
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        kills.append((target, proc.returncode))
        if db_exists := (run_dir / "results.sqlite").is_file():
            with ResultStore.in_run_dir(run_dir, create=False) as s:
                for r in s.records():
                    seen.setdefault(r["key"], r)
        assert db_exists or target == "pretrain"
    killed = [t for t, rc in kills if rc == -signal.SIGKILL]
    assert len(killed) >= 5 and "pretrain" in killed and "finetune" in killed, kills
    summary = run_grid(grid, run_dir, device="cpu", progress=False)
    total = len(grid.cells())
    assert summary.complete and summary.skipped + summary.done == total
    with ResultStore.in_run_dir(run_dir) as s:
        after = {r["key"]: r for r in s.records()}
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert s.count(None) == total and not s.conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    assert set(after) == {c.key for c in grid.cells()}
    for k, r in seen.items():  # kept as written, not recomputed
        assert after[k]["finished_at"] == r["finished_at"] and after[k]["metrics"] == r["metrics"]
    ref = tmp_path / "ref"
    run_grid(grid, ref, device="cpu", progress=False)
    assert _metrics(run_dir) == _metrics(ref)


def test_claimed_cells_are_left_to_their_live_runner(tmp_path, one_thread):
    """A cell another live `rem bench` claimed is not computed twice; a dead runner's claim is taken over."""
    import socket

    g = tiny_grid(tasks=("poison",))
    cells = g.cells()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with ResultStore.in_run_dir(tmp_path) as s:
            assert s.claim(cells[1].key)  # this process may claim; then hand it to the other one
            s.conn.execute("UPDATE claims SET pid=? WHERE key=?", (other.pid, cells[1].key))
            assert s.claimed_elsewhere(cells[1].key) and not s.claim(cells[1].key)
        summary = run_grid(g, tmp_path, progress=False)
        assert summary.done == 1 and summary.elsewhere == 1 and not summary.complete
        assert "left to another rem bench" in str(summary)
    finally:
        other.kill()
        other.wait()
    with ResultStore.in_run_dir(tmp_path) as s:
        row = s.conn.execute("SELECT pid, host FROM claims WHERE key=?", (cells[1].key,)).fetchone()
        assert row == (other.pid, socket.gethostname()) and not s.claimed_elsewhere(cells[1].key)  # dead: stale
    summary = run_grid(g, tmp_path, progress=False)
    assert summary.done == 1 and summary.skipped == 1 and summary.complete


@pytest.mark.slow
def test_two_runners_on_one_run_folder_share_the_cells(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "rem",
        "bench",
        "--profile",
        "smoke",
        "--run-dir",
        str(run_dir),
        "--methods",
        "none,finetune",
        "--rates",
        "0.5,1",
        "--tasks",
        "poison,random",
        "--pretrain-steps",
        "40",
        "--steps",
        "20",
        "--device",
        "cpu",
        "--quiet",
        "--no-report",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    import re

    run_now = [int(re.search(r"(\d+) run now", o).group(1)) for o in outs]
    assert sum(run_now) == 8, outs  # each cell computed by exactly one of them
    with ResultStore.in_run_dir(run_dir) as s:
        assert s.count("done") == 8 and s.count(None) == 8


def test_local_workers_share_the_cells_and_count_them(tmp_path, local_run):
    """workers=2: two processes (this one and a spawned one) split the grid through the store's claims;
    the summary counts every cell once and the records equal a one-process run's (one thread each)."""
    from rem.bench.executors.local import cpu_cores

    summary = run_grid(tiny_grid(), tmp_path, progress=False, workers=2)
    assert summary.done == summary.total == 4 and summary.elsewhere == 0 and not summary.failed, str(summary)
    assert sum(int(c[0]) for c in summary.cost.values()) == 4
    assert summary.pretrain[0] == 2  # pretrained by either process: both counted once
    if cpu_cores() // 2 == 1:  # the worker ran at one thread, as local_run did
        assert _metrics(tmp_path) == _metrics(local_run[0])


def test_workers_setting():
    from rem.bench.executors.local import cpu_cores, resolve_workers

    assert resolve_workers("auto", "cpu", 100) == cpu_cores()
    assert resolve_workers("auto", "cpu", 1) == 1
    assert resolve_workers(3, "cpu", 2) == 2
    for bad in (0, -1, "many"):
        with pytest.raises(ConfigError, match="workers"):
            resolve_workers(bad, "cpu", 4)


def test_damaged_cached_start_model_is_pretrained_again_and_said(tmp_path, capfd, one_thread):
    from rem.checkpoint import load_checkpoint

    run_grid(tiny_grid(tasks=("poison",), methods=("none",)), tmp_path, progress=False)
    (p,) = (tmp_path / "models").glob("*.safetensors")
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0xFF
    p.write_bytes(bytes(raw))
    capfd.readouterr()
    summary = run_grid(tiny_grid(tasks=("poison",), methods=("none",), rates=(1.0,)), tmp_path, progress=False)
    err = capfd.readouterr().err
    assert summary.complete and summary.done == 1
    assert p.name in err and "damaged" in err and "pretraining it again" in err
    load_checkpoint(p)  # replaced by a sound file


# --- distributed executors ------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path, local_run):
    ray = pytest.importorskip("ray")
    local_dir, _ = local_run
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = run_grid(tiny_grid(), tmp_path, "ray", progress=False, cpus_per_cell=1)
    finally:
        ray.shutdown()
    assert summary.complete and summary.done == 4
    assert len(list((tmp_path / "models").glob("*.safetensors"))) == 2
    assert _metrics(tmp_path) == _metrics(local_dir)


@pytest.mark.slow
def test_slurm_executor_local_matches_local(tmp_path, local_run):
    pytest.importorskip("submitit")
    local_dir, _ = local_run
    g = tiny_grid(tasks=("poison",))
    summary = run_grid(g, tmp_path, "slurm", progress=False, cluster="local", slurm={"cpus_per_task": 1}, poll_s=0.2)
    assert summary.complete and summary.done == 2, summary
    got, ref = _metrics(tmp_path), _metrics(local_dir)
    assert got and got == {k: ref[k] for k in got}
    assert not list((tmp_path / "incoming").glob("*.json"))  # moved into the store


def test_missing_engine_says_what_to_install(tmp_path, monkeypatch, local_run):
    local_dir, _ = local_run
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    g = tiny_grid(rates=(1.0,), tasks=("poison",))  # not yet stored, so the executor is really called
    with pytest.raises(ConfigError, match=r"pip install 'rem\[ray\]'"):
        run_grid(g, tmp_path, "ray", progress=False)
    with pytest.raises(ConfigError, match=r"pip install 'rem\[slurm\]'"):
        run_grid(g, tmp_path, "slurm", progress=False)
    with pytest.raises(ConfigError, match="executor"):
        run_grid(g, tmp_path, "dask", progress=False)


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_bench_report(local_run, tmp_path, capsys):
    from rem.cli import build_parser, main

    d, _ = local_run
    base = [
        "bench",
        "--profile",
        "smoke",
        "--run-dir",
        str(d),
        "--methods",
        "none,finetune",
        "--rates",
        "0.5",
        "--tasks",
        "poison,random",
        "--pretrain-steps",
        "20",
        "--steps",
        "4",
        "--quiet",
    ]
    assert main([*base, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells, 4 stored" in out
    assert main([*base, "--no-report"]) == 0  # all stored: nothing to run
    assert "4 already stored, 0 run now" in capsys.readouterr().out
    assert main(["report", "--run-dir", str(d), "--out", str(tmp_path / "rep"), "--metrics", "uxh"]) == 0
    assert (tmp_path / "rep" / "report.html").is_file() and (tmp_path / "rep" / "heatmap_uxh.png").is_file()
    assert main(["report", "--run-dir", str(tmp_path / "nothing")]) == 2  # a clear error, not a traceback
    assert "no results store" in capsys.readouterr().err
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("bench", "report"):
        for act in sub.choices[name]._actions:
            assert act.help, f"rem {name} {act.option_strings} has no help text"


def test_report_draws_redirection_curve_from_rem_history(tmp_path):
    """rem report draws REM's per-round track_* history per task (Fig. 5); none without it."""
    from rem.report import build_report
    from rem.report.curves import curve_cells

    def rec(key, method, task, rate, history):
        return {
            "key": key,
            "method": method,
            "pretrain_type": "capacity-0.5",
            "task": task,
            "rate": rate,
            "seed": 0,
            "metrics": {"uxh": 0.01, "healed": 0.01, "utility": 1.0},
            "history": history,
        }

    rounds = [
        {
            "round": i,
            "track_healed": 0.1 * i,
            "track_utility": 0.7,
            "track_acc_drop_f": 0.9 - 0.3 * i,
            "track_acc_mask_f": 0.2 * i,
        }
        for i in range(3)
    ] + [{"best_round": 2, "best_proxy": 0.5}]
    with ResultStore.in_run_dir(tmp_path) as s:
        s.put(rec("a", "npo", "random", 0.5, [{"epoch": 0}]))
        rep = build_report(tmp_path)
        assert "redirection" not in rep.heatmaps
        s.put(rec("b", "rem", "random", 0.5, rounds))
        s.put(rec("c", "rem", "random", 1.0, rounds[:1]))
        s.put(rec("d", "rem", "poison", 0.1, rounds))
    rep = build_report(tmp_path)
    png = rep.heatmaps["redirection"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "Fig. 5" in rep.html.read_text()
    with ResultStore.in_run_dir(tmp_path) as s:
        cells = curve_cells(s.records("done"))
    assert cells["random"]["key"] == "b" and cells["poison"]["key"] == "d" and "interclass" not in cells


def test_report_html_is_readable(tmp_path):
    """Issue 14, item 13: heatmaps fit a normal window with 10-point numbers, collapse cells are marked,
    text columns are left-aligned."""
    import io

    from matplotlib.image import imread

    from rem.report import build_report
    from rem.report.heatmaps import NUMBER_FONT, heatmap_png
    from rem.report.html import html_table
    from rem.report.model import Table

    start = {"uxh": 0.05, "healed": 0.0625, "utility": 0.8}
    with ResultStore.in_run_dir(tmp_path) as s:
        for i, (method, rate, uxh) in enumerate(
            [("a", 0.1, 0.05), ("a", 0.5, 0.4), ("b", 0.1, 0.3), ("b", 0.5, 0.3), ("c", 0.1, 0.3), ("d", 0.1, 0.03)]
        ):
            s.put(
                {
                    "key": f"k{i}",
                    "method": method,
                    "pretrain_type": "capacity-0.5",
                    "task": "random",
                    "rate": rate,
                    "seed": 0,
                    "metrics": {"uxh": uxh, "healed": uxh, "utility": 0.8},
                    "start_key": "s",
                    "start_metrics": start,
                }
            )
    rep = build_report(tmp_path, metrics=("uxh",))
    png = rep.heatmaps["uxh"].read_bytes()
    assert imread(io.BytesIO(png)).shape[1] <= 1400 and NUMBER_FONT >= 10
    from rem.report.tables import flatten

    with ResultStore.in_run_dir(tmp_path) as s:
        rows = [flatten(r) for r in s.records()]
    plain = heatmap_png(rows, [], "uxh", collapsed=None)
    assert heatmap_png(rows, [], "uxh", collapsed=rep.collapses) != plain  # the collapse marks are drawn
    assert any(e["collapsed"] for e in rep.collapses)
    t = html_table(Table(["n", "method", "where", "uxh"], [[1, "a", "random 0.1 (no healing)", "5.00 ± 1.00"]], "rrrr"))
    assert '<td class="l">a</td>' in t and '<td class="l">random 0.1 (no healing)</td>' in t
    assert "<td>5.00 ± 1.00</td>" in t and "<td>1</td>" in t


def test_run_summary_prints_cost_per_method():
    """rem bench ends with the unlearning wall time and core-seconds per method of the cells it ran."""
    from rem.bench.executors import RunSummary

    s = RunSummary(run_dir=Path("r"), total=3, done=3, wall_s=12.0)
    s.add_cost({"method": "rem", "wall_s": 10.0, "env": {"threads": 2}})
    s.add_cost({"method": "rem", "wall_s": 5.0, "env": {"threads": 2}})
    s.add_cost({"method": "npo", "wall_s": 3.0, "env": {"threads": 1}})
    assert s.cost == {"rem": [2, 15.0, 30.0], "npo": [1, 3.0, 3.0]}
    text = str(s)
    lines = text.splitlines()
    assert "core-seconds" in text and lines[-1].split() == ["all", "3", "18", "33"]
    assert lines[-3].split()[0] == "rem" and lines[-2].split()[0] == "npo"  # dearest first


def test_run_summary_counts_pretraining():
    """The starting models pretrained during a run are a row of the cost table and part of the total."""
    from rem.bench.executors import RunSummary

    s = RunSummary(run_dir=Path("r"), total=1, done=1, wall_s=50.0)
    s.add_cost({"method": "npo", "wall_s": 3.0, "env": {"threads": 1}})
    s.add_pretrain({"wall_s": 20.0, "env": {"threads": 2}})
    lines = str(s).splitlines()
    assert lines[-2].split() == ["(pretraining)", "1", "20", "40"]
    assert lines[-1].split() == ["all", "2", "23", "43"]
    assert RunSummary(run_dir=Path("r")).cost_table() == ""


def test_seed_spread_compares_seeds_on_common_cells():
    """The seed-to-seed noise of a method's grid mean: each seed's mean over the (task, rate) cells every
    seed has (a seed still half run is not compared on other cells), then mean ± SEM over the seeds."""
    from rem.report.tables import grid_stats, seed_spread

    def row(seed, task, rate, uxh):
        return {"method": "m", "pretrain_type": "p", "seed": seed, "task": task, "rate": rate, "uxh": uxh}

    rows = [row(0, "poison", 0.5, 0.2), row(0, "poison", 1.0, 0.4), row(0, "random", 0.5, 0.9)]
    rows += [row(1, "poison", 0.5, 0.3), row(1, "poison", 1.0, 0.5)]  # seed 1 lacks random 0.5
    n, mean, sem = seed_spread(rows)
    assert n == 2 and mean == pytest.approx(0.35) and sem == pytest.approx(0.05)  # (0.3, 0.4): 0.9 left out
    n, mean, sem = seed_spread(rows[:3])
    assert n == 1 and mean == pytest.approx(0.5) and math.isnan(sem)
    ((start, p05, p10),) = grid_stats(rows, [], "m", "p", "uxh", ["poison"], [0.5, 1.0])
    assert math.isnan(start[0]) and p05[0] == pytest.approx(0.25) and p05[1] == pytest.approx(0.05) and p05[2] == 2
    from rem.report.heatmaps import heatmap_png

    one = [row(0, "poison", 0.5, 0.3)]
    two = [row(0, "poison", 0.5, 0.2), row(1, "poison", 0.5, 0.4)]  # the same mean, over two seeds
    assert heatmap_png(two, [], "uxh") != heatmap_png(one, [], "uxh")  # the SEM is drawn below the mean


def test_rem_methods_are_judged_against_the_best_other_method_on_the_rates_of_their_means():
    """The goal's test per task: the best REM method against the best other method, ahead or behind; a row
    whose last seed is half run is compared on the rates its mean is over, never on the rates it lacks."""
    from rem.report.model import rem_against_rest_lines
    from rem.report.tables import by_task_table, rem_against_rest

    def row(method, rate, seed, uxh, task="poison"):
        return {"method": method, "pretrain_type": "p", "task": task, "rate": rate, "seed": seed, "uxh": uxh}

    rows = [row("rem", r, s, 0.40 + 0.01 * s) for r in (0.1, 1.0) for s in (0, 1, 2)]
    rows += [row("rem-reinit", r, s, 0.45 + 0.01 * s) for r in (0.1, 1.0) for s in (0, 1, 2)]
    rows += [row("npo", r, s, 0.50 + 0.01 * s) for r in (0.1, 1.0) for s in (0, 1, 2)]
    rows += [row("rem-sp", r, s, 0.90) for r in (0.1, 1.0) for s in (0, 1)] + [row("rem-sp", 0.1, 2, 0.90)]
    by_task = by_task_table(rows)
    assert {r["method"]: r["poison_rates"] for r in by_task}["rem-sp"] == (0.1,)  # seed 2 lacks rate 1.0
    (poison,) = rem_against_rest(by_task)
    assert (poison["best"], poison["next"], poison["beyond_sem"]) == ("rem-reinit", "npo", True)  # rem-sp left out
    assert poison["margin"] == pytest.approx(-0.05)
    (line,) = rem_against_rest_lines(by_task)
    assert line.startswith(
        "poison (high): rem-reinit 46.00 ± 0.58 against npo 51.00 ± 0.58, -5.00 (more than the larger"
    )
    near = [dict(r, uxh=r["uxh"] + 0.045 * (r["method"] == "rem-reinit") + 0.03 * (r["seed"] == 2)) for r in rows]
    assert "(within the larger SEM: not a clear loss;" in rem_against_rest_lines(by_task_table(near))[0]
    assert rem_against_rest(by_task_table([r for r in rows if r["method"] != "npo"])) == []  # no other method
    oracle = [dict(r, method="rem-ideal", uxh=0.99) for r in rows if r["method"] == "npo"]
    assert rem_against_rest(by_task_table(rows + oracle))[0]["next"] == "rem-ideal"  # the oracle is no REM method


def _open_store_at_once(path: str, barrier, errors) -> None:
    barrier.wait()
    try:
        with ResultStore(path) as s:
            s.set_meta(f"p{os.getpid()}", "1")
        for i in range(40):  # then open it again and again while the others write
            with ResultStore(path) as s:
                s.claim(f"k{os.getpid()}-{i}")
                s.set_meta(f"q{os.getpid()}", str(i))
    except Exception as e:  # noqa: BLE001 - reported to the test
        errors.put(repr(e))


def test_many_processes_create_one_store_at_once(tmp_path):
    """Runners started together on a new run folder all open its store: none is refused with "database
    is locked" (switching a new file to WAL takes a lock SQLite may refuse at once, without waiting)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for attempt in range(3):
        path = str(tmp_path / f"r{attempt}" / "results.sqlite")
        barrier, errors = ctx.Barrier(6), ctx.SimpleQueue()
        procs = [ctx.Process(target=_open_store_at_once, args=(path, barrier, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        got = []
        while not errors.empty():
            got.append(errors.get())
        assert not got and all(p.exitcode == 0 for p in procs), got
        with ResultStore(path) as s:
            assert sum(k.startswith("p") for k in s.meta()) == 6


def test_a_store_locked_too_long_names_the_lock(tmp_path, monkeypatch):
    """A store another program keeps locked past the patience is refused with an error that says so, not as
    "not a usable SQLite database"; the file and its records are left as they were."""

    import rem.bench.store as store_mod

    path = tmp_path / "results.sqlite"
    with ResultStore(path) as s:
        s.set_meta("kept", "1")
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store_mod, "LOCK_PATIENCE_S", 0.3)
    with pytest.raises(StoreError, match="locked by another process") as e:
        ResultStore(path)
    assert "not a usable" not in str(e.value)
    holder.execute("COMMIT")
    holder.close()
    with ResultStore(path) as s:
        assert s.meta()["kept"] == "1"


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].joinpath("benchmarks", "grids").glob("*.toml")))
def test_committed_grid_files_load_and_name_registered_methods(path):
    """The grid files the results pages point at resolve to cells of registered methods."""
    from rem.bench.grid import Grid
    from rem.methods.base import method_names

    grid = Grid.from_file(path)
    cells = grid.cells()
    assert cells and {c.method for c in cells} <= set(method_names())
    assert all(c.relearn for c in cells)  # the grids carry the relearning check


def test_per_task_means_carry_the_seed_sem_and_the_best_is_judged_against_it():
    """Per task: mean ± SEM of per-seed means; the best row beats the runner-up beyond the SEM or not."""
    from rem.report.model import best_per_task_lines
    from rem.report.tables import best_per_task, by_task_table

    def row(method, rate, seed, uxh, task="poison"):
        return {"method": method, "pretrain_type": "p", "task": task, "rate": rate, "seed": seed, "uxh": uxh}

    rows = [row("a", r, s, 0.50 + 0.01 * s) for r in (0.1, 1.0) for s in (0, 1, 2)]
    rows += [row("b", r, s, 0.40 + 0.01 * s) for r in (0.1, 1.0) for s in (0, 1, 2)]
    rows += [row("c", 0.1, 0, 0.90)]  # one rate only: not compared with rows measured at two
    rows += [row("a", 0.5, 0, 0.3, task="random"), row("b", 0.5, 0, 0.2, task="random")]
    by_task = {r["method"]: r for r in by_task_table(rows)}
    assert by_task["a"]["poison"] == pytest.approx(0.51) and by_task["a"]["poison_sem"] == pytest.approx(0.01 / 3**0.5)
    assert math.isnan(by_task["a"]["random_sem"]) and by_task["a"]["poison_seeds"] == 3
    (poison, random) = best_per_task(list(by_task.values()))
    assert (poison["best"], poison["next"], poison["beyond_sem"]) == ("a", "b", True)
    assert poison["margin"] == pytest.approx(0.10) and poison["rates"] == (0.1, 1.0)
    assert (random["best"], random["beyond_sem"]) == ("a", None)  # one seed: no SEM to compare with
    close = [dict(r, uxh=r["uxh"] + (0.095 if r["method"] == "b" else 0)) for r in rows]
    close = [dict(r, uxh=r["uxh"] + 0.05 * (r["seed"] == 2)) for r in close]  # noisier seeds
    (poison, _) = best_per_task(by_task_table(close))
    assert poison["beyond_sem"] is False
    lines = best_per_task_lines(by_task_table(rows))
    assert lines[0].startswith("poison (high): a 51.00 ± 0.58 against b 41.00 ± 0.58, +10.00 (more than")
