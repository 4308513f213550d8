import json

import pytest
import torch

from rem.checkpoint import load_checkpoint, save_checkpoint
from rem.errors import CheckpointError
from rem.models import expand, resnet9


def test_roundtrip(tmp_path):
    m = expand(resnet9(10, width=0.125), 0.5).eval()
    p = save_checkpoint(m, tmp_path / "m.safetensors", {"task": {"kind": "poison"}})
    r, meta = load_checkpoint(p)
    assert meta == {"task": {"kind": "poison"}}
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(r(x, mode="full"), m(x, mode="full"))
    assert r.spec() == m.spec()


def test_damaged_files_are_refused(tmp_path):
    m = resnet9(10, width=0.125)
    p = save_checkpoint(m, tmp_path / "m.safetensors")
    raw = bytearray(p.read_bytes())
    # flip one byte in the tensor data (at the end of the file)
    flipped = tmp_path / "flipped.safetensors"
    raw2 = bytearray(raw)
    raw2[-10] ^= 0xFF
    flipped.write_bytes(bytes(raw2))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(flipped)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError):
        load_checkpoint(trunc)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)


def test_mismatched_description_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    m = resnet9(10, width=0.125)
    p = save_checkpoint(m, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        header = f.metadata()
    spec = json.loads(header["rem.spec"])
    spec["num_classes"] = 7  # the description no longer matches the weights
    header["rem.spec"] = json.dumps(spec)
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(p)), str(bad), metadata=header)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(bad)
    header["format"] = "something-else"
    save_file(load_file(str(p)), str(bad), metadata=header)
    with pytest.raises(CheckpointError, match="not a rem checkpoint"):
        load_checkpoint(bad)


def test_digest_covers_the_metadata(tmp_path):
    """A same-length edit of the header metadata (task kind, seed) is refused (issue 14, item 3)."""
    m = resnet9(10, width=0.125)
    p = save_checkpoint(m, tmp_path / "m.safetensors", {"task": {"kind": "poison", "seed": 3}})
    raw = p.read_bytes()
    for old, new in ((b"poison", b"random"), (b'"seed\\": 3', b'"seed\\": 4')):
        assert raw.count(old) == 1
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(raw.replace(old, new))
        with pytest.raises(CheckpointError, match="damaged"):
            load_checkpoint(bad)


def test_identical_content_identical_bytes_and_mode(tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "import sys, torch; from rem.models import resnet9; from rem.checkpoint import save_checkpoint;"
        "torch.manual_seed(0); save_checkpoint(resnet9(10, width=0.125), sys.argv[1], "
        "{'b': 1, 'a': {'z': 2, 'y': [1, 2]}, 'task': {'kind': 'poison'}})"
    )
    paths = [tmp_path / f"{i}.safetensors" for i in range(2)]
    for p in paths:  # separate processes: dict/hash ordering may differ between them
        subprocess.run([sys.executable, "-c", code, str(p)], check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    mask = os.umask(0)
    os.umask(mask)
    assert paths[0].stat().st_mode & 0o777 == 0o666 & ~mask
    assert load_checkpoint(paths[0])[1]["a"] == {"z": 2, "y": [1, 2]}


def test_first_format_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from rem.checkpoint import _digest

    m = resnet9(10, width=0.125)
    p = save_checkpoint(m, tmp_path / "m.safetensors", {"task": {"kind": "poison"}})
    with safe_open(str(p), framework="pt") as f:
        header = dict(f.metadata())
    header["format"] = "rem-checkpoint/1"
    header["rem.sha256"] = _digest(load_file(str(p)), {})  # the first format's digest: tensors only
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(p)), str(old), metadata=header)
    with pytest.raises(CheckpointError, match=r"another rem \(rem-checkpoint/1; this rem reads rem-checkpoint/2\)"):
        load_checkpoint(old)
