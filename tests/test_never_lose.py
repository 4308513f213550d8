"""Issue 34, "never overwrite, never ignore, never lose": the one output writer (:mod:`rem.output`), options
that cannot apply, ranges, and failures that end in one line and exit 2. Each table row is a command, its
exit code, words of its one line, and the check that nothing under the test's folder was written,
replaced or lost."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rem.cli import main
from rem.errors import ArgumentError, IndexSetError, OutputError, RemError
from rem.output import COMMIT, TEMP, Output, write_now

FACTORIES = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Only(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Slow(Tiny):
    def forward(self, x):
        import time

        time.sleep(1.0)  # a run long enough for a second run to start while it works
        return super().forward(x)


def slow():
    torch.manual_seed(0)
    return Slow()


def tiny(classes=4):
    torch.manual_seed(0)
    return Tiny(classes)


def only():
    torch.manual_seed(0)
    return Only()
"""


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A user's own tiny models, weights and data; result files already there; bad data files; a grid."""
    root = tmp_path_factory.mktemp("never_lose")
    (root / "factories.py").write_text(FACTORIES)
    from importlib import util

    spec = util.spec_from_file_location("factories_here", root / "factories.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    save_file(mod.tiny().state_dict(), str(root / "tiny.safetensors"))
    save_file(mod.only().state_dict(), str(root / "only.safetensors"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    np.savez(root / "data.npz", x=x, y=y)
    xf = x.astype(np.float32) / 255
    xf[3, 0, 0, 0] = np.nan
    np.savez(root / "nan.npz", x=xf, y=y)
    np.savez(root / "object.npz", x=np.array([x[0], "a"], dtype=object), y=y)
    (root / "text.npz").write_text("x,y\n1,2\n")
    (root / "found.txt").write_text("0\n1\n2\n")
    (root / "all.txt").write_text(" ".join(str(i) for i in range(40)) + "\n")
    keep = root / "keep"
    keep.mkdir()
    (keep / "h.safetensors").write_bytes(b"an earlier healed model")
    (keep / "h.json").write_text('{"an": "earlier record"}\n')
    (keep / "notes.json").write_text("the user's own notes\n")
    (root / "empty-run").mkdir()
    (root / "empty-run" / "results.sqlite").write_bytes(b"")
    (root / "grid.yaml").write_text("profile: smoke\nmethods: [none]\ntasks: [poison]\nrates: [0.5]\nseeds: [0]\n")
    (root / "bad.yaml").write_text("profile: [smoke\n")
    return root


def _own(w: Path, *extra: str, model: str = "tiny", out: str | None = None) -> list[str]:
    return [
        "unlearn",
        "--model",
        f"{w / 'factories.py'}:{model}",
        "--weights",
        str(w / f"{model}.safetensors"),
        "--data",
        str(w / "data.npz"),
        "--forget",
        str(w / "found.txt"),
        "--method",
        "npo",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        out or str(w / "new" / "h.safetensors"),
        *extra,
    ]


def _cases(w: Path) -> list[tuple[str, list[str], str]]:
    ck = ["--checkpoint", str(w / "no-such.safetensors"), "--rate", "0.5", "--out", str(w / "new")]
    bench = ["bench", "--profile", "smoke", "--methods", "none", "--run-dir", str(w / "run"), "--dry-run", "--quiet"]
    disc = ["discover", "--checkpoint", str(w / "no-such.safetensors"), "--rate", "0.5", "--out", str(w / "r.csv")]

    def own_with_data(name: str) -> list[str]:
        argv = _own(w)
        argv[argv.index("--data") + 1] = str(w / name)
        return argv

    def own_with_forget(name: str) -> list[str]:
        argv = _own(w)
        argv[argv.index("--forget") + 1] = str(w / name)
        return argv

    return [
        # never overwrite: any file the run writes, without --overwrite
        ("own-existing-result", _own(w, out=str(w / "keep" / "h.safetensors")), "--overwrite"),
        ("own-unrelated-json", _own(w, out=str(w / "keep" / "notes.safetensors")), "notes.json"),
        ("own-out-pt", _own(w, out=str(w / "new" / "x.pt")), "safetensors"),
        ("own-out-over-weights", _own(w, "--overwrite", out=str(w / "tiny.safetensors")), "starting weights"),
        # options that cannot apply
        ("checkpoint-data", ["unlearn", *ck, "--data", str(w / "data.npz")], "--data does not apply"),
        ("checkpoint-weights", ["unlearn", *ck, "--weights", str(w / "tiny.safetensors")], "--weights"),
        ("checkpoint-targets", ["unlearn", *ck, "--targets", "conv"], "--targets does not apply"),
        ("checkpoint-mean", ["unlearn", *ck, "--mean", "0.5,0.5,0.5"], "--mean does not apply"),
        ("checkpoint-std", ["unlearn", *ck, "--std", "0.2,0.2,0.2"], "--std does not apply"),
        ("discover-checkpoint-data", [*disc, "--data", str(w / "data.npz")], "--data does not apply"),
        ("expand-ratio-npo", _own(w, "--expand-ratio", "1"), "--expand-ratio does not apply to method 'npo'"),
        ("checkpoint-expand-ratio-npo", ["unlearn", *ck, "--method", "npo", "--expand-ratio", "1"], "npo"),
        ("own-within-corrupt", _own(w, "--within-corrupt"), "--within-corrupt does not apply"),
        ("own-num-classes", _own(w, "--num-classes", "10"), "--num-classes 10"),
        # ranges, before any work
        ("own-mean-5", _own(w, "--mean", "5,5,5", "--std", "0.2,0.2,0.2"), "[0, 1]"),
        ("own-std-0", _own(w, "--mean", "0.5,0.5,0.5", "--std", "0,0.2,0.2"), "> 0"),
        ("own-std-nan", _own(w, "--mean", "0.5,0.5,0.5", "--std", "nan,1,1"), "finite"),
        ("bench-width-negative", [*bench, "--width", "-1"], "--width"),
        ("bench-width-0", [*bench, "--width", "0"], "--width"),
        ("bench-width-nan", [*bench, "--width", "nan"], "finite"),
        ("bench-methods-empty", [*bench[:4], "", *bench[5:]], "lists nothing"),
        ("bench-rates-empty", [*bench, "--rates", ","], "lists nothing"),
        ("bench-n-corrupt-too-many", [*bench, "--n-corrupt", "5000"], "exceeds the 1000"),
        ("report-set-unknown-setting", ["report", "--run-dir", str(w / "run"), "--set", "rem.betta=1"], "betta"),
        ("report-set-unknown-method", ["report", "--run-dir", str(w / "run"), "--set", "remx.beta=1"], "remx"),
        ("report-methods-empty", ["report", "--run-dir", str(w / "run"), "--methods", ""], "lists nothing"),
        ("report-zero-byte-store", ["report", "--run-dir", str(w / "empty-run")], "empty (0 bytes)"),
        # failures that were tracebacks or misleading lines
        ("proc-unlearn", _own(w, out="/proc/rem-test/h.safetensors"), "/proc/rem-test"),
        ("proc-eval", ["eval", "--checkpoint", str(w / "tiny.safetensors"), "--out", "/proc/x.json"], "/proc"),
        ("proc-bench", [*bench[:-2], "--run-dir", "/proc/rem-run", "--quiet"], "/proc/rem-run"),
        ("npz-object-array", own_with_data("object.npz"), "object (pickled)"),
        ("npz-text-file", own_with_data("text.npz"), "not an .npz file"),
        ("npz-nan-pixels", own_with_data("nan.npz"), "non-finite"),
        ("targets-bad-regex", _own(w, "--method", "rem", "--targets", "conv(1"), "not a valid regular expression"),
        ("forget-every-sample", own_with_forget("all.txt"), "every one of the 40"),
        ("bench-yaml-invalid", [*bench, "--config", str(w / "bad.yaml")], "not valid YAML"),
        ("device-mps", _own(w, "--device", "mps"), "MPS"),
    ]


_IDS = [c[0] for c in _cases(Path("/x"))]


@pytest.mark.parametrize("case", _IDS)
def test_refused_in_one_line_exit_2_nothing_written(case, world, refused):
    name, argv, needle = next(c for c in _cases(world) if c[0] == case)
    if name == "device-mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    before = _snapshot(world)
    refused(name, argv, needle)
    assert _snapshot(world) == before, f"{name}: files were written, replaced or removed"


def test_own_model_writes_both_files_and_overwrite_replaces_both(world, tmp_path, capsys):
    out = tmp_path / "o" / "h.safetensors"
    assert main(_own(world, out=str(out))) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"] == "npo" and out.stat().st_size > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["h.json", "h.safetensors"]  # no claim, temp, marker
    assert main(_own(world, out=str(out))) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(_own(world, "--overwrite", out=str(out))) == 0


def test_methods_that_add_no_capacity_run_on_a_classifier_only_model(world, tmp_path):
    for method in ("npo", "finetune", "scrub", "none"):
        argv = _own(world, model="only", out=str(tmp_path / f"{method}.safetensors"))
        argv[argv.index("--method") + 1] = method
        assert main(argv) == 0, method
    disc = [
        "discover",
        "--model",
        f"{world / 'factories.py'}:only",
        "--weights",
        str(world / "only.safetensors"),
        "--data",
        str(world / "data.npz"),
        "--forget",
        str(world / "found.txt"),
        "--score",
        "loss",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "r.csv"),
    ]
    assert main(disc) == 0 and (tmp_path / "r.csv").read_text().startswith("rank")


def test_yaml_grid_and_duplicate_rates_in_dry_run(world, capsys):
    argv = ["bench", "--config", str(world / "grid.yaml"), "--rates", "0.5,0.5", "--run-dir", str(world / "run")]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("to run") == 1 and "1 cells" in out
    assert not (world / "run").exists()


# --- the Python API: rem's own errors, naming the argument ------------------------------------------


def _api_inputs(world):
    from importlib import util

    spec = util.spec_from_file_location("factories_api", world / "factories.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    z = np.load(world / "data.npz")
    return mod, (z["x"], z["y"])


@pytest.mark.parametrize(
    "kw, exc, words",
    [
        ({"forget_idx": None}, ArgumentError, "forget_idx is None"),
        ({"forget_idx": {0, 1}}, ArgumentError, "forget_idx is a set"),
        ({"forget_idx": (i for i in range(3))}, ArgumentError, "forget_idx is a generator"),
        ({"forget_idx": "0,1"}, ArgumentError, "forget_idx is text"),
        ({"forget_idx": list(range(40))}, IndexSetError, "every one"),
        ({"preprocess": {"maen": (0.5, 0.5, 0.5)}}, ArgumentError, "maen"),
        ({"on_step": 3}, ArgumentError, "on_step"),
        ({"targets": "conv("}, RemError, "regular expression"),
    ],
)
def test_api_bad_arguments_raise_rem_errors(world, kw, exc, words):
    import rem

    mod, data = _api_inputs(world)
    args = {"forget_idx": [0, 1, 2], **kw}
    with pytest.raises(exc, match=None) as e:
        rem.unlearn(mod.tiny(), data, args.pop("forget_idx"), "rem", device="cpu", steps=1, **args)
    assert words in str(e.value)


def test_api_meta_model_and_numpy_steps(world):
    import rem

    mod, data = _api_inputs(world)
    with torch.device("meta"):
        ghost = mod.Tiny()
    with pytest.raises(ArgumentError, match="meta device"):
        rem.unlearn(ghost, data, [0, 1], "npo", device="cpu")
    healed, _ = rem.unlearn(mod.tiny(), data, np.array([0, 1]), "npo", device="cpu", steps=np.int64(2))
    assert isinstance(healed, mod.Tiny)


# --- the writer itself --------------------------------------------------------------------------------


def test_claim_is_exclusive_and_names_the_owner(tmp_path):
    a = Output([tmp_path / "m.bin", tmp_path / "m.json"]).claim()
    try:
        with pytest.raises(OutputError, match=f"pid {os.getpid()}"):
            Output([tmp_path / "m.json"]).claim()
    finally:
        a.release()
    with Output([tmp_path / "m.json"]) as b:  # free again
        b.write({tmp_path / "m.json": "{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_stale_claim_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    import socket

    (tmp_path / ".m.json.rem-claim").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    write_now({tmp_path / "m.json": "{}"})
    assert (tmp_path / "m.json").read_text() == "{}" and not (tmp_path / ".m.json.rem-claim").exists()


def test_existing_file_of_the_group_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "h.json").write_text("mine")
    with pytest.raises(OutputError, match="h.json"):
        write_now({tmp_path / "h.safetensors": b"x", tmp_path / "h.json": "{}"})
    assert (tmp_path / "h.json").read_text() == "mine" and not (tmp_path / "h.safetensors").exists()
    write_now({tmp_path / "h.safetensors": b"x", tmp_path / "h.json": "{}"}, overwrite=True)
    assert (tmp_path / "h.json").read_text() == "{}"


def _interrupted(tmp_path: Path, lose_temp: bool) -> tuple[Path, Path]:
    """A result killed halfway through its commit: the model renamed, the record still a temp file."""
    model, record = tmp_path / "model.safetensors", tmp_path / "metrics.json"
    tm, tr = (p.parent / TEMP.format(p.name, 99999999) for p in (model, record))
    tr.write_text('{"done": true}')
    files = {"files": [[str(tm), str(model)], [str(tr), str(record)]]}
    for p in (model, record):
        (p.parent / COMMIT.format(p.name)).write_text(json.dumps(files))
    model.write_bytes(b"new model")  # renamed already
    if lose_temp:
        tr.unlink()
    return model, record


def test_interrupted_commit_is_completed_by_the_next_claim(tmp_path):
    model, record = _interrupted(tmp_path, lose_temp=False)
    with pytest.raises(OutputError, match="already holds"):  # completed, so a whole result is there
        write_now({model: b"m", record: "{}"})
    assert model.read_bytes() == b"new model" and json.loads(record.read_text()) == {"done": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.safetensors"]


def test_incomplete_leftover_is_not_a_result_and_no_refusal(tmp_path):
    model, record = _interrupted(tmp_path, lose_temp=True)
    write_now({model: b"m", record: "{}"})  # the leftover half is recognised and replaced, no --overwrite
    assert model.read_bytes() == b"m" and record.read_text() == "{}"


def test_write_failure_rescues_the_result_and_says_where(tmp_path, monkeypatch):
    import rem.output as output

    real = output._write_file
    dest = tmp_path / "out"

    def full_disk(path, data):
        if Path(path).parent == dest:
            raise OSError(28, "No space left on device")
        return real(path, data)

    with Output([dest / "model.safetensors", dest / "metrics.json"]) as out:
        monkeypatch.setattr(output, "_write_file", full_disk)  # the disk fills up during the work
        with pytest.raises(OutputError, match="ENOSPC") as e:
            out.write({dest / "model.safetensors": b"weights", dest / "metrics.json": "{}"})
    rescued = out.rescued
    assert str(rescued) in str(e.value) and rescued.parent == tmp_path
    assert (rescued / "model.safetensors").read_bytes() == b"weights" and (rescued / "metrics.json").exists()
    assert not dest.exists()  # nothing half-written: the folder the claim made is gone again


def _tmpfs(path: Path, size: str = "64k") -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_disk_full_after_the_work_on_a_small_tmpfs(world, tmp_path, capsys):
    """A 64 KiB tmpfs with room for the claim and the probe, not for the model: exit 2, one line saying
    where the result went, the destination unchanged, the result whole in the rescue folder."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here")
    try:
        filler = disk / "filler"
        with open(filler, "wb") as f:  # leave about 12 KiB: the claim and the probe fit, the model does not
            f.write(b"\0" * (52 * 1024))
        out = disk / "h.safetensors"
        code = main(_own(world, out=str(out)))
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and "No space left" in lines[0], err
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
        rescued = next(tmp_path.glob("rem-rescued-h-*"))
        assert str(rescued) in lines[0]
        assert json.loads((rescued / "h.json").read_text())["method"] == "npo"
        from safetensors.torch import load_file

        assert "fc.weight" in load_file(str(rescued / "h.safetensors"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.slow
def test_two_concurrent_unlearn_into_one_out_leave_one_result_and_one_refusal(world, tmp_path, capsys):
    """A second `rem unlearn` into the --out that a running one has claimed is refused in one line (exit 2),
    and the first one's result is the only one there."""
    out = tmp_path / "RACE" / "h.safetensors"
    own = _own(world, out=str(out))
    own[own.index("--model") + 1] = f"{world / 'factories.py'}:slow"
    first = subprocess.Popen(
        [sys.executable, "-m", "rem", *own], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    claim = out.parent / f".{out.name}.rem-claim"
    deadline = time.monotonic() + 120
    while not claim.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert claim.exists(), "the first run never claimed its --out"
    capsys.readouterr()
    code = main(own)  # the second run, started while the first works
    err = capsys.readouterr().err
    so, se = first.communicate(timeout=600)
    assert first.returncode == 0, se
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "being written by another rem run" in lines[0], err
    assert sorted(p.name for p in out.parent.iterdir()) == ["h.json", "h.safetensors"]
    assert "wrote" in so
