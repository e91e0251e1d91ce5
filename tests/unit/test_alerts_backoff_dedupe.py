"""Pure helpers of the mailboxes work: alert mail throttling, backoff, the dedupe key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from postroom.core.alerts import notice_due
from postroom.core.backoff import delay
from postroom.core.dedupe import dedupe_key

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_an_alert_is_mailed_once_per_interval_and_only_when_raised_again() -> None:
    assert notice_due(pending=True, notified_at=None, now=NOW, interval=HOUR)
    assert not notice_due(pending=True, notified_at=NOW - timedelta(minutes=59), now=NOW, interval=HOUR)
    assert notice_due(pending=True, notified_at=NOW - HOUR, now=NOW, interval=HOUR)
    assert not notice_due(pending=False, notified_at=None, now=NOW, interval=HOUR)


@pytest.mark.parametrize("jitter", [0.0, 0.3, 0.999])
def test_backoff_doubles_is_capped_and_never_zero(jitter: float) -> None:
    waits = [delay(n, base=1.0, cap=30.0, jitter=jitter) for n in range(1, 12)]
    assert all(0.5 <= w <= 30.0 for w in waits)
    assert waits[0] < waits[3] < waits[5]
    assert waits[-1] == pytest.approx(15.0 + 15.0 * jitter)
    assert delay(0, base=1.0, cap=30.0, jitter=jitter) == 0.0


def test_jitter_spreads_boxes_that_failed_together() -> None:
    assert delay(4, base=1.0, cap=30.0, jitter=0.0) != delay(4, base=1.0, cap=30.0, jitter=0.9)


def test_the_same_mail_in_two_boxes_has_one_key() -> None:
    when = datetime(2026, 1, 5, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    a = dedupe_key("<1@c.test>", "Carol@Customer.test", when, "Where is  my order?")
    b = dedupe_key(" <1@c.test> ", "carol@customer.test", when.astimezone(UTC), "Where is my order?")
    assert a == b and len(a) == 64


def test_a_reused_message_id_on_a_different_mail_is_another_key() -> None:
    when = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    first = dedupe_key("<constant@mailer.test>", "a@c.test", when, "Invoice 1")
    assert first != dedupe_key("<constant@mailer.test>", "a@c.test", when, "Invoice 2")
    assert first != dedupe_key("<constant@mailer.test>", "a@c.test", when + timedelta(seconds=1), "Invoice 1")
    assert first != dedupe_key("<constant@mailer.test>", "b@c.test", when, "Invoice 1")


def test_no_message_id_means_no_dedupe() -> None:
    assert dedupe_key(None, "a@c.test", NOW, "x") == ""
    assert dedupe_key("  ", "a@c.test", NOW, "x") == ""
