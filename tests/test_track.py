"""REM's per-round analysis (``track``) is result-neutral: the same model, the same cell key, and the
benchmark tracks only the cells the redirection curve draws."""

import pytest
import torch

from rem.bench.grid import Grid
from rem.data.tasks import TaskConfig, make_task
from rem.methods import Context, get_method
from rem.models import build_model
from rem.profiles import get_profile, profile_data


@pytest.fixture(scope="module")
def start(one_thread):
    p = get_profile("smoke")
    task = make_task(profile_data(p), TaskConfig(kind="poison", n_corrupt=p.n_corrupt, seed=0))
    torch.manual_seed(0)
    return task, build_model(p.arch_spec(10))


def test_tracking_does_not_change_the_healed_model(start):
    task, model = start
    fi = task.forget_idx(0.5)
    runs = {
        t: get_method("rem", steps=6, batch_size=128, track=t).unlearn(model, task, fi, Context())
        for t in (True, False)
    }
    a, b = (runs[t].model.state_dict() for t in (True, False))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rounds = {t: [h for h in runs[t].history if "round" in h] for t in runs}
    assert rounds[True] and all("track_healed" in h for h in rounds[True])
    assert not any("track_healed" in h for h in rounds[False])
    strip = [{k: v for k, v in h.items() if not k.startswith("track_")} for h in rounds[True]]
    assert strip == rounds[False]  # every other figure of the history is the same


def test_track_is_not_part_of_the_key():
    on, off = (get_method("rem", track=t).config for t in (True, False))
    assert on.key_dict() == off.key_dict() and on.key_dict()["track"] is True
    assert get_method("rem", beta=0.5).config.key_dict() != on.key_dict()  # other settings still are


def test_the_grid_tracks_only_the_curve_cells():
    g = Grid(profile="smoke", methods=("rem", "npo"), tasks=("poison",), rates=(0.1, 0.4, 0.8, 1.0), seeds=(2, 1))
    tracked = {(c.rate, c.seed) for c in g.cells() if c.method == "rem" and c.overrides["track"]}
    assert tracked == {(0.4, 1)}  # the first seed, the rate nearest 0.5
    assert all("track" not in c.overrides for c in g.cells() if c.method == "npo")
    keys = {(c.rate, c.seed): c.key for c in g.cells() if c.method == "rem"}
    forced = Grid(
        profile="smoke",
        methods=("rem",),
        tasks=("poison",),
        rates=(0.1, 0.4, 0.8, 1.0),
        seeds=(2, 1),
        settings={"rem": {"track": True}},
    )
    assert all(c.overrides["track"] for c in forced.cells())  # a grid that sets it gets it everywhere
    assert {(c.rate, c.seed): c.key for c in forced.cells()} == keys  # and the same cells
