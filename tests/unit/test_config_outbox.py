"""[journal] and [outbox]: the journal box that settles unknown SMTP outcomes, and how
mail leaves (docs/decisions/0007)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from postroom.config import load_config, mail_users
from postroom.engine.site import site_from_config
from tests.unit.test_config import EXAMPLES, base, errors_of, write


def with_journal(**journal: object) -> dict:
    doc = copy.deepcopy(base())
    doc["journal"] = {"address": "journal@example.test", "password": "jpw", **journal}
    return doc


def test_without_journal_and_outbox_the_defaults_hold(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, base()), environ={})
    assert config.journal is None
    outbox = config.outbox
    assert (outbox.max_attempts, outbox.send_timeout_seconds, outbox.lease_seconds) == (12, 60, 300)
    assert outbox.automatic_envelope_from == "null"
    site = site_from_config(config)
    assert site.journal is None and site.smtp.timeout == 60.0
    assert site.automatic_sender("support@example.test") == ""


def test_a_journal_box_is_a_box_with_retention_and_grace(tmp_path: Path) -> None:
    doc = with_journal(retention="30d", grace="90s")
    doc["outbox"] = {"max_attempts": 5, "send_timeout": "20s", "lease": "1m", "automatic_envelope_from": "box"}
    config = load_config(write(tmp_path, doc), environ={})
    assert config.journal is not None and config.journal.login == "journal@example.test"
    assert (config.journal.retention_seconds, config.journal.grace_seconds) == (30 * 86400, 90)
    site = site_from_config(config)
    assert site.journal is not None and site.journal.address == "journal@example.test"
    assert site.journal.account.timeout == 20.0 and site.journal.account.password == "jpw"
    assert site.outbox.max_attempts == 5 and site.outbox.lease.total_seconds() == 60
    assert site.outbox.grace.total_seconds() == 90
    assert site.automatic_sender("support@example.test") == "support@example.test"
    # The dev stack creates the journal box like every other box.
    assert ("journal@example.test", "jpw") in mail_users(config)


@pytest.mark.parametrize(
    ("doc", "path", "fragment"),
    [
        (with_journal(retention="12h"), "journal.retention", "at least one day"),
        (with_journal(grace="soon"), "journal.grace", "duration"),
        (with_journal(password=1), "journal.password", "expected a string"),
        (with_journal(address="dead@example.test"), "journal.address", "duplicate address"),
        (with_journal(retension="7d"), "journal.retension", 'did you mean "retention"'),
        ({**base(), "outbox": {"lease": "30s", "send_timeout": "20s"}}, "outbox.lease", "at least twice send_timeout"),
        ({**base(), "outbox": {"max_attempts": 0}}, "outbox.max_attempts", "between 1 and 1000"),
        ({**base(), "outbox": {"automatic_envelope_from": "<>"}}, "outbox.automatic_envelope_from", '"null", "box"'),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_broken_journal_and_outbox_name_their_key(tmp_path: Path, doc: dict, path: str, fragment: str) -> None:
    errors = errors_of(tmp_path, doc)
    assert [e.path for e in errors] == [path], errors
    assert fragment in errors[0].message


def test_the_shipped_examples_have_a_journal_box() -> None:
    demo = load_config(EXAMPLES / "demo.toml", environ={})
    assert demo.journal is not None and demo.journal.address == "journal@example.test"
