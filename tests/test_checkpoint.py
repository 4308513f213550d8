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
