"""Settings are parsed by their config field's declared type, the same way everywhere (issue 14, items 1-2)."""

from __future__ import annotations

import pytest

from rem.bench import Grid
from rem.cli.settings import parse_settings
from rem.errors import ConfigError
from rem.methods import get_method
from rem.settings import coerce_fields


@pytest.mark.parametrize(
    "text,want",
    [
        ("False", False),
        ("false", False),
        ("no", False),
        ("NO", False),
        ("0", False),
        ("off", False),
        ("True", True),
        ("yes", True),
        ("1", True),
        (False, False),
        (True, True),
    ],
)
def test_bools_are_parsed_not_truthy(text, want):
    m = get_method("rem", remove_term=text, soft_mask=text)
    assert m.config.remove_term is want and m.config.soft_mask is want


@pytest.mark.parametrize(
    "key,value",
    [
        ("steps", "1.5"),
        ("steps", 1.5),
        ("batch_size", "64.0"),
        ("batch_size", 64.0),
        ("max_epochs", "2.5"),
        ("steps", True),
        ("beta", "abc"),
        ("p", "True"),
        ("p", True),
        ("gamma", "null"),
        ("gamma", None),
        ("beta", "nan"),
        ("remove_term", "maybe"),
        ("remove_term", 2),
        ("optimizer", 1),
    ],
)
def test_wrong_types_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        get_method("rem", **{key: value})


def test_numbers_and_optionals():
    cfg = get_method("rem", steps="7", beta="0.5", lr=1, expand_ratio="0.25").config
    assert (cfg.steps, cfg.beta, cfg.lr, cfg.expand_ratio) == (7, 0.5, 1.0, 0.25)
    assert isinstance(cfg.lr, float)
    potion = get_method("potion", start_share="none").config
    assert potion.start_share is None
    assert get_method("potion", start_share="0.1").config.start_share == 0.1


def test_bench_set_is_typed_and_unknown_keys_are_refused():
    g = Grid(
        profile="smoke",
        methods=("none", "rem"),
        rates=(1.0,),
        tasks=("poison",),
        settings=parse_settings(["rem.remove_term=False", "gamma=0.3"]),
    )
    cfg = {c.method: c.method_config() for c in g.cells()}
    assert cfg["rem"]["remove_term"] is False and cfg["rem"]["gamma"] == 0.3 and cfg["none"]["gamma"] == 0.3
    with pytest.raises(ConfigError, match="betta"):  # no method prefix: was dropped silently
        Grid(profile="smoke", methods=("none", "rem"), settings=parse_settings(["betta=1"])).cells()
    with pytest.raises(ConfigError, match="beta"):  # a real setting, but of no method in this grid
        Grid(profile="smoke", methods=("none",), settings=parse_settings(["beta=1"])).cells()
    with pytest.raises(ConfigError, match="integer"):
        Grid(profile="smoke", methods=("rem",), settings=parse_settings(["rem.steps=1.5"])).cells()


def test_config_files_go_by_the_same_types(tmp_path):
    (tmp_path / "g.toml").write_text('profile = "smoke"\nmethods = ["rem"]\n[settings.rem]\nremove_term = "no"\n')
    cells = Grid.from_file(tmp_path / "g.toml").cells()
    assert cells[0].method_config()["remove_term"] is False
    (tmp_path / "b.toml").write_text('profile = "smoke"\nmethods = ["rem"]\n[settings.rem]\nbatch_size = 64.0\n')
    with pytest.raises(ConfigError, match="batch_size"):
        Grid.from_file(tmp_path / "b.toml").cells()
    (tmp_path / "c.json").write_text('{"profile": "smoke", "pretrain_steps": 2.5}')
    with pytest.raises(ConfigError, match="pretrain_steps"):
        Grid.from_file(tmp_path / "c.json")


def test_coerce_fields_names_unknown_settings():
    from rem.methods.rem import REMConfig

    with pytest.raises(ConfigError, match="no setting"):
        coerce_fields(REMConfig, {"betta": 1})


def test_settings_for_one_run_merges_and_refuses_other_names():
    """``rem unlearn``/``rem discover``/the examples read ``--set`` for one method or score: plain and
    prefixed items merge (prefixed wins), an item for another name is refused naming it, a malformed one too."""
    from rem.cli.settings import settings_for

    assert settings_for(["beta=0.5", "rem.beta=0.7", "expand-ratio=0.25"], "rem") == {
        "beta": "0.7",
        "expand_ratio": "0.25",
    }
    assert settings_for(None, "npo") == {}
    with pytest.raises(ConfigError, match=r"--set for npo, but this run's method is 'rem'"):
        settings_for(["npo.beta=1"], "rem")
    with pytest.raises(ConfigError, match="score is 'loss'"):
        settings_for(["rem.beta=1"], "loss", "score")
    with pytest.raises(ConfigError, match=r"KEY=VALUE, got 'beta'"):
        settings_for(["beta"], "rem")
