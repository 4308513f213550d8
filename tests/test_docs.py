"""The front door and the documentation site: the README fits on a few screens and shows the report's own
Table 1; the site builds with `mkdocs build --strict` (no broken link, page or API reference); every
"SPEC §N" the code cites is a section of docs/spec.md; user docs carry no issue numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_is_short_and_has_what_a_newcomer_needs():
    text = README.read_text()
    assert len(text.encode()) <= 15_000, f"README.md is {len(text.encode())} bytes; keep it <= 15,000"
    for needed in ("make demo", "make test", "pip install rem-unlearning", "rem.unlearn(", "rem.task_of(meta)"):
        assert needed in text, needed
    for metric in ("healed", "utility", "uxh", "forget_acc", "asr"):
        assert f"| `{metric}` |" in text
    assert re.search(r"`make demo` took \*\*\d+ min \d+ s\*\* of wall time and \*\*[\d,]+ CPU-seconds", text), (
        "demo time"
    )


def test_readme_headline_tables_are_the_reports_own():
    """Every row of the README's headline tables is a row of the report the table names (never typed by hand)."""
    text = README.read_text()
    section = text.split("## Headline results", 1)[1].split("\n## ", 1)[0]
    tables = re.findall(r"\((docs/results/[\w-]+/table\.md)\)[^|]*?((?:^\|.*\n)+)", section, flags=re.M)
    assert len(tables) >= 2, "the headline names the report of each of its tables"
    for path, rows in tables:
        report = (ROOT / path).read_text().splitlines()
        assert len(rows.splitlines()) >= 4
        for row in rows.splitlines():
            assert row in report, f"{path}: {row}"


def test_every_spec_citation_in_the_code_has_its_section():
    cited = set()
    for folder in ("src", "benchmarks", "examples", "tests"):
        for p in (ROOT / folder).rglob("*.py"):
            cited |= set(re.findall(r"SPEC §(\d+)", p.read_text()))
    spec = (ROOT / "docs/spec.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", spec, flags=re.M))
    assert cited and cited <= sections, f"cited but missing in docs/spec.md: {sorted(cited - sections)}"


def test_user_docs_speak_to_users():
    pages = [README, *(ROOT / "docs").rglob("*.md")]
    for p in pages:
        text = p.read_text()
        assert not re.search(r"\bissues? \d+", text, flags=re.I), f"{p.relative_to(ROOT)} names an issue number"
        assert "../shared/" not in text, f"{p.relative_to(ROOT)} points outside the repository"


@pytest.mark.slow
def test_the_documentation_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="pip install -e '.[test]' installs mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for page in ("index.html", "spec/index.html", "results/index.html", "api/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site/api/index.html").read_text()
    assert "rem.api.unlearn" in api or "unlearn" in api
