"""The README's performance table is bench/results.json, not a hand-typed copy (issue 9).

`make bench` rewrites both together (bench/report.py); this fails when one was edited or
committed without the other.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parents[2]


def test_readme_table_is_generated_from_results_json() -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert report.readme_section(readme) == report.readme_table(doc)


def test_the_table_shows_every_headline_figure_of_the_run() -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    table = report.readme_table(doc)
    for figure in doc["figures"]:
        if figure["name"] in report.README_FIGURES:
            assert f"`{figure['name']}`" in table
