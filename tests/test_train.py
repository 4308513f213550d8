import pytest
import torch

from rem.errors import ConfigError
from rem.metrics import evaluate
from rem.profiles import get_profile
from rem.train import Recipe, pretrain, pretrain_spec, train_mode


def test_recipe_schedule():
    r = Recipe(steps=1000, lr=0.1)
    assert r.lr_at(0) == pytest.approx(0.01)  # 1 % warm-up: 10 steps
    assert r.lr_at(9) == pytest.approx(0.1)
    assert r.lr_at(1000) == pytest.approx(0.1 * (1 - 990 / 1240))  # decays towards 0 at 1.25 × steps
    assert Recipe(steps=10, lr=0.1, warmup=0, horizon=0).lr_at(7) == 0.1
    with pytest.raises(ConfigError):
        Recipe(steps=0)
    with pytest.raises(ConfigError):
        Recipe(optimizer="rmsprop")


def test_pretrain_specs():
    spec = get_profile("paper").arch_spec(10)
    assert spec["kept"] == [64, 128, 256, 128]
    assert pretrain_spec(spec, "capacity-0.5")["kept"] == [32, 64, 128, 64]
    etd = pretrain_spec(spec, "etd")
    assert etd["kept"] == [32, 64, 128, 64] and etd["extra"] == [32, 64, 128, 64]
    assert pretrain_spec(spec, "full")["kept"] == [64, 128, 256, 128]
    assert train_mode("etd") == "mask" and train_mode("full") == "drop"
    with pytest.raises(ConfigError):
        pretrain_spec(spec, "half")


@pytest.mark.parametrize("ptype", ["capacity-0.5", "etd"])
def test_pretraining_learns(make_gen_task, ptype):
    task = make_gen_task("random", n_corrupt=10)
    spec = get_profile("smoke").arch_spec(10)
    m = pretrain(task, spec, ptype, Recipe(steps=60, batch_size=64, lr=0.05), seed=0)
    acc = evaluate(m, task)["test_acc"]
    assert 0.5 <= acc <= 1, acc  # a share; chance is 0.1
    assert m.has_extra == (ptype == "etd")


def test_etd_trains_extra_channels_per_sample(make_gen_task):
    task = make_gen_task("random", n_corrupt=10)
    spec = get_profile("smoke").arch_spec(10)
    torch.manual_seed(0)
    m = pretrain(task, spec, "etd", Recipe(steps=3, batch_size=64, lr=0.05), seed=0)
    from rem.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        init = build_model(pretrain_spec(spec, "etd"))
    masks = m.extra_param_masks()
    moved = [
        (p.detach() - q.detach())[masks[n]].abs().sum() for (n, p), q in zip(m.named_parameters(), init.parameters())
    ]
    assert sum(moved) > 0  # θ_o2 is trained through the per-sample masks
