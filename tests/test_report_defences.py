"""The report's "Backdoor defences" section (:mod:`rem.report.defences`): written only when the poison cells
include a defence's (known by the registry's ``family``, not by name); mean ± SEM over seeds per rate; the
sentences say where a defence beats REM by more than the larger SEM, and nowhere else; ``defences.csv``."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest

from rem.bench.store import ResultStore
from rem.methods import REGISTRY, method_family
from rem.report import build_report
from rem.report.defences import COLUMNS, beats, defence_table, sentences

DEFENCES = {"neural-cleanse", "anp", "i-bau", "fst"}


def _put(run_dir, cells):
    """Store ``cells``: (method, rate, seed, utility, asr, healed[, task[, method_config]])."""
    with ResultStore.in_run_dir(run_dir) as s:
        for i, (method, rate, seed, utility, asr, healed, *more) in enumerate(cells):
            task = more[0] if more else "poison"
            mc = more[1] if len(more) > 1 else {}
            s.put(
                {
                    "key": f"k{i}",
                    "method": method,
                    "pretrain_type": "capacity-0.5",
                    "task": task,
                    "rate": rate,
                    "seed": seed,
                    "method_config": mc,
                    "config": {"method": method, "rate": rate, "seed": seed, "task": task, "mc": mc},
                    "metrics": {"utility": utility, "asr": asr, "healed": healed, "uxh": utility * healed},
                }
            )


def _row(method, rate, seeds, asr, asr_sem, healed, healed_sem, utility=0.7):
    """A row of the defences table (shares), for the sentences alone."""
    return {
        "rate": rate,
        "method": method,
        "pretrain_type": "capacity-0.5",
        "family": method_family(method.split(" ")[0]) or "",
        "name": method.split(" ")[0],
        "seeds": seeds,
        "utility_mean": utility,
        "utility_sem": math.nan if seeds < 2 else 0.01,
        "asr_mean": asr,
        "asr_sem": asr_sem,
        "healed_mean": healed,
        "healed_sem": healed_sem,
    }


def test_the_defences_are_marked_in_the_registry():
    """The family is an attribute of the classes (the defences' base class), not a list of names."""
    assert {n for n, c in REGISTRY.items() if c.family == "defence"} == DEFENCES
    assert REGISTRY["rem"].family == "unlearning" and REGISTRY["npo"].family == "unlearning"
    assert REGISTRY["none"].family == "reference" and method_family("no-such-method") is None
    assert REGISTRY["anp"].label({"clean_subset": True}) == "anp (clean subset)"
    assert REGISTRY["anp"].label({"clean_subset": False}) == "anp"


def test_no_section_without_defence_cells(tmp_path):
    """Poison cells of unlearning methods only, or a defence on another task: no section, no defences.csv."""
    _put(
        tmp_path,
        [("rem", 0.5, 0, 0.7, 0.3, 0.6), ("npo", 0.5, 0, 0.6, 0.2, 0.5), ("fst", 0.5, 0, 0.7, 0, 0.5, "random")],
    )
    rep = build_report(tmp_path)
    assert rep.defences == []
    assert "Backdoor defences" not in rep.table_md.read_text() and "Backdoor defences" not in rep.html.read_text()
    assert not (rep.out_dir / "defences.csv").exists()


def test_section_mean_sem_and_csv(tmp_path):
    """Hand-computed mean ± SEM over two seeds (SEM = |a − b| / 2), a single seed without ±, and the CSV."""
    _put(
        tmp_path,
        [
            ("rem", 0.5, 0, 0.70, 0.25, 0.60),
            ("rem", 0.5, 1, 0.72, 0.29, 0.62),
            ("anp", 0.5, 0, 0.60, 0.10, 0.80, "poison", {"clean_subset": False}),
            ("anp", 0.5, 1, 0.62, 0.14, 0.84, "poison", {"clean_subset": False}),
            ("anp", 0.5, 0, 0.70, 0.01, 0.95, "poison", {"clean_subset": True}),
            ("npo", 1.0, 0, 0.65, 0.30, 0.55),
            ("rem", 0.5, 0, 0.10, 0.90, 0.10, "random"),  # another task: not in the section
        ],
    )
    rep = build_report(tmp_path)
    got = {(r["rate"], r["method"]): r for r in rep.defences}
    assert set(got) == {(0.5, "rem"), (0.5, "anp"), (0.5, "anp (clean subset)"), (1.0, "npo")}
    anp = got[(0.5, "anp")]
    assert anp["family"] == "defence" and anp["seeds"] == 2
    assert anp["asr_mean"] == pytest.approx(0.12) and anp["asr_sem"] == pytest.approx(0.02)
    assert anp["healed_mean"] == pytest.approx(0.82) and anp["utility_sem"] == pytest.approx(0.01)
    assert got[(0.5, "rem")]["family"] == "unlearning" and got[(0.5, "rem")]["asr_sem"] == pytest.approx(0.02)
    assert math.isnan(got[(0.5, "anp (clean subset)")]["asr_sem"])
    md = rep.table_md.read_text()
    assert "## Backdoor defences" in md
    assert "| 0.5 | anp | capacity-0.5 | defence | 2 | 61.00 ± 1.00 | 12.00 ± 2.00 | 82.00 ± 2.00 |" in md
    assert "| 0.5 | rem | capacity-0.5 | unlearning | 2 | 71.00 ± 1.00 | 27.00 ± 2.00 | 61.00 ± 1.00 |" in md
    assert "| 0.5 | anp (clean subset) | capacity-0.5 | defence | 1 | 70.00 | 1.00 | 95.00 |" in md
    assert "| 1 | npo | capacity-0.5 | unlearning | 1 | 65.00 | 30.00 | 55.00 |" in md
    assert "<!-- --8<-- [start:defences] -->" in md and md.rstrip().endswith("<!-- --8<-- [end:defences] -->")
    page = rep.html.read_text()
    assert "<h2>Backdoor defences</h2>" in page and page.index("Backdoor defences") < page.index("<h2>Heatmaps")
    text = (rep.out_dir / "defences.csv").read_text()
    assert (
        text.splitlines()[0]
        == ",".join(COLUMNS)
        == (  # the CSV's schema, pinned
            "rate,method,pretrain_type,family,seeds,utility_mean,utility_sem,asr_mean,asr_sem,healed_mean,healed_sem"
        )
    )
    rows = {(r["rate"], r["method"]): r for r in csv.DictReader(io.StringIO(text))}
    assert rows[("0.5", "anp")]["asr_mean"] == "12.0" and rows[("0.5", "anp")]["asr_sem"] == "2.0"
    assert rows[("0.5", "anp (clean subset)")]["asr_sem"] == ""  # a single seed: blank SEM
    assert rows[("1.0", "npo")]["family"] == "unlearning" and rows[("1.0", "npo")]["seeds"] == "1"


def test_a_sentence_exactly_when_a_defence_beats_rem_beyond_the_sem(tmp_path):
    """anp's ASR is below rem's by more than the larger SEM: said, with the figures; fst's is below by less than
    the SEM, and its healed above by less: not said. Nothing is said of npo (not a defence)."""
    cells = [
        ("rem", 0.5, 0, 0.70, 0.25, 0.60),
        ("rem", 0.5, 1, 0.72, 0.29, 0.62),  # ASR 27 ± 2, healed 61 ± 1
        ("anp", 0.5, 0, 0.60, 0.10, 0.60),
        ("anp", 0.5, 1, 0.62, 0.14, 0.62),  # ASR 12 ± 2: beats rem; healed 61 ± 1: equal
        ("fst", 0.5, 0, 0.66, 0.24, 0.61),
        ("fst", 0.5, 1, 0.66, 0.28, 0.62),  # ASR 26 ± 2, healed 61.5 ± 0.5: within the SEMs
        ("npo", 0.5, 0, 0.60, 0.01, 0.99),
        ("npo", 0.5, 1, 0.60, 0.01, 0.99),  # far better than rem, but not a defence
    ]
    _put(tmp_path, cells)
    rep = build_report(tmp_path)
    said = sentences(rep.defences)
    assert said == [
        "At rate 0.5, anp's ASR (12.00 ± 2.00 %) is below rem's (27.00 ± 2.00 %) by more than the larger SEM; "
        "clean accuracy 61.00 ± 1.00 % against 71.00 ± 1.00 %."
    ]
    md = rep.table_md.read_text()
    assert "- " + said[0] in md and "fst's" not in md and "npo's" not in md
    assert "anp&#x27;s ASR (12.00 ± 2.00 %) is below rem&#x27;s" in rep.html.read_text()


def test_sentences_on_the_sem_margin():
    rem = _row("rem", 0.5, 3, 0.30, 0.02, 0.60, 0.02)
    # 5 points lower ASR: beats with SEMs 0.02 and 0.04, not with 0.06 (the larger SEM decides)
    assert beats(_row("anp", 0.5, 3, 0.25, 0.04, 0.5, 0.01), rem, "asr")
    assert not beats(_row("anp", 0.5, 3, 0.25, 0.06, 0.5, 0.01), rem, "asr")
    assert not beats(_row("anp", 0.5, 3, 0.30, 0.0, 0.5, 0.0), rem, "asr")  # equal: no
    assert beats(_row("fst", 0.5, 3, 0.9, 0.01, 0.65, 0.01), rem, "healed")
    assert not beats(_row("fst", 0.5, 3, 0.9, 0.01, 0.61, 0.01), rem, "healed")
    assert not beats(_row("fst", 0.5, 3, math.nan, math.nan, 0.61, 0.01), rem, "asr")  # missing: no
    # healed above rem's by more than the SEM: one sentence, on healed only
    said = sentences([rem, _row("fst", 0.5, 3, 0.35, 0.01, 0.70, 0.01)])
    assert len(said) == 1 and "fst's healed (70.00 ± 1.00 %) is above rem's (60.00 ± 2.00 %)" in said[0]
    # within the SEM on both: no defence beats rem
    said = sentences([rem, _row("fst", 0.5, 3, 0.29, 0.02, 0.61, 0.02)])
    assert said == ["At rate 0.5, no defence (fst) beats rem on ASR or healed by more than the larger SEM."]


def test_single_seed_any_difference_counts_and_is_said():
    rem = _row("rem", 1.0, 1, 0.30, math.nan, 0.60, math.nan)
    said = sentences([rem, _row("anp", 1.0, 1, 0.2999, math.nan, 0.60, math.nan)])
    assert said == [
        "At rate 1, anp's ASR (29.99 %) is below rem's (30.00 %) (single seed: no SEM); "
        "clean accuracy 70.00 % against 70.00 %."
    ]
    same = _row("anp", 1.0, 1, 0.30, math.nan, 0.60, math.nan)
    assert sentences([rem, same]) == ["At rate 1, no defence (anp) beats rem on ASR or healed (single seed: no SEM)."]
    # one side with a SEM: its SEM is the margin
    anp = _row("anp", 1.0, 3, 0.25, 0.06, 0.60, 0.01)
    assert sentences([rem, anp]) == [
        "At rate 1, no defence (anp) beats rem on ASR or healed by more than the larger SEM (rem: single seed, no SEM)."
    ]
    anp = _row("anp", 1.0, 3, 0.20, 0.06, 0.60, 0.01)
    assert "by more than anp's SEM (rem: single seed)" in sentences([rem, anp])[0]


def test_rem_better_than_every_defence_and_rem_variants():
    """REM beats every defence on both: said once; a REM variant (a registered name starting with rem) is
    compared too, and a defence that beats it is said; a rate without a defence says nothing."""
    rem = _row("rem", 0.5, 2, 0.05, 0.01, 0.90, 0.01)
    variant = _row("rem-discover", 0.5, 2, 0.40, 0.01, 0.50, 0.01)
    tagged = _row("rem (r=0.25)", 0.5, 2, 0.04, 0.01, 0.91, 0.01)
    anp, fst = _row("anp", 0.5, 2, 0.20, 0.01, 0.70, 0.01), _row("fst", 0.5, 2, 0.30, 0.01, 0.60, 0.01)
    alone = _row("rem", 1.0, 2, 0.05, 0.01, 0.90, 0.01)
    said = sentences([rem, variant, tagged, anp, fst, alone])
    assert said[0] == (
        "At rate 0.5, rem is better than every defence (anp, fst) on both ASR and healed by more than the larger SEM."
    )
    assert said[1].startswith("At rate 0.5, anp's ASR (20.00 ± 1.00 %) is below rem-discover's (40.00 ± 1.00 %)")
    assert any(s.startswith("At rate 0.5, fst's healed (60.00 ± 1.00 %) is above rem-discover's") for s in said)
    assert said[-1].startswith("At rate 0.5, rem (r=0.25) is better than every defence")
    assert not any(s.startswith("At rate 1") for s in said)
    assert len(said) == 1 + 4 + 1  # rem; rem-discover beaten by both defences on both; the tagged rem
    # the oracle and the ablation are not methods a user would choose: never compared
    oracle, ablation = (
        _row("rem-ideal", 0.5, 2, 0.9, 0.01, 0.1, 0.01),
        _row("rem-no-remove", 0.5, 2, 0.9, 0.01, 0.1, 0.01),
    )
    assert sentences([rem, variant, tagged, anp, fst, alone, oracle, ablation]) == said


def test_defence_table_is_empty_without_a_defence_on_poison():
    rows = [
        {"method": "rem", "method_name": "rem", "pretrain_type": "p", "task": "poison", "rate": 0.5, "seed": 0},
        {"method": "anp", "method_name": "anp", "pretrain_type": "p", "task": "random", "rate": 0.5, "seed": 0},
    ]
    assert defence_table(rows) == []
    rows[1]["task"] = "poison"
    assert [r["method"] for r in defence_table(rows)] == ["rem", "anp"]


def test_the_docs_page_includes_every_committed_defences_section_and_types_no_figures():
    """docs/results/defences.md includes the section of each committed report that has one (by its snippet
    markers); without one it shows no figure (no percentage typed by hand)."""
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs/results/defences.md").read_text()
    committed = [
        p.relative_to(root / "docs").as_posix()
        for p in sorted((root / "docs/results").rglob("table.md"))
        if "[start:defences]" in p.read_text()
    ]
    for rel in committed:
        assert f'\n--8<-- "{rel}:defences"' in page, f"docs/results/defences.md does not include {rel}'s section"
    if not committed:
        assert not re.search(r"\d\s*%", page), "the page types a figure while no committed report has the section"
        assert "rem bench --profile cpu --tasks poison" in page and "clean_subset=true" in page


def test_every_csv_writes_a_missing_or_single_seed_figure_blank():
    """``to_csv`` (table.csv, relearn.csv, defences.csv, ...): None and NaN are blank fields, never 'nan'."""
    from rem.report.tables import to_csv

    text = to_csv([{"m": "rem", "uxh_mean": 41.5, "uxh_sem": math.nan, "asr_mean": None, "n": 0}])
    assert text.splitlines() == ["m,uxh_mean,uxh_sem,asr_mean,n", "rem,41.5,,,0"]
    assert "nan" not in text.lower()
