import pytest
import torch

from rem.data.loader import Batches, random_crop_flip, train_batches
from rem.data.tasks import TaskConfig, Trigger, make_task
from rem.errors import ConfigError, IndexSetError


def test_poison_construction(make_gen_task):
    t = make_gen_task("poison", n_corrupt=30)
    assert len(t.corrupt_idx) == 30 and len(t.corrupt_idx.unique()) == 30
    assert (t.y_train[t.corrupt_idx] == 0).all()
    clean = torch.ones(t.n_train, dtype=torch.bool)
    clean[t.corrupt_idx] = False
    assert (t.y_train[clean] == t.y_true[clean]).all()
    assert t.triggered.sum() == 30 and t.triggered[t.corrupt_idx].all()


def test_interclass_construction(make_gen_task, gen_data):
    t = make_gen_task("interclass", n_corrupt=20)
    y = gen_data.y_train
    first_a = (y == 3).nonzero().squeeze(1)[:10]
    first_b = (y == 5).nonzero().squeeze(1)[:10]
    assert torch.equal(t.corrupt_idx, torch.cat([first_a, first_b]).sort().values)
    assert (t.y_train[first_a] == 5).all() and (t.y_train[first_b] == 3).all()
    assert not t.triggered.any()
    with pytest.raises(ConfigError, match="even"):
        make_gen_task("interclass", n_corrupt=21)


def test_random_labels_always_wrong(make_gen_task):
    t = make_gen_task("random", n_corrupt=100)
    assert (t.y_train[t.corrupt_idx] != t.y_true[t.corrupt_idx]).all()
    assert t.y_train.max() < 10 and t.y_train.min() >= 0


@pytest.mark.parametrize("kind", ["poison", "interclass", "random"])
def test_split_determinism_and_nesting(make_gen_task, kind):
    a, b = make_gen_task(kind, seed=3), make_gen_task(kind, seed=3)
    assert torch.equal(a.corrupt_idx, b.corrupt_idx) and torch.equal(a.y_train, b.y_train)
    assert a.split_hash(a.forget_idx(0.5)) == b.split_hash(b.forget_idx(0.5))
    torch.manual_seed(123)  # global RNG state must not matter
    c = make_gen_task(kind, seed=3)
    assert torch.equal(c.forget_idx(0.3), a.forget_idx(0.3))
    prev = set()
    for rate in (0.1, 0.3, 0.5, 0.7, 1.0):
        f = set(a.forget_idx(rate).tolist())
        assert prev <= f and f <= set(a.corrupt_idx.tolist())
        prev = f
    assert len(a.forget_idx(1.0)) == len(a.corrupt_idx)
    if kind != "interclass":
        assert not torch.equal(make_gen_task(kind, seed=4).corrupt_idx, a.corrupt_idx)
    assert a.split_hash(a.forget_idx(0.3)) != a.split_hash(a.forget_idx(0.5))


def test_check_forget_idx_errors(make_gen_task):
    t = make_gen_task("poison")
    with pytest.raises(IndexSetError, match="out of range"):
        t.check_forget_idx([0, t.n_train])
    with pytest.raises(IndexSetError, match="out of range"):
        t.check_forget_idx([-1])
    with pytest.raises(IndexSetError, match="duplicated"):
        t.check_forget_idx([1, 1])
    with pytest.raises(IndexSetError, match="empty"):
        t.check_forget_idx([])
    with pytest.raises(IndexSetError, match="integers"):
        t.check_forget_idx(torch.tensor([0.5]))
    outside = [i for i in range(t.n_train) if i not in set(t.corrupt_idx.tolist())][:2]
    with pytest.raises(IndexSetError, match="not in the corrupted set"):
        t.check_forget_idx(outside, within_corrupt=True)
    assert t.check_forget_idx(t.forget_idx(0.5).flip(0)).tolist() == t.forget_idx(0.5).tolist()


def test_trigger_stays_in_place_under_augmentation(make_gen_task):
    t = make_gen_task("poison", n_corrupt=40)
    b = train_batches(t, t.corrupt_idx, batch_size=40, augment=True, seed=1)
    for _ in range(3):  # several epochs of random crops and flips
        x, y, idx = next(iter(b))
        raw = x * b.norm.std + b.norm.mean  # back to pixel values
        assert torch.allclose(raw[:, :, -3:, -3:], torch.full_like(raw[:, :, -3:, -3:], 255.0), atol=1e-3)
        assert (y == 0).all()


def test_trigger_only_on_flagged_samples_and_corners():
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    Trigger(size=2, corner="top-left").stamp(x, torch.tensor([True, False, True, False]))
    assert (x[0, :, :2, :2] == 255).all() and x[1].sum() == 0 and x[0, :, 2:, :].sum() == 0
    with pytest.raises(ConfigError):
        Trigger(corner="middle")


def test_crop_flip_is_a_shift_or_flip_of_the_input():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 255, (16, 3, 8, 8), dtype=torch.uint8)
    y = random_crop_flip(x, 0, g)
    for a, b in zip(x, y):
        assert torch.equal(a, b) or torch.equal(a.flip(2), b)
    z = random_crop_flip(x, 2, g)
    assert z.shape == x.shape and z.dtype == torch.uint8


@pytest.mark.parametrize("mode,pad_mode", [("zeros", "constant"), ("reflect", "reflect")])
def test_crop_padding_matches_torch_pad(mode, pad_mode):
    """Zero and mirrored padding equal cropping F.pad's output at the same offsets, then flipping."""
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    y = random_crop_flip(x, 2, torch.Generator().manual_seed(3), mode)
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order
    dy, dx = torch.randint(0, 5, (32,), generator=g), torch.randint(0, 5, (32,), generator=g)
    flip = torch.rand(32, generator=g) < 0.5
    xp = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode=pad_mode)
    ref = torch.stack([xp[i, :, dy[i] : dy[i] + 16, dx[i] : dx[i] + 16] for i in range(32)])
    assert torch.equal(y.float(), torch.where(flip[:, None, None, None], ref.flip(3), ref))
    with pytest.raises(ValueError):
        random_crop_flip(x, 2, g, "wrap")


def test_task_crop_pad_reaches_the_iterator(gen_data):
    t = make_task(gen_data, TaskConfig(kind="poison", n_corrupt=20, crop_pad="reflect"))
    assert train_batches(t).pad_mode == "reflect" and "crop_pad" in t.config.as_dict()
    assert TaskConfig().as_dict()["crop_pad"] == "zeros"  # always in the dict (and so in every key)
    with pytest.raises(ConfigError):
        TaskConfig(crop_pad="wrap")


def test_batches_carry_indices_and_cover_subset(make_gen_task):
    t = make_gen_task("random")
    idx = torch.arange(0, 100, 3)
    seen = torch.cat([b[2] for b in Batches(t.data.x_train, t.y_train, idx, batch_size=7, shuffle=True)])
    assert sorted(seen.tolist()) == idx.tolist()
    for x, y, bidx in Batches(t.data.x_train, t.y_train, idx, batch_size=7):
        assert torch.equal(y, t.y_train[bidx]) and x.dtype == torch.float32


def test_task_config_roundtrip():
    c = TaskConfig(kind="poison", n_corrupt=10, trigger=Trigger(size=2))
    assert TaskConfig.from_dict(c.as_dict()) == c


def test_make_task_rejects_bad_config(gen_data):
    with pytest.raises(ConfigError):
        make_task(gen_data, TaskConfig(kind="poison", n_corrupt=10**6))
    with pytest.raises(ConfigError):
        TaskConfig(kind="nope")
