"""The [beyond] variants rem-reinit and rem-sp: which entries their reset touches, and that the rest is REM."""

import pytest
import torch

from rem.data.tasks import TaskConfig, make_task
from rem.errors import ConfigError
from rem.methods import Context, get_method
from rem.methods.baselines.layers import last_layers, under
from rem.methods.common import derived_seed, fresh_model
from rem.methods.rem import REMConfig, expand_step
from rem.methods.rem_reset import _kept_masks, blend_theta_o1
from rem.models import build_model, param_count, shrink
from rem.profiles import get_profile, profile_data


@pytest.fixture(scope="module")
def start(one_thread):
    """A small smoke-profile ResNet-9 (untrained: the reset's bookkeeping does not need a trained model)."""
    p = get_profile("smoke")
    task = make_task(profile_data(p), TaskConfig(kind="random", n_corrupt=p.n_corrupt, seed=0))
    torch.manual_seed(0)
    return p, task, build_model(p.arch_spec(10))


def _expanded(model, task):
    return expand_step(shrink(model) if model.has_extra else model, task, REMConfig(), Context())


def test_rem_reinit_resets_theta_o1_of_the_last_k_layers_only(start):
    p, task, model = start
    big = _expanded(model, task)
    before = {n: t.clone() for n, t in big.state_dict().items()}
    method = get_method("rem-reinit", calib_batches=0)
    rec = method._reset(big, task, Context())
    names = last_layers(big, 4)
    assert rec["reset_layers"] == names and rec["reset_entries"] > 0
    kept = _kept_masks(big)
    fresh = fresh_model(big, derived_seed(0, "rem-reinit-init")).state_dict()
    after = big.state_dict()
    for n, t in after.items():
        if n not in kept:
            continue
        m = kept[n]
        assert torch.equal(t[~m], before[n][~m]), n  # θ_o2 untouched everywhere
        if under(n, names):
            assert torch.equal(t[m], fresh[n][m]), n  # θ_o1 of the last k layers: the fresh initialisation
            if n.endswith("weight") and t.dim() > 1:
                assert not torch.equal(t[m], before[n][m]), n
        else:
            assert torch.equal(t[m], before[n][m]), n  # θ_o1 of the other layers untouched
    # after the reset, dropping θ_o2 still gives the deployed model: the expanded model in drop mode
    big.eval()
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(shrink(big).eval()(x), big(x, mode="drop"))


def test_rem_sp_blends_every_theta_o1_entry_towards_a_fresh_init(start):
    p, task, model = start
    big = _expanded(model, task)
    before = {n: t.clone() for n, t in big.state_dict().items()}
    names = [n for n, _ in big.named_children()]
    blend_theta_o1(big, names, 0.3, seed=5)
    fresh = fresh_model(big, 5).state_dict()
    kept = _kept_masks(big)
    for n, prm in big.named_parameters():
        m = kept[n]
        torch.testing.assert_close(prm.detach()[m], 0.3 * before[n][m] + 0.7 * fresh[n][m])
        assert torch.equal(prm.detach()[~m], before[n][~m])


@pytest.mark.parametrize("name", ["rem-reinit", "rem-sp"])
def test_variant_runs_rem_after_its_reset_and_deploys_the_dropped_model(start, name):
    p, task, model = start
    fi = task.forget_idx(0.5)
    out = get_method(name, steps=4, batch_size=128, calib_batches=2).unlearn(model, task, fi, Context())
    assert out.history[0]["phase"] == "reset"
    assert any("proxy" in h for h in out.history) and out.history[-1]["best_round"] >= 0
    assert param_count(out.model) == param_count(model) and not out.model.has_extra


def test_rem_keeps_the_papers_algorithm(start):
    p, task, model = start
    assert get_method("rem")._reset(_expanded(model, task), task, Context()) == {}


@pytest.mark.parametrize("where", ["start", "reset"])
def test_reference_is_frozen_before_or_after_the_reset(start, monkeypatch, where):
    """reference='start': θ_ref is the expanded starting model; 'reset': θ_ref is the reset model."""
    import rem.methods.rem as rem_mod

    p, task, model = start
    frozen = {}
    real = rem_mod.reference

    def spy(m, shared, dev):
        frozen.update({n: t.clone() for n, t in m.state_dict().items()})
        return real(m, shared, dev)

    monkeypatch.setattr(rem_mod, "reference", spy)
    method = get_method("rem-reinit", steps=0, calib_batches=0, reference=where)
    big = _expanded(model, task)
    names = last_layers(big, 4)
    expanded = {n: t.clone() for n, t in big.state_dict().items()}
    kept = _kept_masks(big)
    reset = fresh_model(big, derived_seed(0, "rem-reinit-init")).state_dict()
    method.unlearn(model, task, task.forget_idx(0.5), Context())
    checked = 0
    for n, t in frozen.items():
        if n in kept and under(n, names) and n.endswith("weight") and t.dim() > 1:
            m = kept[n]
            assert torch.equal(t[m], (expanded if where == "start" else reset)[n][m]), n
            checked += 1
    assert checked > 0
    key = method.config.key_dict()
    assert ("reference" in key) == (where == "reset")  # cells stored before the setting keep their keys


@pytest.mark.parametrize(
    "bad", [{"reinit_k": 0}, {"shrink": 1.0}, {"shrink": -0.1}, {"calib_batches": -1}, {"reference": "later"}]
)
def test_reset_settings_out_of_range_are_refused(bad):
    with pytest.raises(ConfigError):
        get_method("rem-reinit", **bad)


def test_a_split_report_names_the_reference_of_cells_stored_before_the_setting():
    from rem.report.tables import flatten

    old = {"method": "rem-reinit", "method_config": {"steps": 100}, "metrics": {}}
    new = {"method": "rem-reinit", "method_config": {"steps": 100, "reference": "reset"}, "metrics": {}}
    assert flatten(old, ("steps", "reference"))["method"] == "rem-reinit [steps=100, reference=start]"
    assert flatten(new, ("reference",))["method"] == "rem-reinit [reference=reset]"
    assert flatten({"method": "rem", "method_config": {}, "metrics": {}}, ("reference",))["method"] == "rem"
