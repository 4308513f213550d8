"""Discovery (issue 17): the scores find the undiscovered corruption, ``rem-discover`` grows REM's shared
set (and is ``rem`` bit for bit with no budget), bad input is refused, ``rem discover`` writes CSV / JSON."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

import rem
from rem.api import discover
from rem.cli import main
from rem.data.datasets import make_generated
from rem.data.tasks import TaskConfig, make_task
from rem.discovery import SCORES, auroc, get_score, ranking_quality, score_names
from rem.discovery.scores import suspected_target
from rem.errors import ConfigError, DataError, IndexSetError
from rem.methods import Context, get_method
from rem.models import resnet9
from rem.profiles import get_profile, profile_data
from rem.train import Recipe, pretrain

TINY = {"steps": 4, "batch_size": 32, "max_epochs": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def smoke():
    """A smoke-profile starting model that has learned a planted backdoor (≈5 s on one core)."""
    p = get_profile("smoke")
    task = make_task(profile_data(p), TaskConfig(kind="poison", n_corrupt=p.n_corrupt, seed=0))
    return task, pretrain(task, p.arch_spec(10), "capacity-0.5", p.pretrain)


@pytest.fixture(scope="module")
def tiny():
    """A tiny task and a barely trained model: for contracts, not for quality."""
    task = make_task(make_generated(n_train=200, n_test=50, size=16, seed=0), TaskConfig(kind="poison", n_corrupt=20))
    arch = resnet9(num_classes=10, width=0.125).spec()
    return task, pretrain(task, arch, "capacity-0.5", Recipe(steps=12, batch_size=32, lr=0.05), seed=0)


def _hidden(task, forget_idx):
    return task.corrupt_idx[~torch.isin(task.corrupt_idx, forget_idx)]  # D_c \ D_f


def _state(m) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


# --- what the scores find -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_rem_score_ranks_undiscovered_poison_above_clean(smoke, rate):
    task, model = smoke
    fi = task.forget_idx(rate)
    hidden = _hidden(task, fi)
    removal_only = rem.discover(model, task, fi, "rem", device="cpu", feature_weight=0).evaluate(hidden)
    full = discover(model, task, fi, "rem", device="cpu").evaluate(hidden)
    baseline = discover(model, task, fi, "loss", device="cpu").evaluate(hidden)
    # REM's removal alone already finds the backdoor; the small-loss trick cannot (poison fits best)
    assert removal_only["auroc"] >= 0.85, removal_only
    assert full["auroc"] >= 0.95 and full["precision_at_k"] >= 0.6, full
    assert full["auroc"] > baseline["auroc"] + 0.3, (full, baseline)


def test_spectral_looks_in_the_class_over_represented_in_the_found_set(smoke):
    task, model = smoke
    fi = task.forget_idx(0.5)
    assert suspected_target(task.y_train, fi) == task.config.target
    r = discover(model, task, fi, "spectral", device="cpu")
    assert r.info["target"] == task.config.target
    other = task.y_train[r.idx] != task.config.target
    assert bool((r.score[other] == 0).all()) and bool((r.score[~other] >= 0).all())
    assert r.evaluate(_hidden(task, fi))["auroc"] > 0.8


# --- the contract of every score ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCORES))
def test_every_score_ranks_all_of_retain_once_in_order_and_leaves_the_model(name, tiny):
    task, model = tiny
    fi = task.forget_idx(0.5)
    before = _state(model)
    score = get_score(name)
    assert score.summary and (type(score).__doc__ or "").strip()
    r1 = score.rank(model, task, fi, Context())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the model was modified"
    assert torch.equal(r1.idx.sort().values, task.retain_idx(fi))  # all of D_r, each once, never D_f
    assert bool((r1.score[:-1] >= r1.score[1:]).all()) and bool(torch.isfinite(r1.score).all())
    r2 = score.rank(model, task, fi, Context())
    assert torch.equal(r1.idx, r2.idx) and torch.equal(r1.score, r2.score)  # deterministic
    assert r1.n_forget == len(fi) and r1.n_train == task.n_train and r1.wall_s >= 0
    top = r1.top(5, threshold=float(r1.score[1]))
    assert (
        torch.equal(r1.top(3), r1.idx[:3]) and 2 <= len(top) <= 5 and bool((r1.score[: len(top)] >= r1.score[1]).all())
    )


def test_registry_and_settings_are_checked():
    assert score_names()[0] == "rem" and {"rem", "loss", "cleanlab", "spectral", "features"} <= set(score_names())
    assert get_score("rem", feature_weight="0").config.feature_weight == 0.0  # typed like --set
    assert get_score("rem").config.lr == get_method("rem").config.lr  # REM's own defaults
    with pytest.raises(ConfigError, match="unknown discovery score"):
        get_score("nope")
    with pytest.raises(ConfigError, match="feature_weight"):
        get_score("rem", feature_weight=-1)
    with pytest.raises(ConfigError, match="folds"):
        get_score("cleanlab", folds=1)
    with pytest.raises(ConfigError):
        get_score("loss", nonsense=1)


def test_auroc_and_precision_at_k():
    assert auroc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auroc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    assert auroc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    assert np.isnan(auroc([1, 2], [False, False]))
    q = ranking_quality(torch.tensor([7, 3, 5, 1]), torch.tensor([4.0, 3.0, 2.0, 1.0]), [3, 1, 99])
    assert q["k"] == 2 and q["precision_at_k"] == 0.5 == q["recall_at_k"] and q["auroc"] == 0.25


# --- bad input ------------------------------------------------------------------------------------


def test_bad_input_is_refused_naming_what_is_wrong(tiny):
    task, model = tiny
    with pytest.raises(IndexSetError, match="empty"):
        discover(model, task, [], "loss", device="cpu")
    with pytest.raises(IndexSetError, match=f"only {task.n_train}"):
        discover(model, task, list(range(task.n_train + 1)), "loss", device="cpu")
    with pytest.raises(IndexSetError, match="D_r is empty"):
        discover(model, task, list(range(task.n_train)), "loss", device="cpu")
    with pytest.raises(IndexSetError, match="out of range"):
        discover(model, task, [task.n_train + 5], "loss", device="cpu")
    images = task.data.x_train.permute(0, 2, 3, 1).numpy()
    with pytest.raises(DataError, match="labels"):
        discover(model, images, [0, 1], "rem", device="cpu")  # images without labels


def test_a_users_own_model_and_arrays(tiny):
    task, _ = tiny
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    images, labels = task.data.x_train.permute(0, 2, 3, 1).numpy(), task.y_train.numpy()
    before = _state(net)
    for name, settings in (("loss", {}), ("features", {}), ("rem", {"max_epochs": 2})):
        r = discover(net, (images, labels), [0, 1, 2], name, device="cpu", **settings)
        assert len(r) == len(labels) - 3 and r.files is None
    healed, history = rem.unlearn(net, (images, labels), [0, 1, 2], method="rem-discover", discover_k=2, **TINY)
    assert type(healed) is nn.Sequential and len(history[0]["discover_added"]) == 2
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


# --- rem-discover ---------------------------------------------------------------------------------


def test_rem_discover_with_zero_budget_is_rem_bit_for_bit(tiny):
    task, model = tiny
    fi = task.forget_idx(0.5)
    plain = get_method("rem", **TINY).unlearn(model, task, fi, Context())
    none = get_method("rem-discover", discover_k=0, **TINY).unlearn(model, task, fi, Context())
    a, b = plain.model.state_dict(), none.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert plain.history == none.history


def test_rem_discover_adds_the_top_of_the_ranking_within_budget_and_records_it(tiny):
    task, model = tiny
    fi = task.forget_idx(0.5)
    ranking = discover(model, task, fi, "rem", device="cpu", batch_size=32, max_epochs=2)
    out = get_method("rem-discover", discover_k=4, **TINY).unlearn(model, task, fi, Context())
    rec = out.history[0]
    assert len(rec["discover_added"]) == 4 and not set(rec["discover_added"]) & set(fi.tolist())
    assert rec["discover_added"] == ranking.idx[:4].tolist()  # REM's own round-0 removal = the rem score
    assert rec["discover_shared"] == len(fi) + 4 and "remove_epochs" in rec["discover_info"]
    assert all("discover_added" not in r for r in out.history[1:])  # discover_rounds=1: once, at the start
    # a threshold above every score adds nothing; the default budget is |D_f|
    high = get_method("rem-discover", discover_threshold=1e9, **TINY).unlearn(model, task, fi, Context())
    assert high.history[0]["discover_added"] == []
    default = get_method("rem-discover", **TINY).unlearn(model, task, fi, Context())
    assert len(default.history[0]["discover_added"]) == len(fi)


def test_rem_reinit_discover_ranks_the_starting_model_then_resets(tiny, monkeypatch):
    """rem-reinit-discover adds rem-discover's samples (ranked before the reset), then resets as rem-reinit."""
    import rem.methods.rem_discover as rd

    task, model = tiny
    fi = task.forget_idx(0.5)
    disc = get_method("rem-discover", discover_k=4, **TINY).unlearn(model, task, fi, Context())
    calls = []
    for hook in ("_grow", "_reset"):
        real = getattr(rd.REMReinitDiscover, hook)

        def spy(self, *a, _real=real, _hook=hook, **kw):
            calls.append(_hook)
            return _real(self, *a, **kw)

        monkeypatch.setattr(rd.REMReinitDiscover, hook, spy)
    out = get_method("rem-reinit-discover", discover_k=4, calib_batches=1, **TINY).unlearn(model, task, fi, Context())
    assert calls[:2] == ["_grow", "_reset"]  # ranked on the starting model, before the reset erased its memory
    reset, round0 = out.history[0], out.history[1]
    assert reset["phase"] == "reset" and reset["reset_entries"] > 0 and len(reset["reset_layers"]) > 0
    assert round0["discover_added"] == disc.history[0]["discover_added"]  # rem-discover's samples
    assert all("discover_added" not in r for r in out.history[2:])


def test_rem_reinit_discover_with_zero_budget_is_rem_reinit_bit_for_bit(tiny):
    task, model = tiny
    fi = task.forget_idx(0.5)
    a = get_method("rem-reinit", calib_batches=1, **TINY).unlearn(model, task, fi, Context())
    b = get_method("rem-reinit-discover", discover_k=0, calib_batches=1, **TINY).unlearn(model, task, fi, Context())
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.history == b.history


def _same_run(a, b) -> bool:
    """Same weights, and the same history but for wall times."""

    def timeless(v):
        if isinstance(v, dict):
            return {k: timeless(x) for k, x in v.items() if "wall" not in k}
        return [timeless(x) for x in v] if isinstance(v, list) else v

    sa, sb = a.model.state_dict(), b.model.state_dict()
    same_weights = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    return same_weights and timeless(a.history) == timeless(b.history)


def test_rem_reinit_outlier_takes_every_sample_past_its_threshold_uncapped(tiny):
    """The outlier test decides alone: every sample of D_r scoring >= the threshold joins, beyond |D_f|; with a
    cap it is rem-reinit-discover at that cap and threshold (bit for bit); above every score it is rem-reinit."""
    task, model = tiny
    fi = task.forget_idx(0.5)
    n_retain = task.n_train - len(fi)
    kw = {"calib_batches": 1, **TINY}
    low = get_method("rem-reinit-outlier", discover_threshold=-1e9, **kw).unlearn(model, task, fi, Context())
    added = low.history[1]["discover_added"]
    assert len(added) == n_retain > len(fi)  # no budget: all of D_r passes a threshold below every score
    capped = get_method("rem-reinit-discover", discover_threshold=-1e9, **kw).unlearn(model, task, fi, Context())
    assert len(capped.history[1]["discover_added"]) == len(fi)  # rem-reinit-discover's default budget is |D_f|
    # at a real threshold: exactly the samples scoring at least it, the same run as a big enough cap
    scores = low.history[1]["discover_scores"]
    t = sorted(scores)[len(scores) // 2]
    mid = get_method("rem-reinit-outlier", discover_threshold=t, **kw).unlearn(model, task, fi, Context())
    want = sorted(i for i, s in zip(added, scores) if s >= t)
    assert sorted(mid.history[1]["discover_added"]) == want and len(fi) < len(want) < n_retain
    same = get_method("rem-reinit-discover", discover_k=10**6, discover_threshold=t, **kw)
    assert _same_run(mid, same.unlearn(model, task, fi, Context()))
    high = get_method("rem-reinit-outlier", discover_threshold=1e9, **kw).unlearn(model, task, fi, Context())
    plain = get_method("rem-reinit", **kw).unlearn(model, task, fi, Context())
    assert high.history[1]["discover_added"] == []
    sa, sb = high.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # nothing joined: rem-reinit's weights
    with pytest.raises(ConfigError, match="discover_threshold"):
        get_method("rem-reinit-outlier", discover_threshold=None)


def test_rem_discover_routes_added_samples_through_the_shared_mask(tiny, monkeypatch):
    import rem.methods.rem as rem_mod
    from rem.models import SHARED_KEY

    task, model = tiny
    fi = task.forget_idx(0.5)
    keys_seen: dict[int, set] = {}

    real_mask_keys = rem_mod.mask_keys

    def record(idx, shared=None):
        k = real_mask_keys(idx, shared)
        for i, key in zip(idx.tolist(), k.tolist()):
            keys_seen.setdefault(i, set()).add(key)
        return k

    monkeypatch.setattr(rem_mod, "mask_keys", record)
    out = get_method("rem-discover", discover_k=3, **TINY).unlearn(model, task, fi, Context())
    added = out.history[0]["discover_added"]
    assert added and all(keys_seen[i] == {SHARED_KEY} for i in added if i in keys_seen)
    assert any(i in keys_seen for i in added)
    others = [i for i in keys_seen if i not in added and i not in set(fi.tolist())]
    assert others and all(keys_seen[i] == {i} for i in others)


def test_rem_discover_settings_are_checked():
    with pytest.raises(ConfigError, match="discover_k"):
        get_method("rem-discover", discover_k=-1)
    with pytest.raises(ConfigError, match="discover_score"):
        get_method("rem-discover", discover_score="nope")
    with pytest.raises(ConfigError, match="ideal"):
        get_method("rem-discover", ideal=True)
    assert get_method("rem-discover", discover_k="none").config.discover_k is None
    from rem.methods import method_label

    rec = {"method": "rem-discover", "method_config": {"discover_k": 40, "discover_score": "spectral"}}
    assert method_label(rec) == "rem-discover (k=40, spectral)"  # another budget: another row of the report


# --- the command line -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("start")
    assert main(["train", "--profile", "smoke", "--steps", "20", "--out", str(out), "--quiet"]) == 0
    return str(out / "model.safetensors")


def test_cli_discover_writes_csv_and_json(checkpoint, tmp_path, capsys):
    c, j = tmp_path / "r.csv", tmp_path / "r.json"
    assert main(["discover", "--checkpoint", checkpoint, "--rate", "0.5", "--score", "loss", "--out", str(c),
                 "--out", str(j), "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "AUROC" in out and "wrote" in out
    rows = list(csv.DictReader(c.open()))
    doc = json.loads(j.read_text())
    model, meta = rem.load_checkpoint(checkpoint)
    task = rem.task_of(meta)
    n_f = len(task.forget_idx(0.5))
    assert len(rows) == task.n_train - n_f == doc["n_ranked"] and doc["n_forget"] == n_f and doc["score"] == "loss"
    assert [int(r["index"]) for r in rows] == [r["index"] for r in doc["ranking"]]
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert not set(int(r["index"]) for r in rows) & set(task.forget_idx(0.5).tolist())
    # an existing file is kept unless --overwrite
    assert main(["discover", "--checkpoint", checkpoint, "--rate", "0.5", "--out", str(c), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rate", "0.5", "--out", "r.txt"], ".csv or .json"),
        (["--rate", "0.5"], "--out"),
        (["--out", "r.csv"], "exactly one of --rate"),
        (["--rate", "0.5", "--score", "nope", "--out", "r.csv"], "unknown discovery score"),
        (["--rate", "0.5", "--set", "feature_weight=x", "--out", "r.csv"], "feature_weight"),
        (["--forget-file", "EMPTY", "--out", "r.csv"], "empty"),
    ],
)
def test_cli_discover_bad_input_is_one_line_exit_2(checkpoint, tmp_path, capsys, args, message):
    (tmp_path / "EMPTY").write_text("[]")
    args = [str(tmp_path / a) if a in ("r.txt", "r.csv", "EMPTY") else a for a in args]
    assert main(["discover", "--checkpoint", checkpoint, *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r.csv").exists()


def test_cli_discover_prints_a_scores_settings(capsys):
    assert main(["discover", "--settings", "rem"]) == 0
    out = capsys.readouterr().out
    assert "feature_weight" in out and "gamma" in out
