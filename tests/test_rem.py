"""REM's invariants and an end-to-end heal of a planted backdoor on generated data."""

import copy

import pytest
import torch

import rem
from rem.data.tasks import TaskConfig, make_task
from rem.errors import ConfigError, IndexSetError
from rem.methods import Context, get_method
from rem.metrics import evaluate
from rem.models import SHARED_KEY, param_count
from rem.profiles import get_profile, profile_data
from rem.train import pretrain


@pytest.fixture(scope="module")
def smoke():
    """A smoke-profile starting model that has learned a planted backdoor (≈7 s on one core)."""
    p = get_profile("smoke")
    data = profile_data(p)
    task = make_task(data, TaskConfig(kind="poison", n_corrupt=p.n_corrupt, seed=0))
    model = pretrain(task, p.arch_spec(10), "capacity-0.5", p.pretrain)
    return p, task, model


@pytest.mark.slow
def test_backdoor_is_learned_then_healed_by_rem(smoke):
    p, task, model = smoke
    fi = task.forget_idx(0.5)
    before = evaluate(model, task, fi)
    assert before["corrupt_acc"] >= 0.8 and before["healed"] <= 0.4, before  # the backdoor is really there
    healed, healed_history = rem.unlearn(
        model, task, fi, "rem", device="cpu", steps=p.unlearn.steps, batch_size=p.unlearn.batch_size, lr=p.unlearn.lr
    )
    after = evaluate(healed, task, fi)
    assert after["healed"] >= before["healed"] + 0.4, (before, after)
    assert after["healed"] >= after["test_acc"] - 0.15, after  # near the clean accuracy
    assert after["utility"] >= before["utility"] - 0.05, (before, after)
    assert after["asr"] <= before["asr"] / 2
    assert param_count(healed) == param_count(model) and not healed.has_extra
    assert healed_history[-1]["best_round"] >= 0
    assert {"proxy", "acc_drop_f", "acc_mask_f"} <= set(healed_history[0])


def test_forget_set_shares_one_mask_others_their_own(smoke, monkeypatch):
    p, task, model = smoke
    fi = task.forget_idx(0.5)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    orig = rem.models.ResNet9.forward

    def spy(self, x, mode="drop", keys=None, masks=None):
        if mode == "mask" and keys is not None and self.training:
            seen.append((keys.clone(), self.group_masks(mode, keys, masks)[1].clone()))
        return orig(self, x, mode, keys, masks)

    monkeypatch.setattr(rem.models.ResNet9, "forward", spy)
    get_method("rem", steps=3, batch_size=128).unlearn(model, task, fi, Context())
    forget = set(fi.tolist())
    shared_masks, own = [], {}
    for keys, m in seen:
        for k, row in zip(keys.tolist(), m):
            if k == SHARED_KEY:
                shared_masks.append(row)
            else:
                assert k not in forget  # D_f samples never go through their own mask
                own.setdefault(k, []).append(row)
    assert shared_masks and all(torch.equal(r, shared_masks[0]) for r in shared_masks)
    assert len(own) > 10
    rows = [v[0] for v in own.values()]
    assert not all(torch.equal(r, rows[0]) for r in rows)  # other samples: their own, varying masks


@pytest.mark.slow
def test_proxy_never_reads_test_data_or_true_labels(smoke):
    p, task, model = smoke
    fi = task.forget_idx(0.5)
    poisoned = copy.copy(task)
    poisoned.data = copy.copy(task.data)
    g = torch.Generator().manual_seed(9)
    poisoned.data.x_test = torch.randint(0, 256, task.data.x_test.shape, generator=g, dtype=torch.uint8)
    poisoned.data.y_test = torch.randint(0, 10, task.data.y_test.shape, generator=g)
    y_true = task.data.y_train.clone()
    y_true[task.corrupt_idx] = (y_true[task.corrupt_idx] + 3) % 10  # wrong "true" labels of D_c
    poisoned.data.y_train = y_true
    kw = dict(steps=20, batch_size=128)
    a, a_history = get_method("rem", **kw).unlearn(model, task, fi, Context())
    b, b_history = get_method("rem", **kw).unlearn(model, poisoned, fi, Context())

    def selection(history):  # the track_* figures read test data by design (analysis only)
        return [{k: v for k, v in h.items() if not k.startswith("track_")} for h in history]

    assert selection(a_history) == selection(b_history)
    assert a_history[0]["track_utility"] != b_history[0]["track_utility"]  # they did read the test set
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


@pytest.mark.slow
def test_seeded_run_is_repeatable_and_input_untouched(smoke):
    p, task, model = smoke
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fi = task.forget_idx(0.5)
    a, a_history = get_method("rem", steps=10, batch_size=128, seed=1).unlearn(model, task, fi, Context())
    b, b_history = get_method("rem", steps=10, batch_size=128, seed=1).unlearn(model, task, fi, Context())
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("ratio", [1 / 16, 0.25, 1.0])
def test_any_ratio_returns_original_size(smoke, ratio):
    p, task, model = smoke
    h, h_history = get_method("rem", steps=4, batch_size=128, expand_ratio=ratio).unlearn(
        model, task, task.forget_idx(0.3), Context()
    )
    assert param_count(h) == param_count(model) and h.spec() == model.spec()


def test_rem_on_etd_and_full_models(smoke):
    p, task, _ = smoke
    fi = task.forget_idx(0.5)
    for ptype in ("etd", "full"):
        m = pretrain(task, p.arch_spec(10), ptype, p.pretrain.__class__(steps=5, batch_size=64, lr=0.05))
        h, h_history = get_method("rem", steps=4, batch_size=128).unlearn(m, task, fi, Context())
        assert not h.has_extra and h.kept == m.kept


def test_variants_and_validation(smoke):
    p, task, model = smoke
    fi = task.forget_idx(0.5)
    for name in ("rem-ideal", "rem-no-remove", "npo", "ascent"):
        h, h_history = get_method(name, steps=4, batch_size=128, max_epochs=3).unlearn(model, task, fi, Context())
        assert param_count(h) == param_count(model)
    assert get_method("rem-ideal").config.ideal and not get_method("rem-no-remove").config.remove_term
    with pytest.raises(ConfigError, match="no setting"):
        get_method("rem", bogus=1)
    with pytest.raises(ConfigError):
        get_method("rem", expand_ratio=0)
    with pytest.raises(ConfigError, match="unknown method"):
        get_method("nope")
    with pytest.raises(IndexSetError):
        rem.unlearn(model, task, [0, 0], "rem")
    with pytest.raises(IndexSetError):
        rem.unlearn(model, task, [10**7], "rem")


def _record_forwards(monkeypatch):
    """Every forward of a ResNet-9: (mode, batch size, model in training mode, every BN in training mode)."""
    calls: list[tuple[str, int, bool, bool]] = []
    orig = rem.models.ResNet9.forward

    def spy(self, x, mode="drop", keys=None, masks=None):
        bns = [m for m in self.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        calls.append((mode, x.shape[0], self.training, all(b.training for b in bns)))
        return orig(self, x, mode, keys, masks)

    monkeypatch.setattr(rem.models.ResNet9, "forward", spy)
    return calls


def test_batch_norm_modes_and_batch_sizes_per_phase(smoke, monkeypatch):
    """SPEC §4: step 2 in training mode on D_f batches; step 3's dropped forward on the whole batch."""
    p, task, model = smoke
    fi = task.forget_idx(0.5)
    calls = _record_forwards(monkeypatch)
    get_method("rem", steps=6, batch_size=128, max_epochs=2).unlearn(model, task, fi, Context())
    train_calls = [c for c in calls if c[2]]
    assert train_calls and all(c[3] for c in train_calls)  # training mode means BN in training mode too
    assert all(not c[3] for c in calls if not c[2])  # reference and accuracies: inference mode throughout
    removal = [c for c in train_calls if c[0] == "drop" and c[1] <= len(fi)]
    assert removal, "step 2 never trained on D_f batches in training mode"
    redirect = [i for i, c in enumerate(train_calls) if c[0] == "mask"]
    assert len(redirect) == 6
    for i in redirect:  # each redirect step: masked forward, then the dropped forward of the same whole batch
        nxt = train_calls[i + 1]
        assert nxt[0] == "drop" and nxt[1] == train_calls[i][1] == 128, (train_calls[i], nxt)
    calls.clear()
    get_method("npo", max_epochs=2, batch_size=128).unlearn(model, task, fi, Context())
    npo_train = [c for c in calls if c[2]]
    assert npo_train and all(c[0] == "drop" and c[3] and c[1] <= len(fi) for c in npo_train)


def test_removal_term_is_zero_outside_forget_set(smoke, monkeypatch):
    """The whole-batch dropped forward adds no gradient through rows outside D_f: with an empty removal
    set in the batch (here: D_f absent from every batch) REM equals the no-removal ablation exactly."""
    p, task, model = smoke
    fi = task.forget_idx(0.5)
    kw = dict(steps=4, batch_size=128, max_epochs=1, track=False)
    from rem.methods import rem as rem_mod

    real = rem_mod.npo_loss
    zeros = []

    def spy(ce, ce_ref, beta):
        out = real(ce, ce_ref, beta)
        zeros.append(out.detach())
        return out

    monkeypatch.setattr(rem_mod, "npo_loss", spy)
    get_method("rem", **kw).unlearn(model, task, fi, Context())
    assert zeros  # the removal term was evaluated on whole batches
    assert all(z.dim() == 1 and len(z) in (128, len(task.y_train) % 128) or len(z) <= len(fi) for z in zeros)


def test_history_tracks_both_paths_per_round(smoke):
    p, task, model = smoke
    h, h_history = get_method("rem", steps=8, batch_size=128).unlearn(model, task, task.forget_idx(0.5), Context())
    rounds = [r for r in h_history if "round" in r]
    assert rounds
    for r in rounds:
        assert {"track_healed", "track_utility", "track_acc_drop_f", "track_acc_mask_f"} <= set(r)
        assert all(0 <= r[k] <= 1 for k in r if k.startswith(("track_", "acc_"))), r  # shares, every one
        assert r["track_acc_mask_f"] == r["acc_mask_f"] and r["track_acc_drop_f"] == pytest.approx(r["acc_drop_f"])
    off, off_history = get_method("rem", steps=8, batch_size=128, track=False).unlearn(
        model, task, task.forget_idx(0.5), Context()
    )
    assert not any(k.startswith("track_") for r in off_history for k in r)


def test_extra_init_pretrained_keeps_drop_mode_and_shrinks_extras(smoke):
    from rem.methods.rem import _as_reserved
    from rem.models import expand

    p, task, model = smoke
    e = expand(model, 1.0, seed=0)
    before = {n: v.clone() for n, v in e.state_dict().items()}
    _as_reserved(e, p.pretrain, task, "cpu", 0)
    e.eval()
    x = torch.randn(5, 3, 16, 16)
    assert torch.allclose(e(x, mode="drop"), model.eval()(x), atol=1e-5)
    masks = e.extra_param_masks()
    for n, prm in e.named_parameters():
        kept = ~masks[n]
        assert torch.equal(prm[kept], before[n][kept]), n  # θ_o1 untouched
        if masks[n].any() and before[n][masks[n]].abs().sum() > 0:
            assert prm[masks[n]].abs().sum() < before[n][masks[n]].abs().sum(), n  # θ_o2 shrunk
    bn = e.conv1.bn
    k = e.kept[0]
    assert torch.equal(bn.running_mean[:k], before["conv1.bn.running_mean"][:k])
    assert not torch.equal(bn.running_mean[k:], before["conv1.bn.running_mean"][k:])  # tracked, not (0, 1)


def test_forget_bn_frozen_option_keeps_bn_in_inference_mode_in_step_2(smoke, monkeypatch):
    p, task, model = smoke
    fi = task.forget_idx(0.5)
    calls = _record_forwards(monkeypatch)
    get_method("npo", max_epochs=2, batch_size=128, forget_bn_frozen=True).unlearn(model, task, fi, Context())
    updates = [c for c in calls if c[2]]
    assert updates and all(not c[3] for c in updates)  # model in training mode, every BN in inference mode
    calls.clear()
    get_method("rem", steps=3, batch_size=128, max_epochs=2, forget_bn_frozen=True, track=False).unlearn(
        model, task, fi, Context()
    )
    step2 = [c for c in calls if c[2] and c[0] == "drop" and c[1] <= len(fi)]
    redirect = [c for c in calls if c[2] and c[0] == "mask"]
    assert step2 and all(not c[3] for c in step2) and redirect and all(c[3] for c in redirect)


def test_token_partition_on_a_vit_returns_the_original_model_size(smoke):
    """REM with ``partition='tokens'``: θ_o2 is extra tokens, dropped at the end; ResNet-9 refuses it."""
    from rem.models.vit import vit
    from rem.train import Recipe

    p, task, model = smoke
    torch.manual_seed(0)
    v = vit(num_classes=10, image_size=16, patch=4, dim=16, depth=1, heads=2, head_dim=8, mlp=16, capacity=0.0)
    v = pretrain(task, v.spec(), "full", Recipe(steps=3, batch_size=64, lr=1e-3, optimizer="adam"))
    fi = task.forget_idx(0.5)
    method = get_method("rem", steps=3, batch_size=128, partition="tokens", lr=1e-3, optimizer="adam")
    h, history = method.unlearn(v, task, fi, Context())
    assert param_count(h) == param_count(v) and h.spec() == v.spec() and h.registers == 0
    assert history and method.label(method.config.as_dict()) == "rem (tokens axis)"
    # the default ('auto') on a ViT is the token axis: the same run, to the bit
    h_auto, _ = get_method("rem", steps=3, batch_size=128, lr=1e-3, optimizer="adam").unlearn(v, task, fi, Context())
    assert all(torch.equal(a, b) for a, b in zip(h.state_dict().values(), h_auto.state_dict().values()))
    h_units, _ = get_method("rem", steps=3, batch_size=128, partition="units", lr=1e-3, optimizer="adam").unlearn(
        v, task, fi, Context()
    )
    assert not all(torch.equal(a, b) for a, b in zip(h.state_dict().values(), h_units.state_dict().values()))
    with pytest.raises(ConfigError, match="needs a ViT"):
        get_method("rem", steps=2, partition="tokens").unlearn(model, task, fi, Context())
    with pytest.raises(ConfigError, match="partition must be 'auto'"):
        get_method("rem", partition="heads")


def test_partition_setting_at_its_default_leaves_cell_keys_alone():
    """A setting added after cells were stored (``keyed_when_set``) enters the key only when set."""
    from rem.run import Cell

    prof = get_profile("cpu")
    default = Cell("rem", "capacity-0.5", "poison", 0.5, 0, prof)
    assert "partition" not in default.method_config()
    tokens = Cell("rem", "capacity-0.5", "poison", 0.5, 0, prof, (("partition", "tokens"),))
    assert tokens.method_config()["partition"] == "tokens" and tokens.key != default.key
    units = Cell("rem", "capacity-0.5", "poison", 0.5, 0, prof, (("partition", "units"),))
    assert units.key == default.key


def test_partition_auto_is_tokens_on_a_vit_and_units_elsewhere():
    """``partition='auto'`` (the default) resolves per architecture before keying: a ViT cell at the default
    *is* the explicit tokens cell, an explicit units ViT cell keeps the key of cells stored before the
    setting existed, and a ResNet-9 cell is unchanged."""
    from rem.run import Cell

    cfg = get_method("rem").config
    assert cfg.partition == "auto"
    assert cfg.for_arch("vit").partition == "tokens"
    assert cfg.for_arch("resnet9").partition == "units" and cfg.for_arch("").partition == "units"
    assert get_method("rem", extra_init="pretrained").config.for_arch("vit").partition == "units"
    assert get_method("rem", partition="units").config.for_arch("vit").partition == "units"

    vit = get_profile("cpu-vit")
    default = Cell("rem", "capacity-0.5", "poison", 0.5, 0, vit)
    tokens = Cell("rem", "capacity-0.5", "poison", 0.5, 0, vit, (("partition", "tokens"),))
    units = Cell("rem", "capacity-0.5", "poison", 0.5, 0, vit, (("partition", "units"),))
    assert default.method_config()["partition"] == "tokens" and default.key == tokens.key
    assert "partition" not in units.method_config() and units.key != default.key
    ideal = Cell("rem-ideal", "capacity-0.5", "poison", 0.5, 0, vit)
    assert ideal.method_config()["partition"] == "tokens"


def test_report_filter_reads_a_record_without_partition_as_units():
    from rem.report.build import settings_match

    old = {"method": "rem", "method_config": {"beta": 1.0}}
    assert settings_match(old, {"rem": {"partition": "units"}})
    assert not settings_match(old, {"rem": {"partition": "tokens"}})
    assert settings_match({"method": "rem", "method_config": {"partition": "tokens"}}, {"*": {"partition": "tokens"}})
