"""One run path (rem.run): `rem unlearn` and `rem bench` run the same cell and write the same record;
cell and starting-model keys stay what results stores already hold."""

import json

import pytest
import torch

from rem.bench import Grid, ResultStore
from rem.cli import main
from rem.methods import REGISTRY, get_method, method_names, settings_help
from rem.profiles import get_profile
from rem.run import method_settings, shortcut_settings

CPU_THEN = {"steps": 100, "relearn": "off"}

#: Keys computed before the run path was unified (issue 18): a results store written by an earlier rem
#: must find its cells and starting models again.
PINNED = [
    # (grid keywords, method, cell key, start key); rem and npo keys re-pinned when forget_bn_frozen was added,
    # the smoke ones when crop_pad entered every profile and task dict (the cpu profile's always had it)
    ({"profile": "smoke"}, "none", "94de21c4a837666231df", "84e70dbcedded27106ec"),
    ({"profile": "smoke"}, "rem", "c2dc2a5bef6d349d7cd5", "84e70dbcedded27106ec"),
    ({"profile": "smoke"}, "npo", "8f06f133f9298de74cb0", "84e70dbcedded27106ec"),
    ({"profile": "smoke"}, "scrub", "a35970d43f02d04da7da", "84e70dbcedded27106ec"),
    # the cpu ones at the budget and relearning of the grids stored before the profile's 250 steps / relearn 5,50
    ({"profile": "cpu", **CPU_THEN}, "rem", "13f93480c5f1e12840fa", "da8f7d367f2618815caf"),
    ({"profile": "cpu", **CPU_THEN}, "npo", "5b0890199b804ad79d1d", "da8f7d367f2618815caf"),
    (
        {
            "profile": "cpu",
            **CPU_THEN,
            "tasks": ("interclass",),
            "expand_ratio": 0.25,
            "settings": {"rem": {"soft_mask": True}},
        },
        "rem",
        "7a8641e25a89bb1133a6",
        "5dd07e0d348bbf9e94b2",
    ),
]


@pytest.mark.parametrize("kw,method,key,start", PINNED)
def test_cell_and_start_keys_are_pinned(kw, method, key, start):
    kw = {"tasks": ("poison",), "rates": (0.5,), **kw, "methods": (method,)}
    (cell,) = Grid(**kw).cells()
    assert (cell.key, cell.start_key) == (key, start)


def test_method_settings_from_profile_seed_and_sets():
    p = get_profile("smoke")
    s = method_settings(
        "rem", p, 3, {"*": {"beta": 0.5, "alpha": 9}, "rem": {"p": 0.3}}, shortcut_settings(expand_ratio=1)
    )
    assert s == {
        "steps": p.unlearn.steps,
        "lr": p.unlearn.lr,
        "batch_size": p.unlearn.batch_size,
        "optimizer": p.unlearn.optimizer,
        "weight_decay": p.unlearn.weight_decay,
        "momentum": p.unlearn.momentum,
        "seed": 3,
        "expand_ratio": 1.0,
        "beta": 0.5,
        "p": 0.3,
    }
    assert "expand_ratio" not in method_settings("none", p, 0, None, {"expand_ratio": 0.5})


@pytest.mark.slow
def test_unlearn_and_bench_write_the_same_record(tmp_path):
    torch.set_num_threads(1)
    run, out = tmp_path / "run", tmp_path / "u"
    bench = "bench --profile smoke --methods rem --tasks poison --rates 0.5 --pretrain-steps 20 --steps 4"
    assert main([*bench.split(), "--set", "rem.max_epochs=2", "--run-dir", str(run), "--no-report", "--quiet"]) == 0
    with ResultStore.in_run_dir(run, create=False) as store:
        (stored,) = store.records("done")
    (ckpt,) = (run / "models").glob("*.safetensors")
    unlearn = "unlearn --method rem --rate 0.5 --steps 4 --set max_epochs=2 --quiet"
    assert main([*unlearn.split(), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    written = json.loads((out / "metrics.json").read_text())
    same = "key config method_config metrics history split_hash start_key start_metrics n_forget n_corrupt params"
    for k in [*same.split(), "rate", "seed", "task", "pretrain_type"]:
        assert written[k] == stored[k], k
    assert written["method_config"]["momentum"] == get_profile("smoke").unlearn.momentum and "before" in written


@pytest.mark.parametrize("name", method_names())
def test_every_setting_has_help_and_methods_settings_prints_it(name, capsys):
    cls = REGISTRY[name]
    rows = settings_help(cls.config_cls)
    assert rows and all(text for _, _, _, text in rows), [n for n, _, _, t in rows if not t]
    assert main(["methods", "--settings", name]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n, *_ in rows)
    assert cls.label(get_method(name).config.as_dict()) == name  # defaults: the plain name


def test_rem_labels_its_own_variants():
    from rem.methods import method_label

    assert (
        method_label({"method": "rem", "method_config": {"expand_ratio": 0.25, "soft_mask": True}})
        == "rem (r=0.25, soft mask)"
    )
    assert method_label({"method": "gone", "method_config": {"expand_ratio": 0.5}}) == "gone"
    assert method_names()[:3] == ["none", "rem", "rem-ideal"]


def test_the_cpu_profiles_own_budget_and_relearning_are_other_cells():
    (now,) = Grid(profile="cpu", tasks=("poison",), rates=(0.5,), methods=("rem",)).cells()
    assert now.method_config()["steps"] == 250 and now.relearn == (5, 50)
    assert now.key != "13f93480c5f1e12840fa" and now.start_key == "da8f7d367f2618815caf"
