"""The baselines of SPEC §5 (and, through the registry, every method): one defining property per method,
plus an end-to-end run of every registered method on a tiny model and generated data, both on an
ordinary (capacity-0.5) and on an ETD starting model. Tiny budgets: seconds on a busy CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from rem.data.datasets import make_generated
from rem.data.loader import Batches
from rem.data.tasks import TaskConfig, make_task
from rem.errors import ConfigError
from rem.methods import REGISTRY, Context, get_method
from rem.methods.baselines import dampening, distill
from rem.methods.baselines.dampening import dampen_
from rem.methods.baselines.layers import last_layers, layer_groups, under
from rem.methods.baselines.salun import MaskedOptimizer, random_other_labels, saliency_mask
from rem.models import param_count, resnet9, shrink
from rem.models.vit import vit
from rem.train import Recipe, pretrain

TINY = {"steps": 3, "batch_size": 32, "max_epochs": 2}
RECIPE = Recipe(steps=3, batch_size=32, lr=0.05)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def task():
    data = make_generated(n_train=200, n_test=50, size=16, seed=0)
    return make_task(data, TaskConfig(kind="poison", n_corrupt=20))


@pytest.fixture(scope="module")
def forget_idx(task):
    return task.forget_idx(0.5)


def _start(task, ptype: str):
    arch = resnet9(num_classes=10, width=0.125).spec()
    return pretrain(task, arch, ptype, Recipe(steps=12, batch_size=32, lr=0.05), seed=0)


@pytest.fixture(scope="module")
def start_models(task):
    return {p: _start(task, p) for p in ("capacity-0.5", "etd")}


def _ctx(ptype: str = "capacity-0.5") -> Context:
    return Context(pretrain_type=ptype, pretrain_recipe=RECIPE)


def _state(m) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Seen:
    """Records the sample indices of every batch any Batches object yields."""

    def __init__(self, monkeypatch):
        self.idx: list[torch.Tensor] = []
        orig = Batches.__iter__
        seen = self

        def spy(batches_self):
            for x, y, bidx in orig(batches_self):
                seen.idx.append(bidx.cpu())
                yield x, y, bidx

        monkeypatch.setattr(Batches, "__iter__", spy)

    def all(self) -> torch.Tensor:
        return torch.cat(self.idx) if self.idx else torch.zeros(0, dtype=torch.int64)


# --- every registered method, end to end ------------------------------------------------------------


@pytest.mark.parametrize("ptype", ["capacity-0.5", "etd"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_end_to_end(name, ptype, task, forget_idx, start_models):
    model = start_models[ptype]
    before = _state(model)
    method = get_method(name, **TINY)
    assert method.summary and method.uses and (type(method).__doc__ or "").strip()
    out, out_history = method.unlearn(model, task, forget_idx, _ctx(ptype))
    assert _same(before, _state(model)), "the input model was modified"
    assert not out.has_extra and not out.training
    assert param_count(out) == param_count(shrink(model))
    assert isinstance(out_history, list)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.isfinite(out(x)).all()


def test_config_defaults_and_overrides():
    assert get_method("scrub").config.alpha == 0.01 and get_method("scrub").config.temperature == 4
    assert get_method("ssd").config.alpha == 10 and get_method("ssd").config.lam == 1
    assert get_method("cf-2").config.k == 2 and get_method("eu-4").config.k == 4
    assert get_method("badt").config.temperature == 1 and get_method("salun").config.share == 0.5
    assert get_method("potion").config.max_tries == 50 and get_method("finetune").config.lr == 0.005
    with pytest.raises(ConfigError):
        get_method("cf-2", k=0)
    with pytest.raises(ConfigError):
        get_method("ssd", reference="test")


# --- none, retrain, finetune, cf-k, eu-k --------------------------------------------------------------


def test_none_is_the_deployed_start_model(task, forget_idx, start_models):
    x = torch.randn(5, 3, 16, 16)
    for ptype, m in start_models.items():
        out, out_history = get_method("none").unlearn(m, task, forget_idx, _ctx(ptype))
        with torch.no_grad():
            assert torch.allclose(out(x), m.eval()(x, mode="drop"), atol=1e-5)


@pytest.mark.parametrize("name", sorted(n for n, c in REGISTRY.items() if c.uses == "D_r"))
def test_retain_methods_never_see_the_forget_set(name, task, forget_idx, start_models, monkeypatch):
    seen = _Seen(monkeypatch)
    out, out_history = get_method(name, **TINY).unlearn(start_models["capacity-0.5"], task, forget_idx, _ctx())
    idx = seen.all()
    assert idx.numel() > 0
    assert not torch.isin(idx, forget_idx).any(), f"{name} saw samples of D_f"
    if not getattr(REGISTRY[name], "acts_on_detection", False):  # NC / ANP may find nothing to patch or prune
        assert not _same(_state(out), _state(shrink(start_models["capacity-0.5"])))


def test_retrain_needs_the_recipe_and_reinitialises(task, forget_idx, start_models):
    m = start_models["etd"]
    with pytest.raises(ConfigError, match="pretraining recipe"):
        get_method("retrain").unlearn(m, task, forget_idx, Context(pretrain_type="etd"))
    out, out_history = get_method("retrain").unlearn(m, task, forget_idx, _ctx("etd"))
    assert out_history[0]["mode"] == "mask"  # an etd model is retrained in its training mode
    # far from the start model after only 3 steps: it was re-initialised
    assert not torch.allclose(out.conv1.conv.weight, shrink(m).conv1.conv.weight, atol=1e-2)


def test_layer_groups():
    r = resnet9(10, width=0.125)
    assert [g[0] for g in layer_groups(r)] == [
        "conv1",
        "conv2",
        "res1a",
        "res1b",
        "conv3",
        "res2a",
        "res2b",
        "conv4",
        "fc",
    ]
    assert last_layers(r, 2) == ["conv4", "fc"]
    assert last_layers(r, 4) == ["res2a", "res2b", "conv4", "fc"]
    v = vit(num_classes=5, dim=16, depth=3, heads=2, head_dim=8, mlp=16)
    assert last_layers(v, 2) == ["blocks.2", "norm", "head"]
    covered = [n for n, _ in v.named_parameters() if under(n, last_layers(v, len(layer_groups(v))))]
    assert len(covered) == len(list(v.named_parameters()))  # the layers cover every parameter
    with pytest.raises(ConfigError):
        last_layers(r, 10)


@pytest.mark.parametrize("name", ["cf-2", "cf-4", "eu-2", "eu-4"])
@pytest.mark.parametrize("ptype", ["capacity-0.5", "etd"])
def test_last_k_layers_only(name, ptype, task, forget_idx, start_models):
    m = start_models[ptype]
    before = _state(shrink(m))
    out, out_history = get_method(name, **TINY).unlearn(m, task, forget_idx, _ctx(ptype))
    after = _state(out)
    names = last_layers(m, int(name[-1]))
    frozen = [k for k in before if not under(k, names)]
    trained = [k for k in before if under(k, names)]
    assert any("running_mean" in k for k in frozen)  # BN statistics of frozen layers are checked too
    for k in frozen:
        assert torch.equal(before[k], after[k]), f"{name}: frozen {k} changed"
    assert any(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight"))
    assert all(p.requires_grad for p in out.parameters())
    if name.startswith("eu"):  # re-initialised: far from the start after 3 steps
        assert not torch.allclose(before["fc.weight"], after["fc.weight"], atol=1e-2)


# --- scrub, badt --------------------------------------------------------------------------------------


def test_scrub_teacher_never_changes(task, forget_idx, start_models, monkeypatch):
    teachers = []
    real = distill.frozen_copy

    def capture(model):
        t = real(model)
        teachers.append(t)
        return t

    monkeypatch.setattr(distill, "frozen_copy", capture)
    m = start_models["capacity-0.5"]
    scrub = get_method("scrub", steps=4, batch_size=32, rounds=2, msteps=1)
    out, out_history = scrub.unlearn(m, task, forget_idx, _ctx())
    assert len(teachers) == 1
    assert _same(_state(teachers[0]), _state(m))  # same weights and BN statistics as the start
    assert not teachers[0].training and not any(p.requires_grad for p in teachers[0].parameters())
    assert not _same(_state(out), _state(m))
    recs = [h for h in out_history if "round" in h]
    assert recs[0]["max_steps"] >= 1 and "max_steps" not in recs[1]  # max-epochs only in the first msteps
    assert sum(h["min_steps"] for h in recs) == 4


class _ConstTeacher(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits, self.keys = torch.tensor(logits), []

    def forward(self, x, mode="drop", keys=None, masks=None):
        self.keys.append(keys.clone())
        return self.logits.expand(len(x), -1)


def test_badt_random_teacher_only_for_forget_samples():
    good, bad = _ConstTeacher([3.0, 0.0, 0.0]), _ConstTeacher([0.0, 0.0, 3.0])
    idx = torch.tensor([4, 7, 9, 12, 15])
    in_forget = torch.tensor([False, True, False, True, False])
    out = distill.teacher_targets(torch.zeros(5, 3, 4, 4), idx, in_forget, good, bad, "mask", 1.0)
    assert torch.equal(torch.cat(bad.keys), torch.tensor([7, 12]))
    assert torch.equal(torch.cat(good.keys), torch.tensor([4, 9, 15]))
    assert torch.allclose(out[in_forget], torch.softmax(bad.logits, 0).expand(2, -1))
    assert torch.allclose(out[~in_forget], torch.softmax(good.logits, 0).expand(3, -1))
    only_retain = distill.teacher_targets(
        torch.zeros(2, 3, 4, 4), idx[:2], torch.zeros(2, dtype=torch.bool), good, bad, "mask", 1.0
    )
    assert torch.allclose(only_retain, torch.softmax(good.logits, 0).expand(2, -1))
    assert len(bad.keys) == 1  # not called for a batch without forget samples


# --- ssd, potion --------------------------------------------------------------------------------------


def _no_growth(before: dict, out) -> None:
    for n, p in out.named_parameters():
        assert (p.detach().abs() <= before[n].abs()).all(), f"|{n}| increased"


@pytest.mark.parametrize("kind", ["fisher", "logit-norm"])
def test_per_sample_importance_is_the_mean_over_samples(kind, task, start_models):
    m, idx = copy.deepcopy(start_models["capacity-0.5"]), torch.arange(5)
    a = dampening.importances(m, task, idx, 3, "cpu", kind, per_sample=True, chunk=2)
    b = dampening.importances(m, task, idx, 1, "cpu", kind, per_sample=False)  # batches of one sample
    for n in a:
        assert torch.allclose(a[n], b[n], rtol=1e-4, atol=1e-9), n


def test_ssd_never_increases_magnitudes(task, forget_idx, start_models):
    m = start_models["capacity-0.5"]
    before = _state(m)
    out, out_history = get_method("ssd", batch_size=32, alpha=0.5).unlearn(m, task, forget_idx, _ctx())
    _no_growth(before, out)
    assert out_history[0]["selected"] > 0
    assert any(not torch.equal(p, before[n]) for n, p in out.named_parameters())


def test_ssd_leaves_model_unchanged_without_forget_signal(task, forget_idx, start_models):
    p = torch.nn.Parameter(torch.randn(4, 5))
    model = torch.nn.Module()
    model.w = p
    w0 = p.detach().clone()
    assert dampen_(model, {"w": torch.zeros(4, 5)}, {"w": torch.rand(4, 5)}, 10.0, 1.0) == 0
    assert torch.equal(p.detach(), w0)
    imp_r = torch.rand(4, 5) + 0.1
    assert dampen_(model, {"w": 5 * imp_r}, {"w": imp_r}, 10.0, 1.0) == 0  # below the threshold
    assert torch.equal(p.detach(), w0)
    assert dampen_(model, {"w": 20 * imp_r}, {"w": imp_r}, 10.0, 1.0) == 20  # above: scaled by 1/20
    assert torch.allclose(p.detach(), w0 / 20)
    m = start_models["etd"]
    out, out_history = get_method("ssd", batch_size=32, alpha=1e6).unlearn(m, task, forget_idx, _ctx("etd"))
    assert out_history[0]["selected"] == 0 and _same(_state(out), _state(shrink(m)))


def test_potion_never_increases_and_stops_within_its_tries(task, forget_idx, start_models, monkeypatch):
    m = start_models["capacity-0.5"]
    before = _state(m)
    out, out_history = get_method("potion", batch_size=32, gamma=1.0).unlearn(m, task, forget_idx, _ctx())
    assert len(out_history) == 1  # the target is met at the first try
    _no_growth(before, out)
    monkeypatch.setattr(dampening, "accuracy", lambda *a, **k: 1.0)  # D_f accuracy never falls
    out, out_history = get_method("potion", batch_size=32, max_tries=4).unlearn(m, task, forget_idx, _ctx())
    tries = out_history
    assert [t["try"] for t in tries] == [0, 1, 2, 3]
    assert tries[0]["share"] == pytest.approx(len(forget_idx) / task.n_train)
    assert tries[1]["share"] == pytest.approx(1.1 * tries[0]["share"])
    assert all(t["percentile"] > tries[i + 1]["percentile"] for i, t in enumerate(tries[:-1]))
    assert tries[-1]["selected"] >= tries[0]["selected"] > 0
    _no_growth(before, out)


# --- salun --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_masked_optimizer_leaves_unmasked_entries_exactly(kind):
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    masks = {n: torch.rand_like(p) < 0.5 for n, p in lin.named_parameters()}
    w0 = _state(lin)
    opt = MaskedOptimizer(
        [(p, masks[n]) for n, p in lin.named_parameters()], kind, lr=0.1, momentum=0.9, weight_decay=0.1
    )
    for _ in range(5):
        opt.zero_grad()
        lin(torch.randn(8, 6)).pow(2).sum().backward()
        opt.step()
    for n, p in lin.named_parameters():
        m = masks[n]
        assert torch.equal(p.detach()[~m], w0[n][~m])
        assert (p.detach()[m] != w0[n][m]).all()
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
            if key in opt.state[p]:
                assert (opt.state[p][key][~m] == 0).all() and (opt.state[p][key][m] != 0).all()


def test_salun_trains_only_the_salient_half(task, forget_idx, start_models):
    m = start_models["capacity-0.5"]
    before = _state(m)
    masks = saliency_mask(copy.deepcopy(m), task, forget_idx, 32, "drop", "cpu", 0.5)
    total = sum(x.numel() for x in masks.values())
    assert sum(int(x.sum()) for x in masks.values()) == round(0.5 * total)
    out, out_history = get_method("salun", steps=4, batch_size=32).unlearn(m, task, forget_idx, _ctx())
    changed = 0
    for n, p in out.named_parameters():
        assert torch.equal(p.detach()[~masks[n]], before[n][~masks[n]]), f"{n} moved outside the mask"
        changed += int((p.detach() != before[n]).sum())
    assert changed > 0
    y = torch.arange(10).repeat(20)
    r = random_other_labels(y, 10, seed=0)
    assert (r != y).all() and r.min() >= 0 and r.max() <= 9 and len(r.unique()) == 10
