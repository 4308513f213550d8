"""Every bad input of issue 14, as one table: exit code 2, exactly one line on stderr, no traceback, and
no file written or changed anywhere under the test's folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from rem.cli import main


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        else:
            out[str(p.relative_to(root))] = ("dir", p.stat().st_mode)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a smoke checkpoint, a result, index files and damaged checkpoints."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from rem.checkpoint import load_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("world")
    start = root / "start"
    assert main(["train", "--profile", "smoke", "--steps", "10", "--out", str(start), "--quiet"]) == 0
    ck = start / "model.safetensors"
    (root / "afile").write_text("not a folder\n")
    (root / "result").mkdir()
    (root / "result" / "metrics.json").write_text("{}\n")
    (root / "big.txt").write_text("1 2 123456789012345678901\n")
    (root / "bad.json").write_text("[1, 2,\n")
    (root / "grid.toml").write_text('profile = "smoke"\nmethods = ["none"]\nsteps = 1.5\n')
    raw = ck.read_bytes()
    assert raw.count(b"poison") == 1  # the task kind, inside the header's JSON metadata
    edited = raw.replace(b"poison", b"random", 1)  # a same-length edit: only the digest can tell
    (root / "edited.safetensors").write_bytes(edited)
    model, meta = load_checkpoint(ck)
    save_checkpoint(model, root / "othersplit.safetensors", {**meta, "split_hash": "0123456789abcdef"})
    with safe_open(str(ck), framework="pt") as f:
        header = dict(f.metadata())
    header["format"] = "rem-checkpoint/1"
    from rem.checkpoint import _digest

    header["rem.sha256"] = _digest(load_file(str(ck)), {})
    save_file(load_file(str(ck)), str(root / "legacy.safetensors"), metadata=header)
    return root


def _cases(w: Path) -> list[tuple[str, list[str], str]]:
    ck = str(w / "start" / "model.safetensors")
    un = ["unlearn", "--checkpoint", ck, "--rate", "0.5", "--quiet"]
    out = ["--out", str(w / "new")]
    bench = [
        "bench",
        "--profile",
        "smoke",
        "--methods",
        "none,rem",
        "--rates",
        "0.5",
        "--run-dir",
        str(w / "run"),
        "--quiet",
        "--dry-run",
    ]
    return [
        # 1. --set values by the field's type
        ("set-bool-garbage", [*un, "--set", "remove_term=maybe", *out], "remove_term"),
        ("set-int-fraction", [*un, "--set", "steps=1.5", *out], "integer"),
        ("set-int-float", [*un, "--set", "batch_size=64.0", *out], "integer"),
        ("set-max-epochs", [*un, "--method", "npo", "--set", "max_epochs=2.5", *out], "max_epochs"),
        ("set-float-text", [*un, "--set", "beta=abc", *out], "beta"),
        ("set-float-bool", [*un, "--set", "p=True", *out], "'p'"),
        ("set-float-null", [*un, "--set", "gamma=null", *out], "gamma"),
        ("set-other-method", [*un, "--set", "npo.beta=1", *out], "npo"),
        ("bench-set-bad-type", [*bench, "--set", "rem.soft_mask=perhaps"], "soft_mask"),
        ("bench-config-float-steps", [*bench, "--config", str(w / "grid.toml")], "steps"),
        # 2. an unknown setting without a method prefix
        ("bench-set-unknown", [*bench, "--set", "betta=1"], "betta"),
        ("bench-set-unknown-prefixed", [*bench, "--set", "rem.betta=1"], "betta"),
        # 3. checkpoints whose metadata was changed or no longer matches the task
        ("eval-edited-metadata", ["eval", "--checkpoint", str(w / "edited.safetensors")], "damaged"),
        ("eval-other-split", ["eval", "--checkpoint", str(w / "othersplit.safetensors")], "split"),
        (
            "unlearn-other-split",
            ["unlearn", "--checkpoint", str(w / "othersplit.safetensors"), "--rate", "0.5", *out],
            "split",
        ),
        ("eval-legacy-format", ["eval", "--checkpoint", str(w / "legacy.safetensors")], "another rem"),
        # 4. zero is refused, not replaced by the profile's default
        ("train-n-corrupt-0", ["train", "--profile", "smoke", "--n-corrupt", "0", *out], "--n-corrupt"),
        ("train-steps-0", ["train", "--profile", "smoke", "--steps", "0", *out], "--steps"),
        ("bench-n-corrupt-0", [*bench, "--n-corrupt", "0"], "--n-corrupt"),
        # 6. output locations that cannot be written, before any work
        ("train-out-under-file", ["train", "--profile", "smoke", "--out", str(w / "afile" / "x")], "afile"),
        ("unlearn-out-under-file", [*un, "--out", str(w / "afile" / "x")], "afile"),
        ("unlearn-out-is-file", [*un, "--out", str(w / "afile")], "afile"),
        ("eval-out-under-file", ["eval", "--checkpoint", ck, "--out", str(w / "afile" / "m.json")], "afile"),
        ("eval-out-is-folder", ["eval", "--checkpoint", ck, "--out", str(w / "result")], "folder"),
        ("bench-run-dir-under-file", [*bench[:-1], "--run-dir", str(w / "afile" / "run")], "afile"),
        ("report-out-under-file", ["report", "--run-dir", str(w / "run"), "--out", str(w / "afile" / "r")], "afile"),
        (
            "demo-run-dir-under-file",
            ["demo", "--profile", "smoke", "--run-dir", str(w / "afile" / "d"), "--quiet"],
            "afile",
        ),
        # 7. never overwrite the input, nor an earlier result without --overwrite
        ("unlearn-over-input", [*un, "--out", str(w / "start")], "overwrite"),
        ("unlearn-existing-result", [*un, "--out", str(w / "result")], "--overwrite"),
        # 12. tracebacks that became one-line errors
        ("device-unknown", ["eval", "--checkpoint", ck, "--device", "gpu"], "device"),
        ("index-20-digits", ["unlearn", "--checkpoint", ck, "--forget-file", str(w / "big.txt"), *out], "range"),
        (
            "index-invalid-json",
            ["unlearn", "--checkpoint", ck, "--forget-file", str(w / "bad.json"), *out],
            "not valid JSON",
        ),
        ("bench-limit-negative", [*bench, "--limit", "-1"], "--limit"),
        ("unlearn-rate-0", ["unlearn", "--checkpoint", ck, "--rate", "0", *out], "(0, 1]"),
        ("unlearn-rate-above-1", ["unlearn", "--checkpoint", ck, "--rate", "1.5", *out], "(0, 1]"),
        ("unlearn-steps-negative", [*un, "--steps", "-1", *out], "--steps"),
        ("unlearn-no-rate-nor-file", ["unlearn", "--checkpoint", ck, *out], "--rate"),
        ("unlearn-expand-ratio-too-big", [*un, "--expand-ratio", "9", *out], "expand_ratio"),
        ("unknown-method", [*un, "--method", "nope", *out], "unknown method"),
        ("report-no-store", ["report", "--run-dir", str(w / "nothing")], "no results store"),
        ("eval-missing-checkpoint", ["eval", "--checkpoint", str(w / "missing.safetensors")], "no checkpoint"),
        ("unknown-option", ["eval", "--checkpoint", ck, "--colour", "red"], "--colour"),
    ] + (
        []
        if torch.cuda.is_available()
        else [
            ("device-cuda-without-cuda", ["train", "--profile", "smoke", "--device", "cuda", *out], "CUDA"),
            ("bench-device-cuda-without-cuda", [*bench[:-1], "--device", "cuda"], "CUDA"),
        ]
    )


_IDS = [c[0] for c in _cases(Path("/x"))]


@pytest.mark.parametrize("case", _IDS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, world, refused):
    name, argv, needle = next(c for c in _cases(world) if c[0] == case)
    before = _snapshot(world)
    refused(name, argv, needle)
    assert _snapshot(world) == before, f"{name}: files were written or changed"


def test_bom_index_file_is_accepted(world, tmp_path):
    from rem.cli.inputs import read_forget

    f = tmp_path / "bom.txt"
    f.write_bytes("\ufeff1, 2, 3\n".encode())
    assert read_forget(f).tolist() == [1, 2, 3]
    f.write_bytes("\ufeff[4, 5]".encode())
    assert read_forget(f).tolist() == [4, 5]


def test_unlearn_overwrite_flag_and_typed_set(world, tmp_path):
    """--overwrite replaces an earlier result; --set remove_term=False really turns the term off."""
    ck = str(world / "start" / "model.safetensors")
    out = tmp_path / "u"
    args = [
        "unlearn",
        "--checkpoint",
        ck,
        "--rate",
        "0.5",
        "--steps",
        "2",
        "--set",
        "remove_term=False",
        "--set",
        "soft_mask=no",
        "--set",
        "max_epochs=1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    cfg = json.loads((out / "metrics.json").read_text())["method_config"]
    assert cfg["remove_term"] is False and cfg["soft_mask"] is False and cfg["max_epochs"] == 1
    assert main(args) == 2  # an existing result
    assert main([*args, "--overwrite"]) == 0
    assert oct(os.stat(out / "model.safetensors").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
