"""`rem demo`: every failure before the first cell is one line naming the cause and the fix (exit code 2),
with nothing written; the shipped starting model is intact and is what the demo unlearns from."""

from __future__ import annotations

from pathlib import Path

import pytest

from rem.cli import main


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("rem demo: error:")]


def test_no_data_and_a_failing_download_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """No CIFAR-10 in the data folder and no network (the download URL refuses at once): one line that
    names the folder, the failed download and both fixes; exit 2; no run folder, no store, no cell."""
    import rem.data.cifar10 as cifar10
    from rem.data.files import clear_cache

    clear_cache()
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("REM_DATA_DIR", str(empty))
    monkeypatch.setattr(cifar10, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    run_dir = tmp_path / "demo"
    assert main(["demo", "--run-dir", str(run_dir), "--quiet"]) == 2
    out, err = capsys.readouterr()
    lines = _error_lines(err)
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    line = lines[0]
    assert "CIFAR-10 not found" in line and str(empty) in line and "failed" in line  # the cause
    assert "--data-dir" in line and "REM_DATA_DIR" in line and "manually" in line  # the fixes
    assert not run_dir.exists() and out == ""  # before any work: nothing ran, nothing was written
    assert not [p for p in empty.rglob("*") if p.is_file()]  # no partial download left behind


def test_no_data_with_downloading_off_is_one_line(tmp_path, monkeypatch, capsys):
    from rem.data.files import clear_cache

    clear_cache()
    monkeypatch.setenv("REM_DATA_DIR", str(tmp_path))
    assert main(["demo", "--run-dir", str(tmp_path / "d"), "--no-download", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and _error_lines(err) and "downloading is off" in err and "--data-dir" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--run-dir", "{afile}/d"], ["run folder", "is a file"]),
        (["--device", "cuda:7"], ["cuda:7"]),
        (["--device", "tpu"], ["unknown device", "cpu"]),
        (["--full", "--profile", "smoke"], ["--full"]),
        (["--profile", "nope"], ["unknown profile"]),
    ],
)
def test_bad_options_are_one_line_before_any_work(tmp_path, capsys, argv, words):
    (tmp_path / "afile").write_text("a file\n")
    argv = [a.format(afile=tmp_path / "afile") for a in argv]
    if "--run-dir" not in argv:
        argv += ["--run-dir", str(tmp_path / "d")]
    before = sorted(tmp_path.rglob("*"))
    assert main(["demo", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and _error_lines(err), err
    for w in words:
        assert w in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_the_shipped_starting_model_is_intact_and_is_the_demo_profiles_model():
    from rem.bench.cell import StartSpec
    from rem.checkpoint import load_checkpoint
    from rem.demo import DEMO_PROFILE, PTYPE, SEED, STARTER_SHA256, TASK, check_starter, sha256_file

    path = check_starter()
    assert sha256_file(path) == STARTER_SHA256 and path.stat().st_size < 4_000_000
    model, meta = load_checkpoint(path)
    assert meta["pretrain_record"]["key"] == StartSpec(DEMO_PROFILE, PTYPE, TASK, SEED).key
    assert meta["metrics"]["asr"] >= 0.8  # the backdoor is learned: there is something to remove


def test_a_damaged_shipped_model_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    import rem.demo as demo

    bad = tmp_path / "assets" / demo.STARTER_FILE
    bad.parent.mkdir()
    bad.write_bytes(Path(demo.starter_path()).read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(demo, "starter_path", lambda: bad)
    assert main(["demo", "--run-dir", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err and "reinstall" in err
    assert not (tmp_path / "d").exists()
