"""Tests of rem.data.datasets: generated data, md5 checks, loaders on small fake files, transforms."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from rem.data import (
    ImageData,
    cifar10,
    downsample,
    load_cifar10,
    load_dataset,
    load_svhn,
    make_generated,
    md5sum,
    resolve_data_dir,
    subsample,
    svhn,
)
from rem.data import datasets as ds
from rem.errors import ConfigError, DataError

# --------------------------------------------------------------------------------------------------
# Helpers: small fake data sets in the official file formats.


@pytest.fixture(autouse=True)
def _fresh_cache():
    ds.clear_cache()
    yield
    ds.clear_cache()


def _write_fake_cifar(folder: Path, n_per_batch: int = 20, seed: int = 0) -> None:
    """Write a tiny CIFAR-10 python-version folder (same pickle layout as the official files)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in (*cifar10.CIFAR10_TRAIN_FILES, cifar10.CIFAR10_TEST_FILE):
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(i % 10) for i in range(n_per_batch)],
            b"data": rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n_per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        b"label_names": [c.encode() for c in cifar10.CIFAR10_CLASSES],
        b"num_cases_per_batch": n_per_batch,
        b"num_vis": 3072,
    }
    (folder / cifar10.CIFAR10_META_FILE).write_bytes(pickle.dumps(meta, protocol=2))


def _patch_cifar_md5(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    for name in cifar10.CIFAR10_MD5:
        monkeypatch.setitem(cifar10.CIFAR10_MD5, name, md5sum(folder / name))


def _write_fake_svhn(folder: Path, n_train: int = 30, n_test: int = 20) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for fname, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # labels 1..10, 10 is digit 0
        scipy.io.savemat(str(folder / fname), {"X": x, "y": y}, do_compression=False)


def _flip_byte(path: Path, offset: int = -10) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def _make_tar(archive: Path, arcnames: dict[str, Path]) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for arcname, path in arcnames.items():
            tar.add(path, arcname=arcname)


# --------------------------------------------------------------------------------------------------
# Generated data.


def test_generated_shapes_dtypes_and_balance() -> None:
    d = make_generated(n_train=200, n_test=50, num_classes=10, size=32, seed=0)
    assert d.x_train.shape == (200, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.x_test.shape == (50, 3, 32, 32) and d.x_test.dtype == torch.uint8
    assert d.y_train.dtype == torch.int64 and d.y_test.dtype == torch.int64
    assert d.x_train.is_contiguous() and d.image_size == 32
    assert d.class_counts("train") == [20] * 10 and d.class_counts("test") == [5] * 10
    assert len(d.classes) == d.num_classes == 10
    s = d.summary()
    assert s["name"] == "generated" and s["n_train"] == 200 and s["n_test"] == 50
    assert list(s["train_class_counts"].values()) == [20] * 10


def test_generated_deterministic_and_seed_dependent() -> None:
    a = make_generated(n_train=100, n_test=30, seed=3)
    b = make_generated(n_train=100, n_test=30, seed=3)
    c = make_generated(n_train=100, n_test=30, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    # the test split does not depend on the size of the train split
    d = make_generated(n_train=40, n_test=30, seed=3)
    assert torch.equal(a.x_test, d.x_test)


def test_generated_has_class_structure_beyond_mean_colour() -> None:
    d = make_generated(n_train=1000, n_test=500, seed=0)

    def nearest_centroid_acc(ftr: torch.Tensor, fte: torch.Tensor) -> float:
        cent = torch.stack([ftr[d.y_train == c].mean(0) for c in range(d.num_classes)])
        return (torch.cdist(fte, cent).argmin(1) == d.y_test).float().mean().item()

    xtr, xte = d.x_train.float() / 255, d.x_test.float() / 255
    assert nearest_centroid_acc(xtr.mean((2, 3)), xte.mean((2, 3))) < 0.3  # mean colour: near chance
    assert nearest_centroid_acc(xtr.flatten(1), xte.flatten(1)) > 0.6  # layout: learnable


def test_generated_other_sizes_and_bad_arguments() -> None:
    d = make_generated(n_train=33, n_test=7, num_classes=4, size=16, seed=1)
    assert d.x_train.shape == (33, 3, 16, 16)
    counts = d.class_counts("train")
    assert max(counts) - min(counts) <= 1 and sum(counts) == 33
    with pytest.raises(ConfigError):
        make_generated(num_classes=1)
    with pytest.raises(ConfigError):
        make_generated(n_train=-1)


# --------------------------------------------------------------------------------------------------
# Data directory.


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("REM_DATA_DIR", raising=False)
    assert resolve_data_dir() == (home / ".cache" / "rem" / "data").resolve()
    monkeypatch.setenv("REM_DATA_DIR", "")  # empty counts as unset (the Makefile may export it empty)
    assert resolve_data_dir() == (home / ".cache" / "rem" / "data").resolve()
    monkeypatch.setenv("REM_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == (tmp_path / "env").resolve()
    assert resolve_data_dir(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert resolve_data_dir(str(tmp_path / "arg2")) == (tmp_path / "arg2").resolve()


# --------------------------------------------------------------------------------------------------
# CIFAR-10 on fake files.


def test_cifar_fake_folder_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / cifar10.CIFAR10_DIRNAME
    _write_fake_cifar(folder)
    _patch_cifar_md5(monkeypatch, folder)
    d = load_cifar10(tmp_path, download=False)
    assert d.name == "cifar10" and d.classes == cifar10.CIFAR10_CLASSES
    assert d.x_train.shape == (100, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    raw = pickle.loads((folder / "data_batch_2").read_bytes())
    assert torch.equal(d.x_train[20:40].reshape(20, -1), torch.from_numpy(raw[b"data"]))
    # a second load comes from the cache and is an independent copy
    first = d.x_train[0].clone()
    d.x_train[0] = 0
    again = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert torch.equal(again.x_train[0], first) and torch.equal(again.x_train[1:], d.x_train[1:])


def test_cifar_md5_mismatch_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / cifar10.CIFAR10_DIRNAME
    _write_fake_cifar(folder)
    _patch_cifar_md5(monkeypatch, folder)
    expected = cifar10.CIFAR10_MD5["data_batch_3"]
    _flip_byte(folder / "data_batch_3")
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path, download=False)
    msg = str(err.value)
    assert "data_batch_3" in msg and expected in msg and md5sum(folder / "data_batch_3") in msg


def test_cifar_changed_file_after_cached_load_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / cifar10.CIFAR10_DIRNAME
    _write_fake_cifar(folder)
    _patch_cifar_md5(monkeypatch, folder)
    load_cifar10(tmp_path, download=False)
    _flip_byte(folder / "test_batch")
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(tmp_path, download=False)


def test_cifar_missing_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / cifar10.CIFAR10_DIRNAME
    _write_fake_cifar(folder)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        load_cifar10(tmp_path, download=False)


def test_cifar_missing_folder_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / cifar10.CIFAR10_DIRNAME) in msg
    assert "--data-dir" in msg and "REM_DATA_DIR" in msg and cifar10.CIFAR10_URL in msg


def test_cifar_failed_download_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cifar10, "CIFAR10_URL", (tmp_path / "missing" / "cifar-10-python.tar.gz").as_uri())
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as err:
        load_cifar10(data_dir, download=True)
    msg = str(err.value)
    assert str(data_dir / cifar10.CIFAR10_DIRNAME) in msg and "REM_DATA_DIR" in msg
    assert not list(data_dir.glob("*.part")) and not list(data_dir.glob("*.tar.gz"))  # nothing half-written


def test_cifar_download_and_extract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = tmp_path / "src" / cifar10.CIFAR10_DIRNAME
    _write_fake_cifar(src)
    _patch_cifar_md5(monkeypatch, src)
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    _make_tar(archive, {cifar10.CIFAR10_DIRNAME: src})
    monkeypatch.setattr(cifar10, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar10, "CIFAR10_ARCHIVE_MD5", md5sum(archive))
    data_dir = tmp_path / "data"
    d = load_cifar10(data_dir, download=True)
    assert d.x_train.shape == (100, 3, 32, 32)
    assert (data_dir / cifar10.CIFAR10_DIRNAME / "batches.meta").is_file()
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_cifar_download_with_wrong_md5_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = tmp_path / "src" / cifar10.CIFAR10_DIRNAME
    _write_fake_cifar(src)
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    _make_tar(archive, {cifar10.CIFAR10_DIRNAME: src})
    monkeypatch.setattr(cifar10, "CIFAR10_URL", archive.as_uri())
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="md5"):
        load_cifar10(data_dir, download=True)
    assert list(data_dir.iterdir()) == []


def test_unsafe_archive_members_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = data_dir / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(f"{cifar10.CIFAR10_DIRNAME}/../../evil.txt")
        payload = b"x"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    monkeypatch.setattr(cifar10, "CIFAR10_ARCHIVE_MD5", md5sum(archive))
    with pytest.raises(DataError, match="unsafe"):
        load_cifar10(data_dir, download=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (data_dir / cifar10.CIFAR10_DIRNAME).exists()


# --------------------------------------------------------------------------------------------------
# SVHN on fake files.


def test_svhn_fake_mat_loads_and_maps_10_to_0(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / svhn.SVHN_DIRNAME
    _write_fake_svhn(folder)
    for fname in svhn.SVHN_MD5:
        monkeypatch.setitem(svhn.SVHN_MD5, fname, md5sum(folder / fname))
    d = load_svhn(tmp_path, download=False)
    assert d.name == "svhn" and d.classes == tuple(str(i) for i in range(10))
    assert d.x_train.shape == (30, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    expected = torch.tensor([(i % 10 + 1) % 10 for i in range(30)])
    assert torch.equal(d.y_train, expected)  # 10 -> 0, others unchanged
    raw = scipy.io.loadmat(str(folder / "train_32x32.mat"))["X"]
    assert torch.equal(d.x_train[7], torch.from_numpy(raw[:, :, :, 7].transpose(2, 0, 1).copy()))
    assert load_dataset("svhn", data_dir=tmp_path, download=False).n_train == 30


def test_svhn_changed_byte_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / svhn.SVHN_DIRNAME
    _write_fake_svhn(folder)
    for fname in svhn.SVHN_MD5:
        monkeypatch.setitem(svhn.SVHN_MD5, fname, md5sum(folder / fname))
    _flip_byte(folder / "test_32x32.mat")
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_svhn(tmp_path, download=False)


def test_svhn_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_svhn(tmp_path, download=False)
    assert str(tmp_path / svhn.SVHN_DIRNAME) in str(err.value)


# --------------------------------------------------------------------------------------------------
# Transforms and dispatch.


def test_subsample_balanced_deterministic_sorted() -> None:
    d = make_generated(n_train=300, n_test=100, seed=0)
    a = subsample(d, 50, 20, seed=5)
    b = subsample(d, 50, 20, seed=5)
    c = subsample(d, 50, 20, seed=6)
    assert a.n_train == 50 and a.n_test == 20
    assert a.class_counts("train") == [5] * 10 and a.class_counts("test") == [2] * 10
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    idx = ds.balanced_subset_indices(d.y_train, 50, 10, seed=5)
    assert torch.all(idx[1:] > idx[:-1])  # data-set order kept
    assert torch.equal(a.x_train, d.x_train[idx])
    whole = subsample(d, None, None)
    assert torch.equal(whole.x_train, d.x_train)
    with pytest.raises(ConfigError):
        subsample(d, 301, None)


def test_subsample_uneven_classes_fills_from_others() -> None:
    y = torch.tensor([0] * 3 + [1] * 50 + [2] * 50)
    idx = ds.balanced_subset_indices(y, 31, 3, seed=0)
    counts = torch.bincount(y[idx], minlength=3).tolist()
    assert sum(counts) == 31 and counts[0] == 3 and abs(counts[1] - counts[2]) <= 1


def test_downsample_shape_dtype_mean() -> None:
    d = make_generated(n_train=40, n_test=10, seed=0)
    s = downsample(d, 16)
    assert s.x_train.shape == (40, 3, 16, 16) and s.x_test.shape == (10, 3, 16, 16)
    assert s.x_train.dtype == torch.uint8 and s.image_size == 16
    assert torch.equal(s.y_train, d.y_train)
    assert abs(s.x_train.float().mean().item() - d.x_train.float().mean().item()) < 0.5
    # exact 2x2 average on a known image
    x = torch.tensor([[0, 2], [4, 6]], dtype=torch.uint8).repeat(1, 3, 2, 2)
    tiny = ImageData("t", x, torch.zeros(1, dtype=torch.int64), x, torch.zeros(1, dtype=torch.int64), 1, ("a",))
    assert torch.all(downsample(tiny, 2).x_train == 3)
    with pytest.raises(ConfigError):
        downsample(d, 64)


def test_load_dataset_dispatch() -> None:
    d = load_dataset("generated", n_train=20, n_test=10, seed=1)
    assert d.n_train == 20
    with pytest.raises(ConfigError):
        load_dataset("imagenet")
    with pytest.raises(ConfigError):
        load_dataset("cifar10", n_train=5)


def test_imagedata_validates_and_moves() -> None:
    d = make_generated(n_train=20, n_test=10, seed=0)
    moved = d.to("cpu")
    assert torch.equal(moved.x_train, d.x_train)
    with pytest.raises(DataError):
        ImageData("bad", d.x_train.float(), d.y_train, d.x_test, d.y_test, 10, d.classes)
    with pytest.raises(DataError):
        ImageData("bad", d.x_train, d.y_train + 10, d.x_test, d.y_test, 10, d.classes)


# --------------------------------------------------------------------------------------------------
# The real CIFAR-10 (skipped when it is not on this machine).


@pytest.mark.cifar
def test_real_cifar10() -> None:
    folder = resolve_data_dir() / cifar10.CIFAR10_DIRNAME
    if not folder.is_dir():
        pytest.skip(f"real CIFAR-10 not found at {folder} (set REM_DATA_DIR)")
    for name, md5 in cifar10.CIFAR10_MD5.items():
        assert md5sum(folder / name) == md5, name
    d = load_cifar10(download=False)
    assert d.x_train.shape == (50000, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.x_test.shape == (10000, 3, 32, 32) and d.x_test.dtype == torch.uint8
    assert d.class_counts("train") == [5000] * 10 and d.class_counts("test") == [1000] * 10
    assert d.classes == cifar10.CIFAR10_CLASSES


def test_cifar_md5_and_missing_file_give_the_same_advice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A damaged file and a missing one end in the same advice (issue 14, item 12)."""
    folder = tmp_path / cifar10.CIFAR10_DIRNAME
    _write_fake_cifar(folder)
    _patch_cifar_md5(monkeypatch, folder)
    _flip_byte(folder / "data_batch_3")
    with pytest.raises(DataError) as damaged:
        load_cifar10(tmp_path, download=False)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as missing:
        load_cifar10(tmp_path, download=False)
    advice = str(missing.value).split("lacks data_batch_3. ")[1]
    assert str(damaged.value).endswith(advice) and "--data-dir" in advice and f"Delete the folder {folder}" in advice
