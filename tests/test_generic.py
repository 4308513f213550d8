"""Healing a user's own classifier: the generic capacity wrapper, user data, rem.unlearn on any module, the CLI."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rem
from rem.data.datasets import make_generated
from rem.data.loader import train_batches
from rem.data.tasks import TaskConfig, make_task
from rem.data.user import Preprocess, user_task
from rem.errors import ConfigError, DataError, IndexSetError
from rem.metrics import evaluate
from rem.models import SHARED_KEY, expand, mask_keys, shrink
from rem.models.generic import Branch, GenericCapacity, select_targets
from rem.train import Recipe, fit

_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "heal_resnet18.py"
_spec = importlib.util.spec_from_file_location("heal_resnet18", _EXAMPLE)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


class MLP(nn.Module):
    def __init__(self, size: int = 16, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * size * size, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.net(x))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, pre-norm blocks with nn.MultiheadAttention."""

    def __init__(self, size: int = 16, patch: int = 4, dim: int = 32, depth: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "norm1": nn.LayerNorm(dim),
                        "attn": nn.MultiheadAttention(dim, 4, batch_first=True),
                        "norm2": nn.LayerNorm(dim),
                        "fc1": nn.Linear(dim, 2 * dim),
                        "fc2": nn.Linear(2 * dim, dim),
                    }
                )
            )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        for b in self.blocks:
            h = b["norm1"](t)
            t = t + b["attn"](h, h, h, need_weights=False)[0]
            t = t + b["fc2"](F.gelu(b["fc1"](b["norm2"](t))))
        return self.head(self.norm(t[:, 0]))


ARCHS = {
    "resnet18": lambda: example.ResNet18(num_classes=10, width=4),
    "mlp": lambda: MLP(),
    "vit": lambda: TinyViT(),
}


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ARCHS[name]()


def _perturb_branches(w: GenericCapacity, scale: float = 0.5) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in w.branches.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_drop_mode_is_the_original_and_shrink_gives_the_users_class(arch):
    model = _build(arch).eval()
    x = torch.randn(6, 3, 16, 16)
    ref = model(x)
    wrapped = expand(GenericCapacity(copy.deepcopy(model)), 1.0, seed=3).eval()
    assert wrapped.has_extra and wrapped.extra == [max(1, round(k)) for k in wrapped.kept]
    keys = torch.arange(6)
    for mode in ("drop", "mask", "full"):  # the output projection starts at zero: every mode is the original
        assert (wrapped(x, mode=mode, keys=keys) - ref).abs().max().item() <= 1e-5, mode
    _perturb_branches(wrapped)
    assert (wrapped(x, mode="drop") - ref).abs().max().item() <= 1e-5
    back = shrink(wrapped).unwrap()
    assert type(back) is type(model)
    assert list(back.state_dict()) == list(model.state_dict())
    fresh = _build(arch, seed=7)
    fresh.load_state_dict(back.state_dict(), strict=True)
    assert (fresh.eval()(x) - ref).abs().max().item() <= 1e-5
    assert all(len(m._forward_hooks) == 0 for m in back.modules())


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_up_init_default_keeps_drop_mode_exact_and_starts_the_branches_live(arch):
    """``up_init="default"`` (as the built-in expansion's new channels): drop mode is still the user's model,
    the masked path differs from the start, and the option survives a re-expansion; a bad value is refused."""
    model = _build(arch).eval()
    x = torch.randn(6, 3, 16, 16)
    ref = model(x)
    wrapped = expand(GenericCapacity(copy.deepcopy(model), up_init="default"), 0.5, seed=3).eval()
    assert all(b.up.weight.abs().sum() > 0 for b in wrapped.branches.values())
    assert (wrapped(x, mode="drop") - ref).abs().max().item() <= 1e-5
    assert (wrapped(x, mode="full") - ref).abs().max().item() > 1e-4
    assert wrapped.with_extra(wrapped.extra).up_init == "default"
    back = shrink(wrapped).unwrap()
    _build(arch, seed=7).load_state_dict(back.state_dict(), strict=True)
    with pytest.raises(ConfigError, match="up_init"):
        GenericCapacity(copy.deepcopy(model), up_init="small")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_masked_path_differs_once_branches_move_and_gradients_reach_them(arch):
    model = _build(arch).eval()
    wrapped = expand(GenericCapacity(model), 1.0).eval()
    x = torch.randn(4, 3, 16, 16)
    keys = torch.arange(4)
    wrapped(x, mode="drop").sum().backward()  # θ_o2 gets exactly no gradient in drop mode
    assert all(p.grad is None or not p.grad.any() for p in wrapped.branches.parameters())
    wrapped.zero_grad()
    wrapped(x, mode="mask", keys=keys).pow(2).sum().backward()  # zero-init up still gets gradient (as LoRA's B)
    assert any(b.up.weight.grad is not None and b.up.weight.grad.abs().sum() > 0 for b in wrapped.branches.values())
    _perturb_branches(wrapped)
    drop, masked = wrapped(x, mode="drop"), wrapped(x, mode="mask", keys=keys)
    assert (masked - drop).abs().max().item() > 1e-3
    assert (wrapped(x, mode="full") - masked).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_forget_set_shares_one_mask(arch):
    wrapped = expand(GenericCapacity(_build(arch)), 1.0).eval()
    _perturb_branches(wrapped)
    x = torch.randn(1, 3, 16, 16).repeat(4, 1, 1, 1)  # one image, four samples
    shared = torch.zeros(100, dtype=torch.bool)
    shared[[10, 20]] = True
    keys = mask_keys(torch.tensor([10, 20, 30, 40]), shared)
    assert keys[:2].tolist() == [SHARED_KEY, SHARED_KEY] and keys[2:].tolist() == [30, 40]
    seen = {}

    def spy(name):
        def hook(mod, args, out):
            seen.setdefault(name, []).append(mod._gate.clone())

        return hook

    for k, b in wrapped.branches.items():
        b.register_forward_hook(spy(k))  # not called by the wrapper; read the gate its hook used
        b.down.register_forward_hook(lambda m, a, o, b=b, k=k: seen.setdefault(k, []).append(b._gate.clone()))
    out = wrapped(x, mode="mask", keys=keys)
    assert torch.equal(out[0], out[1])  # D_f: one mask
    assert not torch.equal(out[2], out[3])  # others: each its own
    for gates in seen.values():
        g = gates[0]
        assert torch.equal(g[0], g[1])
    assert any(not torch.equal(gs[0][2], gs[0][3]) for gs in seen.values())
    again = wrapped(x[:1], mode="mask", keys=torch.tensor([30]))  # a sample's mask is a function of its key
    assert torch.allclose(again[0], out[2], atol=1e-5)


def test_targets_by_type_name_and_pattern():
    vit = TinyViT()
    default = select_targets(vit)
    assert "head" not in default and "embed" in default and "blocks.0.fc1" in default
    assert not any("attn" in n for n in default)  # MultiheadAttention never calls its out_proj
    assert select_targets(vit, ["fc1", "fc2"]) == ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]
    assert select_targets(vit, r"blocks\.\d\.fc1") == ["blocks.0.fc1", "blocks.1.fc1"]
    assert select_targets(vit, [nn.Conv2d]) == ["embed"]
    assert "embed" not in select_targets(vit, exclude=["embed"])
    assert select_targets(vit, ["blocks.1"]) == ["blocks.1.fc1", "blocks.1.fc2"]  # a block: the layers inside
    assert select_targets(vit, exclude=["blocks"]) == ["embed"]
    with pytest.raises(ConfigError, match="neither a Conv2d / Linear nor a block"):
        select_targets(vit, ["norm"])
    with pytest.raises(ConfigError, match="MultiheadAttention"):
        select_targets(vit, ["out_proj"])
    with pytest.raises(ConfigError, match="no target layer"):
        select_targets(vit, ["nothing_matches"])

    class Skips(nn.Module):  # a layer registered but never called
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(4, 4)
            self.used = nn.Linear(3 * 16 * 16, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.used(x.flatten(1)))

    w = expand(GenericCapacity(Skips()), 0.5)
    with pytest.raises(ConfigError, match="never ran"):
        w(torch.randn(2, 3, 16, 16), mode="full")


class TinyCNN(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(width)
        self.c2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(2 * width)
        self.c3 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.b3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(self.b2(self.c2(x)))
        x = F.relu(self.b3(self.c3(x)))
        return self.fc(F.adaptive_max_pool2d(x, 1).flatten(1))


@pytest.fixture(scope="module")
def backdoored():
    """A plain-torch CNN that learned a planted backdoor on generated data (trained through the wrapper's
    drop mode, which is the CNN's own forward)."""
    data = make_generated(n_train=1000, n_test=300, size=16, seed=0)
    task = make_task(data, TaskConfig(kind="poison", n_corrupt=50, seed=0))
    torch.manual_seed(0)
    cnn = TinyCNN()
    fit(GenericCapacity(cnn), task, None, Recipe(steps=300, batch_size=64, lr=0.05))
    return task, cnn.eval()


def test_rem_through_the_wrapper_heals_a_planted_backdoor(backdoored):
    task, cnn = backdoored
    fi = task.forget_idx(0.5)
    before = evaluate(GenericCapacity(cnn), task, fi)
    assert before["corrupt_acc"] >= 0.8 and before["asr"] >= 0.6, before  # the backdoor is there
    state = copy.deepcopy(cnn.state_dict())
    healed, history = rem.unlearn(cnn, task, fi, "rem", device="cpu", steps=64, batch_size=64, lr=0.01)
    assert all(torch.equal(state[k], v) for k, v in cnn.state_dict().items())  # input untouched
    assert type(healed) is TinyCNN and all(len(m._forward_hooks) == 0 for m in healed.modules())
    TinyCNN().load_state_dict(healed.state_dict(), strict=True)
    after = evaluate(GenericCapacity(healed), task, fi)
    assert after["healed"] >= before["healed"] + 0.3, (before, after)
    assert after["asr"] <= before["asr"] / 2, (before, after)
    assert after["utility"] >= before["utility"] - 0.08, (before, after)
    assert {"proxy", "acc_drop_f", "acc_mask_f"} <= set(history[0])


def test_rem_on_user_arrays_end_to_end(backdoored):
    task, _ = backdoored
    x = task.data.x_train.clone()
    task.trigger.stamp(x, task.triggered)  # the user's stored images carry the trigger (moved by crops, flips)
    images, labels = x.permute(0, 2, 3, 1).numpy(), task.y_train.numpy()
    data = user_task((images, labels))
    torch.manual_seed(0)
    cnn = TinyCNN()
    fit(GenericCapacity(cnn), data, None, Recipe(steps=300, batch_size=64, lr=0.05))  # trained on those arrays
    found = task.forget_idx(0.5).numpy()
    healed, _ = rem.unlearn(cnn, (images, labels), found, "rem", device="cpu", steps=20, batch_size=64, lr=0.01)
    assert type(healed) is TinyCNN
    w = GenericCapacity(cnn)
    acc = rem.metrics.accuracy(w, data, torch.as_tensor(found), data.y_train)
    acc_after = rem.metrics.accuracy(GenericCapacity(healed), data, torch.as_tensor(found), data.y_train)
    assert acc_after < acc - 0.3, (acc, acc_after)  # the found samples' poisoned labels are unlearned


BASELINES = [
    "none",
    "npo",
    "ascent",
    "finetune",
    "cf-2",
    "scrub",
    "badt",
    "ssd",
    "potion",
    "salun",
    "rem-no-remove",
    "rem-sp",
]


@pytest.mark.parametrize("method", BASELINES)
def test_methods_run_on_a_plain_module(method):
    data = make_generated(n_train=120, n_test=10, size=16, seed=1)
    x, y = data.x_train.numpy(), data.y_train.numpy()
    model = MLP()
    state = copy.deepcopy(model.state_dict())
    healed, history = rem.unlearn(model, (x, y), [0, 5, 9], method, device="cpu", steps=3, batch_size=32, max_epochs=2)
    assert type(healed) is MLP
    MLP().load_state_dict(healed.state_dict(), strict=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert isinstance(history, list)


def test_rem_reinit_on_a_plain_module_names_its_layer_count():
    data = make_generated(n_train=120, n_test=10, size=16, seed=1)
    x, y = data.x_train.numpy(), data.y_train.numpy()
    with pytest.raises(ConfigError, match="k must be in \\[1, 2\\]"):  # the MLP has two layers, reinit_k is 4
        rem.unlearn(MLP(), (x, y), [0, 5, 9], "rem-reinit", device="cpu", steps=3, batch_size=32)
    for method in ("rem-reinit", "rem-reinit-discover", "rem-reinit-outlier"):
        healed, _ = rem.unlearn(MLP(), (x, y), [0, 5, 9], method, device="cpu", steps=3, batch_size=32, reinit_k=1)
        MLP().load_state_dict(healed.state_dict(), strict=True)


@pytest.mark.parametrize("method", ["retrain", "eu-2", "eu-4"])
def test_methods_needing_the_recipe_are_refused(method):
    data = make_generated(n_train=40, n_test=10, size=16)
    with pytest.raises(ConfigError, match="recipe|initialisation"):
        rem.unlearn(MLP(), (data.x_train, data.y_train), [1], method, device="cpu")


def test_rem_ideal_needs_the_truth():
    data = make_generated(n_train=40, n_test=10, size=16)
    with pytest.raises(ConfigError, match="ground truth"):
        rem.unlearn(MLP(), (data.x_train, data.y_train), [1], "rem-ideal", device="cpu")


def test_benchmark_path_unchanged_and_generic_on_resnet9(make_gen_task):
    task = make_gen_task()
    model = rem.resnet9(num_classes=10, width=0.125)
    fi = task.forget_idx(0.5)
    native, _ = rem.unlearn(model, task, fi, "rem", device="cpu", steps=2, batch_size=64)
    assert type(native) is type(model) and native.kept == model.kept
    generic, _ = rem.unlearn(model, task, fi, "rem", device="cpu", steps=2, batch_size=64, capacity="generic")
    assert type(generic) is type(model)
    type(model)(kept=model.kept, extra=model.extra).load_state_dict(generic.state_dict(), strict=True)


# --- data -----------------------------------------------------------------------------------------


def test_user_data_from_arrays_npz_and_folders(tmp_path):
    from PIL import Image

    g = np.random.default_rng(0)
    x = g.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    a = user_task(x, y)
    assert a.data.x_train.shape == (12, 3, 8, 8) and a.data.num_classes == 3
    assert torch.equal(a.data.x_train, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert torch.equal(
        user_task(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y)).data.x_train, a.data.x_train
    )
    assert torch.equal(user_task((x.astype(np.float32) / 255, y)).data.x_train, a.data.x_train)
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    assert torch.equal(user_task(tmp_path / "d.npz").data.x_train, a.data.x_train)
    root = tmp_path / "folder"
    for i in range(12):
        (root / f"c{y[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(root / f"c{y[i]}" / f"img{i:02d}.png")
    f = user_task(root)
    assert f.data.classes == ("c0", "c1", "c2") and f.files[0] == "c0/img00.png" and f.files[4] == "c1/img01.png"
    assert torch.equal(f.data.x_train[4], a.data.x_train[1]) and f.data.y_train.tolist() == sorted(y.tolist())
    with pytest.raises(DataError, match="no ground truth"):
        _ = f.corrupt_idx
    assert getattr(f, "corrupt_idx", None) is None  # how methods ask whether the truth is known


def test_user_data_errors(tmp_path):
    from PIL import Image

    x = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="labels out of range"):
        user_task(x, [0, 1, 2, 5], num_classes=3)
    with pytest.raises(DataError, match="labels out of range"):
        user_task(x, [0, 1, -1, 2])
    with pytest.raises(DataError, match="one label per image"):
        user_task(x, [0, 1])
    with pytest.raises(DataError, match="mixed sizes"):
        user_task([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], [0, 1])
    with pytest.raises(DataError, match="no images"):
        user_task(np.zeros((0, 8, 8, 3), np.uint8), [])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        user_task(x.astype(np.float32) * 3 + 2, [0, 0, 0, 0])
    with pytest.raises(DataError, match="without labels"):
        user_task(x)
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a" / "1.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "a" / "2.png")
    with pytest.raises(DataError, match="mixed sizes: a/2.png is 8x9"):
        user_task(root)
    t = user_task(x, [0, 1, 2, 3])
    with pytest.raises(IndexSetError, match="out of range"):
        t.check_forget_idx([1, 4])
    with pytest.raises(IndexSetError, match="duplicated"):
        t.check_forget_idx([1, 1])
    with pytest.raises(IndexSetError, match="empty"):
        t.check_forget_idx([])
    with pytest.raises(DataError, match="labels out of range: the data has label 11 but the model outputs 10"):
        rem.unlearn(MLP(size=8), (x, [0, 1, 2, 11]), [0], "npo", device="cpu")
    with pytest.raises(DataError, match="cannot take these images"):
        rem.unlearn(MLP(size=16), (x, [0, 1, 2, 3]), [0], "npo", device="cpu")


def test_preprocess_settings_reach_the_batches():
    g = np.random.default_rng(1)
    x = g.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    plain = user_task(
        x,
        [0, 1, 0, 1, 0],
        preprocess={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "crop_pad": 0, "flip": False},
    )
    xb, _, idx = next(iter(train_batches(plain, None, batch_size=5, shuffle=False)))
    want = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    assert torch.allclose(xb, want, atol=1e-5)  # augmentation on, but no crop and no flip: images unchanged
    default = user_task(x, [0, 1, 0, 1, 0])
    assert default.preprocess.crop_pad == 1 and default.preprocess.flip and default.preprocess.mean[0] == 0.4914
    with pytest.raises(DataError, match="channel"):
        user_task(x[..., :1], [0, 1, 0, 1, 0])
    gray = user_task(x[..., 0], [0, 1, 0, 1, 0], preprocess=Preprocess(mean=(0.5,), std=(0.2,)))
    assert gray.data.x_train.shape[1] == 1


def test_branch_refuses_other_layers():
    with pytest.raises(ConfigError, match="Conv2d and Linear"):
        Branch(nn.LayerNorm(4), 2)


# --- CLI ------------------------------------------------------------------------------------------

FACTORY = """
import torch.nn as nn

def mlp(num_classes=10, hidden=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

def broken():
    raise RuntimeError("cannot build")
"""


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    (tmp_path / "mymodels.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import importlib

    mymodels = importlib.import_module("mymodels")
    model = mymodels.mlp()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    g = np.random.default_rng(2)
    np.savez(tmp_path / "d.npz", x=g.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), y=np.arange(40) % 10)
    (tmp_path / "found.txt").write_text("3\n7\n11\n")
    return tmp_path, mymodels, model


def _cli(args):
    from rem.cli import main

    return main(["unlearn", *args, "--quiet", "--device", "cpu"])


def test_cli_heals_a_factory_model(user_files, capsys):
    tmp, mymodels, _ = user_files
    rc = _cli(
        [
            "--model",
            "mymodels:mlp",
            "--weights",
            "w.safetensors",
            "--data",
            "d.npz",
            "--forget",
            "found.txt",
            "--out",
            "out/healed.safetensors",
            "--steps",
            "2",
            "--set",
            "batch_size=16",
            "--set",
            "max_epochs=2",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    from safetensors.torch import load_file

    mymodels.mlp().load_state_dict(load_file(str(tmp / "out" / "healed.safetensors")), strict=True)
    record = json.loads((tmp / "out" / "healed.json").read_text())
    assert record["method"] == "rem" and record["n_found"] == "3" and "acc_found" in record["after"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "nosuchpkg.models:mlp"}, "cannot import the model factory 'nosuchpkg.models:mlp'"),
        ({"--model": "mymodels:nothere"}, "has no callable 'nothere'"),
        ({"--model": "mymodels:broken"}, "failed: RuntimeError: cannot build"),
        ({"--model": "mymodels"}, "MODULE:FACTORY"),
        ({"--factory-kwargs": '{"hidden": 16}'}, "do not fit the architecture Sequential: 3 of another shape"),
        ({"--factory-kwargs": '{"num_classes": 5}'}, "do not fit the architecture"),
        ({"--weights": "missing.safetensors"}, "no weights file"),
        ({"--weights": "model.pt"}, "never unpickles"),
        ({"--weights": "d.npz"}, "not a readable safetensors file"),
        ({"--data": "nothing.npz"}, "no data at"),
        ({"--data": "labels12.npz"}, "labels out of range: the data has label 12 but the model outputs 10 classes"),
        ({"--data": "mixed"}, "images of mixed sizes"),
        ({"--forget": "bad.txt"}, "out of range"),
        ({"--forget": "dup.txt"}, "duplicated"),
        ({"--set": "nosuch=1"}, "has no setting"),
        ({"--method": "retrain"}, "recipe"),
        ({"--set": "soft_mask=maybe"}, "soft_mask"),
        ({"--out": "w.safetensors"}, "would overwrite the starting weights"),
        ({"--out": "."}, "is a folder, not a file"),
    ],
)
def test_cli_errors_name_what_is_wrong(user_files, capsys, change, message):
    from PIL import Image

    tmp, _, _ = user_files
    (tmp / "model.pt").write_bytes(b"\x80\x04not a pickle to open")
    np.savez(tmp / "labels12.npz", x=np.zeros((20, 8, 8, 3), np.uint8), y=np.arange(20) % 13)
    (tmp / "mixed" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp / "mixed" / "cat" / "a.png")
    Image.fromarray(np.zeros((7, 8, 3), np.uint8)).save(tmp / "mixed" / "cat" / "b.png")
    (tmp / "bad.txt").write_text("1 2 400")
    (tmp / "dup.txt").write_text("1 2 2")
    opts = {
        "--model": "mymodels:mlp",
        "--weights": "w.safetensors",
        "--data": "d.npz",
        "--forget": "found.txt",
        "--out": "h.safetensors",
        **change,
    }
    argv = [t for kv in opts.items() for t in kv] + ["--steps", "1"]
    capsys.readouterr()
    assert _cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp / "h.safetensors").exists()


def test_cli_forget_by_file_name(tmp_path, monkeypatch, capsys):
    from PIL import Image
    from safetensors.torch import save_file

    (tmp_path / "mymodels.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import importlib

    save_file(dict(importlib.import_module("mymodels").mlp(num_classes=2).state_dict()), "w.safetensors")
    g = np.random.default_rng(3)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(g.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.jpg")
    (tmp_path / "found.txt").write_text("cat/1.jpg\ndog/4.jpg\n")
    rc = _cli(
        [
            "--model",
            "mymodels:mlp",
            "--factory-kwargs",
            '{"num_classes": 2}',
            "--weights",
            "w.safetensors",
            "--data",
            "imgs",
            "--forget",
            "found.txt",
            "--out",
            "h.safetensors",
            "--method",
            "npo",
            "--set",
            "max_epochs=1",
            "--set",
            "batch_size=8",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    (tmp_path / "found.txt").write_text("cat/1.jpg\nbird/4.jpg\n")
    assert (
        _cli(
            [
                "--model",
                "mymodels:mlp",
                "--factory-kwargs",
                '{"num_classes": 2}',
                "--weights",
                "w.safetensors",
                "--data",
                "imgs",
                "--forget",
                "found.txt",
                "--out",
                "h.safetensors",
            ]
        )
        == 2
    )
    assert "bird/4.jpg" in capsys.readouterr().err


def test_batch_norm_behaves_as_in_the_users_model():
    model = example.ResNet18(num_classes=10, width=4)
    raw = copy.deepcopy(model).train()
    wrapped = expand(GenericCapacity(copy.deepcopy(model)), 1.0).train()
    x = torch.randn(8, 3, 16, 16)
    assert torch.allclose(wrapped(x, mode="drop"), raw(x), atol=1e-5)  # batch statistics in train mode
    assert torch.allclose(wrapped.model.bn1.running_mean, raw.bn1.running_mean)  # running statistics updated alike
    wrapped.eval()
    assert not any(m.training for m in wrapped.model.modules())


def test_cli_unlearn_needs_a_checkpoint_or_a_model(capsys):
    assert _cli(["--rate", "0.5", "--out", "somewhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give --checkpoint" in err and "--model" in err, err


def test_user_model_reports_steps_and_takes_typed_settings():
    data = make_generated(n_train=60, n_test=10, size=16, seed=3)
    seen = []
    healed, history = rem.unlearn(
        MLP(),
        (data.x_train, data.y_train),
        [0, 1, 2],
        "rem",
        device="cpu",
        steps="3",  # text, parsed by the field's type (rem.settings)
        batch_size=32,
        max_epochs=1,
        soft_mask="true",
        on_step=lambda done, total, loss: seen.append((done, total)),
    )
    assert type(healed) is MLP and history and not healed.training
    assert seen and seen[-1] == (3, 3), seen
