"""Shared helpers for the unit tests that read the real-mail corpus (/work/shared/corpus).

The corpus lives beside the repository, never in it.  ``POSTROOM_CORPUS`` overrides its
place; tests that need it skip cleanly when it is absent.  Parsing the whole corpus takes a
couple of seconds, so ``parsed_corpus`` does it once per session and shares the result.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postroom.mail.message import ParsedMail, parse

CORPUS = Path(
    os.environ.get("POSTROOM_CORPUS")
    or Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
)
FOLDERS = ("inbound", "replies", "bounces", "autoreplies", "malformed")


def corpus_available() -> bool:
    return (CORPUS / "manifest.tsv").is_file()


def manifest() -> dict[str, str]:
    """path (relative to the corpus) -> the manifest's notes column; {} without a corpus."""
    if not corpus_available():
        return {}
    rows = (CORPUS / "manifest.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {cols[0]: cols[5] for cols in (row.split("\t") for row in rows) if len(cols) >= 6}


def corpus_files(folder: str | None = None) -> list[str]:
    """Relative paths of the corpus messages (all, or one top folder), sorted."""
    return sorted(p for p in manifest() if folder is None or p.split("/", 1)[0] == folder)


def read(rel: str) -> bytes:
    if not corpus_available():
        pytest.skip(f"mail corpus not found at {CORPUS} (set POSTROOM_CORPUS)")
    return (CORPUS / rel).read_bytes()


_PARSED: dict[str, ParsedMail | Exception] = {}


@pytest.fixture(scope="session")
def parsed_corpus() -> dict[str, ParsedMail | Exception]:
    """Every corpus message parsed once: relative path -> ParsedMail, or what parse() raised.

    Anything but ``UnreadableMessage`` is kept too, so that test_message_parse can name
    the file instead of the whole session failing in a fixture.
    """
    if not corpus_available():
        pytest.skip(f"mail corpus not found at {CORPUS} (set POSTROOM_CORPUS)")
    if not _PARSED:
        for rel in corpus_files():
            try:
                _PARSED[rel] = parse((CORPUS / rel).read_bytes())
            except Exception as exc:  # noqa: BLE001 - recorded for the test to report
                _PARSED[rel] = exc
    return _PARSED


def parsed(rel: str) -> ParsedMail:
    """One corpus message, parsed (skips without a corpus)."""
    return parse(read(rel))
