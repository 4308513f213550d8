"""The post-training backdoor defences (:mod:`rem.methods.defences`): each one's mechanism on a small backdoor.

A *planted* backdoor makes the mechanism checks sharp and fast: a tiny convnet (a user's own ``nn.Module``,
wrapped as rem wraps any model) trained on clean generated images, plus one batch-norm neuron wired by hand
to fire on the poison task's trigger (a white 3×3 square, bottom-right) and to vote for the target class. Its
attack success is 100 %. Every defence runs on it as on any model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rem.data.loader import train_batches
from rem.data.tasks import TaskConfig, make_task
from rem.errors import ConfigError
from rem.methods import Context, get_method
from rem.methods.defences.anp import ANPConfig, optimise_masks, prune_
from rem.methods.defences.common import classifier_head, clean_pool
from rem.methods.defences.neural_cleanse import anomaly_indices
from rem.metrics import evaluate
from rem.models.generic import GenericCapacity
from rem.models.vit import vit

pytestmark = pytest.mark.usefixtures("one_thread")

TARGET = 0
PLANTED = 8  # the planted neuron's channel in the batch norm


class Planted(nn.Module):
    """conv(3→8) ‖ trigger detector(3→1) → one batch norm over the 9 channels → ReLU → 4×4 mean pool → fc.

    The detector reads only the bottom-right 3×3 patch (the trigger's place): channel 8 of the batch norm."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.detector = nn.Conv2d(3, 1, 3)
        self.bn = nn.BatchNorm2d(9)
        self.fc = nn.Linear(9 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        t = self.detector(x[..., -3:, -3:]).expand(-1, -1, *z.shape[-2:])
        h = F.adaptive_avg_pool2d(F.relu(self.bn(torch.cat([z, t], 1))), 4)
        return self.fc(h.flatten(1))


@pytest.fixture(scope="module")
def task(gen_data):
    return make_task(gen_data, TaskConfig(kind="poison", n_corrupt=20, target=TARGET))


_PLANTED: dict = {}


@pytest.fixture(scope="module")
def planted(task):
    """The planted model (wrapped) and its metrics; the neuron fires 1.5 σ above the clean patches' mean, so
    that a few clean images reach it and gradients can find it (at 2.5 σ the ReLU hides it from every gradient:
    NC's reverse engineering and I-BAU's perturbation then find other, larger routes to the target)."""
    return _planted(task, 1.5)


def _planted(task, sigmas: float):
    if (id(task), sigmas) not in _PLANTED:
        _PLANTED[id(task), sigmas] = _make_planted(task, sigmas)
    return _PLANTED[id(task), sigmas]


def _make_planted(task, sigmas: float):
    torch.manual_seed(0)
    net = Planted()
    clean = clean_pool(task, torch.zeros(0, dtype=torch.int64), clean_subset=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    data = train_batches(task, clean, batch_size=64, seed=0)
    for _ in range(10):  # the clean part: a few epochs on the clean samples
        for x, y, _ in data:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():  # the detector: mean of the patch; its BN statistics those of clean patches
        net.detector.weight.fill_(1 / 27)
        net.detector.bias.zero_()
        r = torch.cat([net.detector(x[..., -3:, -3:]).flatten() for x, _, _ in data])
        net.bn.running_mean[PLANTED], net.bn.running_var[PLANTED] = r.mean(), r.var()
        net.bn.weight[PLANTED], net.bn.bias[PLANTED] = 1.0, -sigmas  # fires > sigmas σ above the clean mean
        planted_inputs = slice(16 * PLANTED, 16 * (PLANTED + 1))  # its 4×4 pooled map in the flattened features
        net.fc.weight[:, planted_inputs] = 0.0
        net.fc.weight[TARGET, planted_inputs] = 20.0 / 16
    model = GenericCapacity(net).eval()
    return model, evaluate(model, task)


def test_planted_backdoor_works(planted):
    _, m = planted
    assert m["asr"] > 0.95 and m["test_acc"] > 0.5
    assert m["test_acc"] < 0.95  # it also fires on a few clean images (1.5 σ), sending them to the target


# --- Neural Cleanse -----------------------------------------------------------------------------------


def test_anomaly_index_is_nc_mad_test():
    l1 = [10.0, 11.0, 9.0, 10.5, 2.0, 9.5]
    idx = anomaly_indices(l1)
    med = torch.tensor(l1).median().item()  # torch's lower median, 9.5
    mad = 1.4826 * torch.tensor([abs(v - med) for v in l1]).median().item()
    assert idx[4] == pytest.approx((med - 2.0) / mad)
    assert idx[4] > 2 and all(i < 2 for j, i in enumerate(idx) if j != 4)


@pytest.mark.slow
def test_neural_cleanse_finds_the_target_and_unlearns(planted, task):
    model, before = planted
    # λ's schedule on short epochs (10 mini-batches) so that it runs its course within 320 steps per class
    nc = get_method(
        "neural-cleanse", steps=20, batch_size=64, reverse_budget=8, epoch_samples=320, clean_subset=True, seed=0
    )
    out, history = nc.unlearn(model, task, task.forget_idx(0.5), Context())
    detect = history[0]
    index = detect["anomaly_index"]
    assert TARGET in detect["flagged"] and index[TARGET] > 2, index
    assert max(range(10), key=lambda y: index[y]) == TARGET  # the most anomalous class: the smallest trigger
    assert min(range(10), key=lambda y: detect["l1"][y]) == TARGET
    after = evaluate(out, task)
    assert after["asr"] < 0.5 * before["asr"]


# --- ANP ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_anp_mask_prunes_the_planted_neuron(planted, task):
    model, before = planted
    pool = clean_pool(task, task.forget_idx(0.5), clean_subset=True)
    cfg = ANPConfig(steps=150, seed=0)
    data = train_batches(task, pool, batch_size=cfg.anp_batch_size, seed=0)
    masks = optimise_masks(model, data, cfg, Context(), [])
    m = masks["model.bn"]
    assert m[PLANTED] < cfg.threshold, m
    assert m[PLANTED] == m.min()
    out, history = get_method("anp", steps=150, clean_subset=True, seed=0).unlearn(model, task, task.forget_idx(0.5))
    assert PLANTED in history[-1]["pruned"]["model.bn"]
    after = evaluate(out, task)
    assert after["asr"] < 0.2 and after["test_acc"] > before["test_acc"] - 0.15


def test_anp_prune_zeroes_only_the_masked_neurons():
    bn = nn.BatchNorm2d(4)
    model = nn.Sequential(bn)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    pruned = prune_(model, {"0": torch.tensor([0.9, 0.1, 0.5, 0.19])}, 0.2)
    assert pruned == {"0": [1, 3]}
    assert bn.weight.tolist() == [1.0, 0.0, 3.0, 0.0]


def test_anp_refuses_a_model_without_batch_norm(task):
    v = vit(num_classes=10, image_size=16, patch=4, dim=16, depth=1, heads=2, head_dim=8, mlp=16)
    with pytest.raises(ConfigError, match="batch-norm"):
        get_method("anp", steps=1).unlearn(v, task, task.forget_idx(0.5))


# --- I-BAU --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ibau_lowers_the_attack_success(planted, task):
    model, before = planted
    out, history = get_method("i-bau", steps=100, clean_subset=True, seed=0).unlearn(model, task, task.forget_idx(0.5))
    after = evaluate(out, task)
    assert after["asr"] < 0.5 * before["asr"], after
    assert any(h.get("phase") == "round" for h in history)


# --- FST ----------------------------------------------------------------------------------------------


def test_fst_shifts_the_head_and_lowers_the_attack_success(planted, task):
    model, before = planted
    _, head0 = classifier_head(model, 10)
    w0 = head0.weight.detach().clone()
    out, _ = get_method("fst", steps=60, batch_size=64, lr=0.01, clean_subset=True, seed=0).unlearn(
        model, task, task.forget_idx(0.5)
    )
    _, head = classifier_head(out, 10)
    w = head.weight.detach()
    assert float(w.norm()) == pytest.approx(float(w0.norm()), rel=1e-4)  # the constraint ‖w‖ = ‖w_ori‖
    assert (w * w0).sum() < 0.5 * (w0 * w0).sum()  # shifted away from the original head
    after = evaluate(out, task)
    assert after["asr"] < 0.5 * before["asr"], after


def test_defences_take_d_r_or_the_clean_subset(task):
    forget = task.forget_idx(0.5)
    d_r, clean = clean_pool(task, forget, False), clean_pool(task, forget, True)
    undiscovered = task.corrupt_idx[~torch.isin(task.corrupt_idx, forget)]
    assert torch.isin(undiscovered, d_r).all() and not torch.isin(undiscovered, clean).any()
    assert not torch.isin(forget, d_r).any() and len(d_r) - len(clean) == len(undiscovered)


# --- on a user's own model and data -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["neural-cleanse", "anp", "i-bau", "fst"])
def test_defences_run_on_a_users_plain_module(method, gen_data):
    import rem

    x, y = gen_data.x_train[:120].numpy(), gen_data.y_train[:120].numpy()
    model = Planted()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    healed, history = rem.unlearn(model, (x, y), [0, 5, 9], method, device="cpu", steps=2, batch_size=32)
    assert type(healed) is Planted and isinstance(history, list)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="ground truth"):
        rem.unlearn(model, (x, y), [0, 5, 9], method, device="cpu", steps=2, clean_subset=True)


def test_anp_refuses_a_users_model_without_batch_norm(gen_data):
    import rem

    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.raises(ConfigError, match="batch-norm"):
        rem.unlearn(mlp, (gen_data.x_train[:40].numpy(), gen_data.y_train[:40].numpy()), [1], "anp", device="cpu")


@pytest.mark.parametrize("method", ["neural-cleanse", "i-bau", "fst"])
def test_defences_run_on_the_vit(method, task):
    # i-bau differentiates twice through attention: the fused attention kernels have no double backward
    v = vit(num_classes=10, image_size=16, patch=4, dim=16, depth=1, heads=2, head_dim=8, mlp=16)
    out, _ = get_method(method, steps=2, batch_size=32).unlearn(v, task, task.forget_idx(0.5))
    assert type(out).__name__ == "ViT" and not out.has_extra
