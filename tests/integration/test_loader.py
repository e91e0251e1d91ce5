"""postroom.store.loader: the demo file loads, reloads idempotently, and keeps run-time state."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from pytest_django.fixtures import Settings

from postroom.config import Config, load_config
from postroom.store import loader
from postroom.store.loader import apply_config
from postroom.store.models import Agent, Mailbox

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Settings) -> None:
    # The default PBKDF2 costs ~0.3 s per agent; these tests are about rows, not hashes.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def demo() -> Config:
    return load_config(DEMO, environ={})


def edited_demo(tmp_path: Path, old: str, new: str) -> Config:
    text = DEMO.read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "demo.toml"
    path.write_text(text.replace(old, new))
    return load_config(path, environ={})


def test_loading_the_demo_creates_every_mailbox_agent_and_login() -> None:
    report = apply_config(demo(), now=NOW)

    assert report.counts()["mailboxes"] == {
        "created": 4,
        "updated": 0,
        "unchanged": 0,
        "not_in_file": 0,
    }
    assert report.counts()["agents"]["created"] == 5
    assert report.counts()["users"]["created"] == 5
    assert report.warnings == []

    kinds = dict(Mailbox.objects.values_list("address", "kind"))
    assert kinds == {
        "support@example.test": Mailbox.INCOMING,
        "sales@example.test": Mailbox.INCOMING,
        "outbound@example.test": Mailbox.OUTBOUND,
        "dead@example.test": Mailbox.DEAD,
    }
    support = Mailbox.objects.get(address="support@example.test")
    assert support.display_name == "Example Support"
    assert support.login == "support@example.test"
    assert support.folder == "INBOX"
    assert support.auto_response is True
    assert support.auto_response_subject == "Your message to {box} [{reference}]"
    assert support.auto_response_customer_text is False
    assert "Your reference is {reference}." in support.auto_response_text
    assert support.no_reply_seconds == 3600
    assert support.skills == ["support"] and support.default_priority == 0
    assert (support.uidvalidity, support.last_uid) == (None, 0)
    outbound = Mailbox.objects.get(address="outbound@example.test")
    assert outbound.auto_response is False and outbound.skills == []

    agents = {a.address: a for a in Agent.objects.select_related("user")}
    assert sorted(agents) == [f"{n}@example.test" for n in ("alice", "bob", "chloe", "dan", "sam")]
    bob = agents["bob@example.test"]
    assert (bob.name, bob.skills, bob.auto_answer, bob.is_supervisor, bob.capacity) == (
        "Bob",
        ["support", "sales"],
        True,
        False,
        1,
    )
    assert agents["dan@example.test"].auto_answer is False
    assert agents["sam@example.test"].is_supervisor is True
    assert all(a.ready is False and a.state_changed_at == NOW for a in agents.values())
    assert bob.user is not None and bob.user.username == "bob@example.test"
    # The file gives Bob a mailbox password and no web password: no web login yet.
    assert not bob.user.has_usable_password()


def test_loading_twice_changes_nothing_the_second_time() -> None:
    apply_config(demo(), now=NOW)
    stamps = dict(Mailbox.objects.values_list("address", "updated_at"))

    report = apply_config(demo(), now=NOW)

    assert not report.changed
    assert report.counts() == {
        "mailboxes": {"created": 0, "updated": 0, "unchanged": 4, "not_in_file": 0},
        "agents": {"created": 0, "updated": 0, "unchanged": 5, "not_in_file": 0},
        "users": {"created": 0, "updated": 0, "unchanged": 5, "not_in_file": 0},
    }
    # The engine re-reads a box when updated_at moves; a no-op load must not move it.
    assert dict(Mailbox.objects.values_list("address", "updated_at")) == stamps
    assert get_user_model().objects.count() == 5


def test_an_edited_file_updates_only_what_changed(tmp_path: Path) -> None:
    apply_config(demo(), now=NOW)
    config = edited_demo(
        tmp_path,
        'address = "chloe@example.test"\nskills = ["sales"]',
        'address = "chloe@example.test"\nskills = ["sales", "support"]',
    )

    report = apply_config(config, now=NOW)

    assert report.agents.updated == {"chloe@example.test": ["skills"]}
    assert not report.mailboxes.changed and not report.users.changed
    assert Agent.objects.get(address="chloe@example.test").skills == ["sales", "support"]
    assert "updated chloe@example.test: skills" in report.summary()


def test_reloading_keeps_the_ingest_cursor_and_the_agents_state(tmp_path: Path) -> None:
    apply_config(demo(), now=NOW)
    Mailbox.objects.filter(address="support@example.test").update(uidvalidity=1700, last_uid=42)
    Agent.objects.filter(address="alice@example.test").update(ready=True, routed_count=7)
    text = DEMO.read_text()
    text = text.replace('name = "Example Support"', 'name = "Example Help"')
    text = text.replace(
        'address = "alice@example.test"\nskills = ["support"]',
        'address = "alice@example.test"\nskills = ["support", "sales"]',
    )
    path = tmp_path / "demo.toml"
    path.write_text(text)

    report = apply_config(load_config(path, environ={}), now=datetime(2027, 1, 1, tzinfo=UTC))

    assert report.mailboxes.updated == {"support@example.test": ["display_name"]}
    assert report.agents.updated == {"alice@example.test": ["skills"]}
    support = Mailbox.objects.get(address="support@example.test")
    assert support.display_name == "Example Help"
    assert (support.uidvalidity, support.last_uid) == (1700, 42)
    alice = Agent.objects.get(address="alice@example.test")
    assert alice.skills == ["support", "sales"]
    assert (alice.ready, alice.routed_count, alice.state_changed_at) == (True, 7, NOW)


def test_a_password_changed_after_the_first_load_is_kept() -> None:
    apply_config(demo(), now=NOW)
    user = get_user_model().objects.get(username="alice@example.test")
    user.set_password("chosen-by-alice")
    user.save()

    report = apply_config(demo(), now=NOW)

    assert not report.changed
    user.refresh_from_db()
    assert user.check_password("chosen-by-alice")


def test_an_agent_without_password_gets_an_unusable_login(tmp_path: Path) -> None:
    config = edited_demo(tmp_path, 'password = "dan-pw"\n', "")

    apply_config(config, now=NOW)

    dan = Agent.objects.select_related("user").get(address="dan@example.test")
    assert dan.user is not None and not dan.user.has_usable_password()


def test_rows_missing_from_the_file_are_reported_and_left_alone() -> None:
    Mailbox.objects.create(address="legacy@example.test", login="legacy@example.test")
    Agent.objects.create(name="Eve", address="eve@example.test", skills=["support"])

    report = apply_config(demo(), now=NOW)

    assert report.mailboxes.not_in_file == ["legacy@example.test"]
    assert report.agents.not_in_file == ["eve@example.test"]
    assert Mailbox.objects.filter(address="legacy@example.test").exists()
    assert Agent.objects.get(address="eve@example.test").skills == ["support"]
    assert "not in the file, left alone: eve@example.test" in report.summary()


def test_an_existing_user_is_linked_not_duplicated() -> None:
    User = get_user_model()
    existing = User.objects.create_user("sam@example.test", password="admin-made")

    report = apply_config(demo(), now=NOW)

    assert report.users.updated == {"sam@example.test": ["agent"]}
    sam = Agent.objects.get(address="sam@example.test")
    assert sam.user_id == existing.pk
    existing.refresh_from_db()
    assert existing.check_password("admin-made")
    assert User.objects.filter(username="sam@example.test").count() == 1


def test_a_row_differing_only_in_case_is_matched_and_normalised() -> None:
    Mailbox.objects.create(
        kind=Mailbox.INCOMING, address="Support@Example.TEST", login="support@example.test", last_uid=9
    )

    report = apply_config(demo(), now=NOW)

    assert "address" in report.mailboxes.updated["support@example.test"]
    support = Mailbox.objects.get(address="support@example.test")
    assert support.login == "support@example.test" and support.last_uid == 9
    assert Mailbox.objects.count() == 4


def test_a_new_folder_or_login_starts_the_cursor_over() -> None:
    apply_config(demo(), now=NOW)
    Mailbox.objects.filter(address="support@example.test").update(uidvalidity=7, last_uid=9, folder="Old")

    apply_config(demo(), now=NOW)

    support = Mailbox.objects.get(address="support@example.test")
    assert (support.folder, support.uidvalidity, support.last_uid) == ("INBOX", None, 0)


def test_a_failure_half_way_leaves_the_database_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(loader, "_ensure_user", broken)
    with pytest.raises(RuntimeError):
        apply_config(demo(), now=NOW)
    assert not Mailbox.objects.exists() and not Agent.objects.exists()


# --- issue 8: no mailbox secret in the database, never a web login -----------------------


def test_no_mailbox_password_reaches_the_database(tmp_path: Path) -> None:
    """#2: mailbox passwords were stored in plaintext and became the agents' web logins."""
    from django.core import serializers

    from postroom.store import models

    config = demo()
    apply_config(config, now=NOW)

    secrets = set(config.mail_passwords().values())
    assert "support-pw" in secrets and "bob-pw" in secrets
    dumped = serializers.serialize(
        "json",
        [*models.Mailbox.objects.all(), *models.Agent.objects.all(), *get_user_model().objects.all()],
    )
    assert not [s for s in secrets if s in dumped]
    for agent in Agent.objects.select_related("user"):
        password = config.agent(agent.address).password
        assert password is None or not agent.user.check_password(password), agent.address


def test_a_web_password_from_the_file_is_the_web_login(tmp_path: Path) -> None:
    secret = tmp_path / "bob-web"
    secret.write_text("a web password for bob\n")
    config = edited_demo(
        tmp_path,
        'password = "bob-pw"\n',
        f'password = "bob-pw"\nweb_password_file = "{secret}"\n',
    )

    apply_config(config, now=NOW)

    bob = Agent.objects.select_related("user").get(address="bob@example.test")
    assert bob.user.check_password("a web password for bob")
    assert not bob.user.check_password("bob-pw")
    assert bob.mailbox_login == "bob@example.test"  # withdrawals work, from the file's password
