import json

import pytest

from rem.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--profile", "smoke", "--task", "poison", "--steps", "40", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_eval_unlearn(trained, tmp_path, capsys):
    rec = json.loads((trained / "metrics.json").read_text())
    assert {"healed", "utility", "uxh", "asr"} <= set(rec["metrics"])
    assert main(["eval", "--checkpoint", str(trained / "model.safetensors"), "--out", str(tmp_path / "e.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert ev["uxh"] == pytest.approx(rec["metrics"]["uxh"])
    assert 0 <= ev["uxh"] <= 1 and ev["uxh"] == pytest.approx(ev["healed"] * ev["utility"])  # files: shares
    out = capsys.readouterr().out
    shown = json.loads(out.split("metrics (%):")[-1].splitlines()[0])  # rem eval prints percent
    assert shown["uxh"] == pytest.approx(100 * ev["uxh"], abs=0.01) and shown["params"] == ev["params"]
    assert (
        main(
            [
                "unlearn",
                "--checkpoint",
                str(trained / "model.safetensors"),
                "--method",
                "rem",
                "--rate",
                "0.5",
                "--steps",
                "4",
                "--expand-ratio",
                "0.5",
                "--out",
                str(tmp_path / "u"),
                "--quiet",
            ]
        )
        == 0
    )
    u = json.loads((tmp_path / "u" / "metrics.json").read_text())
    assert u["method_config"]["expand_ratio"] == 0.5 and u["history"]
    assert main(["eval", "--checkpoint", str(tmp_path / "u" / "model.safetensors")]) == 0


def test_unlearn_with_index_file_and_errors(trained, tmp_path, capsys):
    ck = str(trained / "model.safetensors")
    f = tmp_path / "idx.txt"
    f.write_text("1, 2, 3")
    assert (
        main(
            [
                "unlearn",
                "--checkpoint",
                ck,
                "--method",
                "npo",
                "--forget-file",
                str(f),
                "--steps",
                "2",
                "--set",
                "max_epochs=2",
                "--out",
                str(tmp_path / "n"),
                "--quiet",
            ]
        )
        == 0
    )
    f.write_text("1 1")
    assert main(["unlearn", "--checkpoint", ck, "--forget-file", str(f), "--out", str(tmp_path / "x")]) == 2
    assert "duplicated" in capsys.readouterr().err
    f.write_text("99999999")
    assert main(["unlearn", "--checkpoint", ck, "--forget-file", str(f), "--out", str(tmp_path / "x")]) == 2
    assert "out of range" in capsys.readouterr().err
    f.write_text("1 2")
    assert (
        main(["unlearn", "--checkpoint", ck, "--forget-file", str(f), "--within-corrupt", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "not in the corrupted set" in capsys.readouterr().err
    assert (
        main(["unlearn", "--checkpoint", ck, "--rate", "0.5", "--set", "nonsense=1", "--out", str(tmp_path / "x")]) == 2
    )
    assert "no setting" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    assert "safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written on refused input


def test_missing_dataset_names_folder(tmp_path, capsys):
    assert main(
        [
            "train",
            "--profile",
            "cpu",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--no-download",
            "--out",
            str(tmp_path / "o"),
        ]
    ) in (2,)
    assert "nowhere" in capsys.readouterr().err


def test_methods_lists_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "rem " in out and "npo" in out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    assert lines["rem"] == "unlearning" and lines["anp"] == "defence"  # each method's family
    assert lines["rem-ideal"] == "oracle" and lines["rem-no-remove"] == "ablation" and lines["none"] == "reference"


@pytest.mark.slow
def test_demo_on_smoke_profile(tmp_path, capsys):
    assert main(["demo", "--profile", "smoke", "--run-dir", str(tmp_path / "d"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "rem" in out and "report.html" in out and (tmp_path / "d" / "report" / "report.html").exists()
    assert "CIFAR-10" not in out and "generated images" in out  # the smoke profile's data
    asr = out.split("attack success rate")[1]
    assert "starting model" in asr and "\n  rem " in asr and "%" in asr


def test_help_texts_match_the_code_and_show_defaults():
    """Rates are in (0, 1], the expand ratio in (0, 8] (REMConfig's check), every default is shown."""
    import argparse

    from rem.cli import build_parser
    from rem.methods import get_method

    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    helps = {
        (name, opt): act.help for name, p in sub.choices.items() for act in p._actions for opt in act.option_strings
    }
    assert "(0, 1]" in helps[("unlearn", "--rate")] and "(0, 1]" in helps[("bench", "--rates")]
    assert "(0, 8]" in helps[("unlearn", "--expand-ratio")] and "(0, 8]" in helps[("bench", "--expand-ratio")]
    get_method("rem", expand_ratio=8.0)
    with pytest.raises(Exception, match="expand_ratio"):
        get_method("rem", expand_ratio=8.5)
    for name, p in sub.choices.items():
        for act in p._actions:
            if act.option_strings and act.default not in (None, False, argparse.SUPPRESS):
                assert "default" in (act.help or ""), f"rem {name} {act.option_strings}: default not shown"
