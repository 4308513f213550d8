"""The relearning check (:mod:`rem.run.relearn`): a model that memorised the backdoor relearns it from a few samples,
one that never saw it relearns less; the check enters a cell's record and key only when on; the report's
table shows the gap to the clean reference (``retrain`` at rate 1.0)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_defences import PLANTED, _planted

from rem.bench.grid import Grid
from rem.errors import ConfigError
from rem.report.relearn import prefer_relearned, relearn_columns, relearn_table
from rem.run.relearn import POOL, parse_ks, relearn_metrics, relearn_settings, retune_idx

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task(gen_data):
    from rem.data.tasks import TaskConfig, make_task

    return make_task(gen_data, TaskConfig(kind="poison", n_corrupt=20, target=0))


def _never_saw(model):
    """The planted model's clean part alone: the trigger neuron unwired (fresh detector, no vote)."""
    clean = copy.deepcopy(model)
    net = clean.model
    with torch.no_grad():
        torch.manual_seed(1)
        net.detector.reset_parameters()
        net.fc.weight[:, 16 * PLANTED : 16 * (PLANTED + 1)] = 0.0
        net.bn.bias[PLANTED] = 0.0
    return clean


def test_memorised_backdoor_relearns_more_than_a_clean_model(task):
    memorised, _ = _planted(task, 1.5)
    clean = _never_saw(memorised)
    from rem.metrics import evaluate

    assert evaluate(clean, task)["asr"] < 0.2  # it has no backdoor
    m_mem, details = relearn_metrics(memorised, task, (5,), seed=0)
    m_clean, _ = relearn_metrics(clean, task, (5,), seed=0)
    assert set(m_mem) == {"relearn_healed_5", "relearn_asr_5"}
    assert details["n_corrupt_used"] == {"5": 5} and details["steps"] == 40
    # this architecture reads the trigger's patch directly, so even the clean model picks the trigger up fast
    assert m_mem["relearn_asr_5"] > m_clean["relearn_asr_5"] + 0.05, (m_mem, m_clean)
    assert m_mem["relearn_healed_5"] < m_clean["relearn_healed_5"]
    before = {k: v.clone() for k, v in clean.state_dict().items()}
    relearn_metrics(clean, task, (5,), seed=0)
    assert all(torch.equal(before[k], v) for k, v in clean.state_dict().items())  # re-tunes a copy


@pytest.mark.slow
def test_learned_backdoor_relearns_more_than_a_model_trained_clean(gen_data):
    """A ResNet-9 that learned the backdoor against one trained on D_tr ∖ D_c (``retrain`` at rate 1.0)."""
    from rem.data.tasks import TaskConfig, make_task
    from rem.methods import Context, get_method
    from rem.metrics import evaluate
    from rem.models import resnet9
    from rem.train import Recipe, pretrain

    task = make_task(gen_data, TaskConfig(kind="poison", n_corrupt=40, target=0))
    recipe = Recipe(steps=200, batch_size=64, lr=0.05)
    memorised = pretrain(task, resnet9(num_classes=10, width=0.25).spec(), "capacity-0.5", recipe, seed=0)
    clean, _ = get_method("retrain", seed=0).unlearn(
        memorised, task, task.forget_idx(1.0), Context(pretrain_recipe=recipe)
    )
    assert evaluate(memorised, task)["asr"] > 0.5 > evaluate(clean, task)["asr"]
    m_mem, _ = relearn_metrics(memorised, task, (5,), seed=0)
    m_clean, _ = relearn_metrics(clean, task, (5,), seed=0)
    assert m_mem["relearn_asr_5"] > m_clean["relearn_asr_5"] + 0.2, (m_mem, m_clean)


def test_retune_samples_are_fixed_corrupted_and_clean(task):
    """k corrupted samples, the rest of the re-tuning set of POOL (the retuning attack's 1,000) clean."""
    assert POOL == 1000
    idx, n = retune_idx(task, 5, seed=0, pool=100)
    assert n == 5 and len(idx) == 100 and len(set(idx.tolist())) == 100
    assert torch.equal(idx[:5], task.discovery_order[:5])  # the same for every method and rate
    assert torch.isin(idx[:5], task.forget_idx(0.5)).all()  # in D_f when k <= |D_f|
    assert not torch.isin(idx[5:], task.corrupt_idx).any()
    assert torch.equal(retune_idx(task, 5, seed=0, pool=100)[0], idx)
    idx_big, n_big = retune_idx(task, 50, seed=0, pool=100)
    assert n_big == len(task.corrupt_idx) == 20 and len(idx_big) == 100
    n_clean = task.n_train - len(task.corrupt_idx)
    assert len(retune_idx(task, 5, seed=0)[0]) == min(POOL, 5 + n_clean)  # a small data set: all its clean samples


def test_parse_ks():
    assert parse_ks("50,5") == (5, 50) and parse_ks([5, 5]) == (5,) and parse_ks(None) == () and parse_ks("") == ()
    assert parse_ks("off") == () == parse_ks("None")
    with pytest.raises(ConfigError):
        parse_ks("0")
    with pytest.raises(ConfigError):
        parse_ks("five")


def test_relearn_enters_the_key_only_when_on():
    base = Grid(profile="smoke", methods=("finetune",), tasks=("poison",), rates=(0.5,))
    on = base.override(relearn=(5, 50))
    off_cells, on_cells = base.cells(), on.cells()
    assert "relearn" not in off_cells[0].config()
    assert on_cells[0].config()["relearn"]["ks"] == [5, 50]
    assert off_cells[0].key != on_cells[0].key
    plain = Grid(profile="smoke", methods=("finetune",), tasks=("poison",), rates=(0.5,), relearn=())
    assert plain.cells()[0].key == off_cells[0].key  # cells stored before the check keep their keys
    assert Grid.from_dict({"profile": "smoke", "relearn": [50, 5]}).relearn == (5, 50)


def _row(method, rate, seed, asr5, healed5=0.5):
    return {
        "method": method,
        "pretrain_type": "capacity-0.5",
        "task": "poison",
        "rate": rate,
        "seed": seed,
        "healed": 0.9,
        "asr": 0.05,
        "relearn_asr_5": asr5,
        "relearn_healed_5": healed5,
    }


def test_relearn_table_gap_to_clean_reference():
    rows = [
        _row("retrain", 1.0, 0, 0.10),
        _row("retrain", 1.0, 1, 0.20),
        _row("fst", 0.5, 0, 0.90),
        _row("fst", 0.5, 1, 0.70),
        {**_row("none", 0.5, 0, None, None), "relearn_asr_5": None, "relearn_healed_5": None},  # stored without
    ]
    assert relearn_columns(rows) == ["relearn_healed_5", "relearn_asr_5"]
    table = {(r["method"], r["rate"]): r for r in relearn_table(rows)}
    assert ("none", 0.5) not in table
    fst = table[("fst", 0.5)]
    assert fst["relearn_asr_5_mean"] == pytest.approx(0.8) and fst["seeds"] == 2
    assert fst["gap_relearn_asr_5"] == pytest.approx(0.8 - 0.15)
    assert table[("retrain", 1.0)]["gap_relearn_asr_5"] == pytest.approx(0.0)
    # rows split by a setting (rem report --split-by): the reference with the same split, else the only one
    split = [_row("retrain [steps=250]", 1.0, 0, 0.1), _row("retrain [steps=100]", 1.0, 0, 0.3)]
    split += [_row("fst [steps=250]", 0.5, 0, 0.9), _row("rem-discover [steps=250, beta=1]", 0.5, 0, 0.5)]
    gaps = {r["method"]: r["gap_relearn_asr_5"] for r in relearn_table(split)}
    assert gaps["fst [steps=250]"] == pytest.approx(0.8)
    assert math.isnan(gaps["rem-discover [steps=250, beta=1]"])  # two references, neither with its split
    one = relearn_table([_row("retrain [steps=250]", 1.0, 0, 0.1), _row("fst", 0.5, 0, 0.9)])
    assert {r["method"]: r["gap_relearn_asr_5"] for r in one}["fst"] == pytest.approx(0.8)
    alone = relearn_table([_row("fst", 0.5, 0, 0.9)])
    assert math.isnan(alone[0]["gap_relearn_asr_5"])  # no reference: no gap


def test_prefer_relearned_keeps_one_record_per_cell():
    cfg = {"method": "fst", "rate": 0.5, "seed": 0}
    now = relearn_settings((5,))
    old, new = {"key": "a", "config": cfg}, {"key": "b", "config": {**cfg, "relearn": now}}
    other = {"key": "c", "config": {**cfg, "seed": 1}}
    assert [r["key"] for r in prefer_relearned([old, new, other])] == ["b", "c"]
    # a record of an earlier design of the check (other re-tuning settings): its figures do not compare
    earlier = {**now, "pool": None, "bn": "eval", "batch_size": None}
    metrics = {"uxh": 0.4, "relearn_asr_5": 0.99}
    first = {"key": "d", "config": {**cfg, "relearn": earlier}, "metrics": metrics}
    assert [r["key"] for r in prefer_relearned([first, new])] == ["b"]  # the current design wins
    assert [r["key"] for r in prefer_relearned([old, first])] == ["a"]  # so does no check at all
    (alone,) = prefer_relearned([first])  # nothing else has the cell: it counts, without relearning figures
    assert alone["key"] == "d" and alone["metrics"] == {"uxh": 0.4}
    bare = [{"key": "x", "metrics": metrics}, {"key": "y", "metrics": metrics}]  # no configuration: each counts
    assert prefer_relearned(bare) == bare


def test_report_shows_relearning_columns_and_counts_a_cell_once(tmp_path):
    from rem.bench.store import ResultStore
    from rem.report import build_report

    def rec(key, method, rate, relearn=None, **metrics):
        cfg = {"method": method, "rate": rate, "seed": 0, **({"relearn": relearn_settings((5,))} if relearn else {})}
        return {
            "key": key,
            "method": method,
            "pretrain_type": "capacity-0.5",
            "task": "poison",
            "rate": rate,
            "seed": 0,
            "config": cfg,
            "metrics": {"uxh": 0.5, "healed": 0.5, "utility": 1.0, "asr": 0.1, **metrics},
        }

    with ResultStore.in_run_dir(tmp_path) as s:
        s.put(rec("old", "fst", 0.5))  # stored before the check: superseded by its relearned twin
        s.put(rec("new", "fst", 0.5, relearn=True, relearn_asr_5=0.9, relearn_healed_5=0.2))
        s.put(rec("ref", "retrain", 1.0, relearn=True, relearn_asr_5=0.3, relearn_healed_5=0.6))
        s.put(rec("plain", "none", 0.5))  # without the check: blank columns
    rep = build_report(tmp_path, metrics=("uxh", "relearn_asr_5"))
    assert rep.n_cells == 3 and not rep.warning
    cells = rep.cells_csv.read_text().splitlines()
    assert cells[0].endswith(",relearn_healed_5,relearn_asr_5")
    assert any(c.startswith("none,") and c.endswith(",,") for c in cells)
    md = rep.table_md.read_text()
    assert "## Relearning check" in md and "| fst | capacity-0.5 | poison | 0.5 | 1 |" in md
    assert "+60.00" in md  # fst's relearned ASR 90 % against the clean reference's 30 %
    assert "Relearning check" in rep.html.read_text() and (tmp_path / "report" / "relearn.csv").is_file()
    assert "relearn_asr_5" in rep.heatmaps


def test_the_cpu_profile_runs_the_check_by_default_and_off_turns_it_off():
    from rem.bench.grid import Grid

    def cells(**kw):
        return Grid(profile="cpu", methods=("rem",), tasks=("poison",), rates=(0.5,), **kw).cells()

    on, off, other = cells(), cells(relearn="off"), Grid(profile="smoke", methods=("rem",)).cells()
    assert on[0].relearn == (5, 50) and "relearn" in on[0].config()
    assert off[0].relearn == () and "relearn" not in off[0].config() and on[0].key != off[0].key
    assert all(c.relearn == () for c in other)  # off by default elsewhere
    assert on[0].start_key == off[0].start_key  # the starting model does not depend on it
