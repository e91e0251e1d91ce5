"""OAuth2 mailboxes (field bug B-10): the token lifecycle's pure decisions
(postroom.core.oauth2) and the configuration of providers and boxes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postroom.config import load_config, mail_users
from postroom.core.oauth2 import (
    Answer,
    classify,
    expiry_warning_due,
    refresh_due,
    refresh_expiry,
    usable,
)
from tests.unit.test_config import base, errors_of, write

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


# -- when to refresh ------------------------------------------------------------------------


def test_a_token_never_issued_is_due_at_once() -> None:
    assert refresh_due(None, None, T0)


def test_an_hour_token_is_renewed_five_minutes_before_it_expires_not_on_failure() -> None:
    expires = T0 + HOUR
    assert not refresh_due(T0, expires, T0)
    assert not refresh_due(T0, expires, expires - timedelta(minutes=5, seconds=1))
    assert refresh_due(T0, expires, expires - timedelta(minutes=5))
    assert refresh_due(T0, expires, expires + timedelta(seconds=1))


def test_a_short_token_is_renewed_at_three_quarters_of_its_life() -> None:
    expires = T0 + timedelta(seconds=40)
    assert not refresh_due(T0, expires, T0 + timedelta(seconds=29))
    assert refresh_due(T0, expires, T0 + timedelta(seconds=30))


def test_a_token_is_usable_until_its_expiry_only() -> None:
    assert usable(T0 + HOUR, T0)
    assert not usable(T0 + HOUR, T0 + HOUR)
    assert not usable(None, T0)


# -- what an answer means -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "has_token", "answer"),
    [
        (200, None, True, Answer.OK),
        (200, None, False, Answer.RETRY),  # a 200 without a token is a broken answer
        (None, None, False, Answer.RETRY),  # no answer at all: network, timeout, DNS
        (500, None, False, Answer.RETRY),
        (502, None, False, Answer.RETRY),
        (503, "temporarily_unavailable", False, Answer.RETRY),
        (429, None, False, Answer.RETRY),
        (408, None, False, Answer.RETRY),
        (400, "invalid_grant", False, Answer.GRANT_INVALID),
        (401, "invalid_grant", False, Answer.GRANT_INVALID),
        (401, "invalid_client", False, Answer.REFUSED),
        (400, "invalid_scope", False, Answer.REFUSED),
        (400, "unauthorized_client", False, Answer.REFUSED),
        (403, None, False, Answer.REFUSED),
    ],
)
def test_an_answer_is_told_apart(status: int | None, error: str | None, has_token: bool, answer: Answer) -> None:
    assert classify(status, error, has_access_token=has_token) is answer


# -- refresh-token expiry -------------------------------------------------------------------


def test_the_idps_word_on_refresh_token_expiry_wins() -> None:
    assert refresh_expiry(T0, 3600, timedelta(days=7), None, True) == T0 + HOUR


def test_a_rotated_refresh_token_starts_the_configured_lifetime_again() -> None:
    before = T0 - timedelta(days=3)
    assert refresh_expiry(T0, None, timedelta(days=7), before, True) == T0 + timedelta(days=7)


def test_a_refresh_token_kept_keeps_its_expiry() -> None:
    before = T0 + timedelta(days=4)
    assert refresh_expiry(T0, None, timedelta(days=7), before, False) == before


def test_unknown_expiry_stays_unknown() -> None:
    assert refresh_expiry(T0, None, None, None, True) is None


def test_the_warning_comes_warn_before_the_expiry() -> None:
    ends = T0 + timedelta(days=7)
    assert not expiry_warning_due(ends, T0, timedelta(days=3))
    assert not expiry_warning_due(ends, ends - timedelta(days=3, seconds=1), timedelta(days=3))
    assert expiry_warning_due(ends, ends - timedelta(days=3), timedelta(days=3))
    assert not expiry_warning_due(None, T0, timedelta(days=3))


# -- configuration --------------------------------------------------------------------------

M365 = {"name": "m365", "preset": "microsoft", "tenant": "example.com", "client_id": "abc"}


def on_oauth2(**box: object) -> dict:
    doc = base()
    doc["oauth2"] = [M365]
    doc["incoming"][1] = {"address": "sales@example.test", "oauth2": "m365", "skills": ["sales"], **box}
    return doc


def test_a_box_on_oauth2_needs_no_password_and_gets_the_preset(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, on_oauth2(refresh_token_env="RT")), environ={"RT": "first"})
    provider, first = config.oauth2_logins()["sales@example.test"]
    assert first == "first"
    assert provider.token_url == "https://login.microsoftonline.com/example.com/oauth2/v2.0/token"
    assert "offline_access" in provider.scopes
    assert "sales@example.test" not in config.mail_passwords()
    # The dev stack still creates the user (its userdb needs it), with a password nobody
    # is told; the same at every start.
    users = dict(mail_users(config))
    assert users["sales@example.test"].startswith("oauth2-only-")
    assert users == dict(mail_users(load_config(write(tmp_path, on_oauth2()), environ={})))


def test_the_relay_account_follows_the_outbound_box_onto_oauth2(tmp_path: Path) -> None:
    doc = base()
    doc["oauth2"] = [M365]
    doc["outbound"] = {"address": "out@example.test", "oauth2": "m365"}
    config = load_config(write(tmp_path, doc), environ={})
    assert config.server.smtp_oauth2 == "m365"
    assert set(config.oauth2_logins()) == {"out@example.test"}


def test_an_unknown_provider_is_named(tmp_path: Path) -> None:
    doc = on_oauth2()
    doc["incoming"][1]["oauth2"] = "google"
    found = errors_of(tmp_path, doc)
    assert [e.path for e in found] == ["incoming[1].oauth2"]
    assert "no [[oauth2]] provider is named" in found[0].message


@pytest.mark.parametrize(
    ("box", "where", "says"),
    [
        ({"oauth2": None}, "incoming[1].password", "required"),
        ({"password": "pw"}, "incoming[1].password", "not both"),
    ],
)
def test_a_box_logs_in_one_way(tmp_path: Path, box: dict, where: str, says: str) -> None:
    doc = on_oauth2()
    doc["incoming"][1].update(box)
    doc["incoming"][1] = {k: v for k, v in doc["incoming"][1].items() if v is not None}
    found = errors_of(tmp_path, doc)
    assert [e.path for e in found] == [where] and says in found[0].message


def test_a_custom_provider_needs_its_urls_and_https(tmp_path: Path) -> None:
    doc = on_oauth2()
    doc["oauth2"] = [{"name": "m365", "client_id": "x", "scopes": ["mail"],
                      "authorize_url": "http://idp.example.com/a"}]
    found = {e.path: e.message for e in errors_of(tmp_path, doc)}
    assert set(found) == {"oauth2[0].authorize_url", "oauth2[0].token_url"}
    assert "https://" in found["oauth2[0].authorize_url"]
    doc["oauth2"][0].update(authorize_url="http://127.0.0.1:9/a", token_url="http://127.0.0.1:9/t")
    assert errors_of(tmp_path, doc) == []
