"""Rules, contacts and wrap-up codes in the database: loading, lookup, and `rules test`."""

from __future__ import annotations

import json
import smtplib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings

from postroom import rules_cli
from postroom.config import Config, load_config
from postroom.rules_cli import run_rules_test
from postroom.store.admin import RuleForm, rule_summary
from postroom.store.contacts import candidates, lookup
from postroom.store.loader import ALL_KINDS, apply_config
from postroom.store.models import (
    Agent,
    Contact,
    Interaction,
    JournalEvent,
    Mailbox,
    Outgoing,
    Rule,
    WrapUpCode,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.toml"
SAMPLES = ROOT / "postroom_sim" / "samples"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def demo() -> Config:
    return load_config(DEMO, environ={})


def edited_demo(tmp_path: Path, *edits: tuple[str, str]) -> Config:
    text = DEMO.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return load_config(path, environ={})


# -- loading --------------------------------------------------------------------------------


def test_loading_the_demo_creates_rules_contacts_codes_and_supervision() -> None:
    report = apply_config(demo(), now=NOW)

    counts = report.counts(ALL_KINDS)
    assert counts["rules"] == {"created": 3, "updated": 0, "unchanged": 0, "not_in_file": 0}
    assert counts["contacts"]["created"] == 2 and counts["wrapup_codes"]["created"] == 5
    rules = list(Rule.objects.all())
    assert [(r.position, r.name) for r in rules] == [
        (10, "Refunds need approval"),
        (20, "Sales words"),
        (30, "Spam"),
    ]
    refunds, sales, spam = rules
    assert refunds.conditions == [{"field": "subject", "op": "contains", "value": "refund"}]
    assert refunds.actions == [
        {"action": "require_approval", "value": True},
        {"action": "add_priority", "value": 5},
    ]
    assert (refunds.match, refunds.enabled, refunds.continue_after) == ("all", True, False)
    assert sales.conditions[0]["value"] == r"\b(quote|pricing|invoice)\b" and sales.continue_after
    assert spam.actions == [{"action": "delete", "value": "spam"}]
    vip = Contact.objects.get(domain="vip.customer.test")
    assert (vip.address, vip.level, vip.priority, vip.requires_approval) == (None, "vip", 50, False)
    erin = Contact.objects.get(address="erin@customer.test")
    assert (erin.domain, erin.level, erin.priority) == (None, "gold", 20)
    assert list(WrapUpCode.objects.order_by("id").values_list("code", "label")) == [
        ("resolved", "Resolved"),
        ("no_action_needed", "No action needed"),
        ("spam", "Spam"),
        ("duplicate", "Duplicate"),
        ("escalated_by_phone", "Escalated by phone"),
    ]
    dan = Agent.objects.get(address="dan@example.test")
    assert dan.probationary and not dan.notify_offers
    assert list(dan.supervisors.values_list("address", flat=True)) == ["sam@example.test"]
    # Created with the agent, so reported once as created, not also as updated.
    assert "dan@example.test" in report.agents.created and report.agents.updated == {}
    support = Mailbox.objects.get(address="support@example.test")
    assert support.no_reply_bands == [] and support.trash_folder == "Trash"
    assert "rules: 3 created" in report.summary()


def test_loading_twice_changes_nothing_the_second_time() -> None:
    apply_config(demo(), now=NOW)
    stamps = dict(Rule.objects.values_list("name", "updated_at"))

    report = apply_config(demo(), now=NOW)

    assert not report.changed
    counts = report.counts(ALL_KINDS)
    assert counts["rules"] == {"created": 0, "updated": 0, "unchanged": 3, "not_in_file": 0}
    assert counts["contacts"] == {"created": 0, "updated": 0, "unchanged": 2, "not_in_file": 0}
    assert counts["wrapup_codes"] == {"created": 0, "updated": 0, "unchanged": 5, "not_in_file": 0}
    assert counts["agents"]["unchanged"] == 5
    assert dict(Rule.objects.values_list("name", "updated_at")) == stamps
    assert (Rule.objects.count(), Contact.objects.count(), WrapUpCode.objects.count()) == (3, 2, 5)


def test_an_edited_file_updates_what_changed_and_leaves_admin_rows_alone(tmp_path: Path) -> None:
    apply_config(demo(), now=NOW)
    Rule.objects.create(name="Made in the admin", position=15, conditions=[], actions=[])
    Contact.objects.create(domain="other.test", level="gold", notes="kept")
    WrapUpCode.objects.create(code="callback", label="Call back")
    Contact.objects.filter(domain="vip.customer.test").update(notes="admin notes")
    config = edited_demo(
        tmp_path,
        ('value = "WIN A PRIZE"', 'value = "YOU HAVE WON"'),
        ('level = "vip"\npriority = 50', 'level = "vip"\npriority = 60'),
        ('supervisors = ["sam@example.test"]\n', ""),
        (
            'skills = ["sales"]\nauto_answer = true\npassword = "chloe-pw"',
            'skills = { sales = 2 }\nauto_answer = true\npassword = "chloe-pw"',
        ),
    )

    report = apply_config(config, now=NOW)

    assert report.rules.updated == {"Spam": ["conditions"]}
    assert report.rules.not_in_file == ["Made in the admin"]
    assert report.contacts.updated == {"vip.customer.test": ["priority"]}
    assert report.contacts.not_in_file == ["other.test"]
    assert report.wrapup_codes.not_in_file == ["callback"]
    assert report.agents.updated == {
        "chloe@example.test": ["skills"],
        "dan@example.test": ["supervisors"],
    }
    assert Rule.objects.get(name="Spam").conditions[0]["value"] == "YOU HAVE WON"
    assert Rule.objects.filter(name="Made in the admin").exists()
    vip = Contact.objects.get(domain="vip.customer.test")
    assert vip.priority == 60 and vip.notes == "admin notes"
    assert Agent.objects.get(address="chloe@example.test").skills == {"sales": 2}
    assert not Agent.objects.get(address="dan@example.test").supervisors.exists()
    summary = report.summary()
    assert "updated Spam: conditions" in summary
    assert "not in the file, left alone: Made in the admin" in summary


def test_rule_order_follows_the_file(tmp_path: Path) -> None:
    apply_config(demo(), now=NOW)
    text = DEMO.read_text()
    start = text.index('[[rules]]\nname = "Spam"')
    end = text.index("# -- Wrap-up codes")
    spam = text[start:end]
    text = text[:start] + text[end:]
    text = text.replace(
        '[[rules]]\nname = "Refunds need approval"',
        spam + '[[rules]]\nname = "Refunds need approval"',
    )
    path = tmp_path / "demo.toml"
    path.write_text(text)

    report = apply_config(load_config(path, environ={}), now=NOW)

    assert list(Rule.objects.values_list("name", flat=True)) == [
        "Spam",
        "Refunds need approval",
        "Sales words",
    ]
    assert set(report.rules.updated) == {"Spam", "Refunds need approval", "Sales words"}


def test_box_bands_and_trash_folder_are_stored(tmp_path: Path) -> None:
    config = edited_demo(
        tmp_path,
        (
            'skills = ["sales"]\nno_reply_time = "1h"',
            'skills = ["sales"]\nno_reply_time = "1h"\nno_reply_bands = [[50, "10m"], [20, "30m"]]\n'
            'trash_folder = "Deleted Items"',
        ),
    )
    apply_config(config, now=NOW)
    sales = Mailbox.objects.get(address="sales@example.test")
    assert sales.no_reply_bands == [[20, 1800], [50, 600]]
    assert sales.trash_folder == "Deleted Items"
    assert not apply_config(config, now=NOW).changed


# -- contact lookup -------------------------------------------------------------------------


@pytest.fixture
def contacts() -> None:
    Contact.objects.create(address="erin@customer.test", level="gold", priority=20)
    Contact.objects.create(domain="customer.test", level="standard", priority=1)
    Contact.objects.create(domain="vip.customer.test", level="vip", priority=50)
    Contact.objects.create(domain="Example.COM", level="partner", priority=5)


@pytest.mark.usefixtures("contacts")
@pytest.mark.parametrize(
    ("address", "level"),
    [
        ("erin@customer.test", "gold"),  # exact address beats its domain
        ("ERIN@Customer.Test", "gold"),
        ("frank@customer.test", "standard"),  # by domain
        ("ann@vip.customer.test", "vip"),  # the most specific domain wins
        ("bob@eu.sales.vip.customer.test", "vip"),  # parent domains, nearest first
        ("x@mail.customer.test", "standard"),
        ("z@a.b.example.com", "partner"),  # a domain typed in another case
        ("someone@elsewhere.test", None),
        ("customer.test", None),  # not an address
        ("", None),
        (None, None),
    ],
)
def test_lookup_by_address_domain_and_parent_domains(
    address: str | None, level: str | None
) -> None:
    found = lookup(address)
    assert (found.level if found else None) == level


def test_candidates_never_include_a_bare_top_level_domain() -> None:
    assert candidates("Ann@A.B.Example.com") == (
        "ann@a.b.example.com",
        ["a.b.example.com", "b.example.com", "example.com"],
    )
    assert candidates("root@localhost") == ("root@localhost", ["localhost"])
    assert candidates("nobody") == (None, [])


# -- rules test -----------------------------------------------------------------------------


@pytest.fixture
def nothing_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("rules test must not open an SMTP connection")

    monkeypatch.setattr(smtplib, "SMTP", refuse)
    monkeypatch.setattr(smtplib, "SMTP_SSL", refuse)


def assert_nothing_stored() -> None:
    assert not Interaction.objects.exists()
    assert not Outgoing.objects.exists()
    assert not JournalEvent.objects.exists()


@pytest.mark.usefixtures("nothing_leaves")
def test_rules_test_reports_the_trace_and_the_result_and_sends_nothing() -> None:
    apply_config(demo(), now=NOW)

    report = run_rules_test(SAMPLES / "02-invoice-question.eml")

    print(report)
    assert "Message: 02-invoice-question.eml" in report
    assert "Box: support@example.test (from the mail's recipients" in report
    assert '[miss] Refunds need approval: subject contains "refund" did not match' in report
    assert "[hit ] Sales words: body regex" in report
    # Sales words continues, so Spam is still looked at.
    assert '[miss] Spam: subject contains "WIN A PRIZE" did not match' in report
    assert 'queue:          sales (rule "Sales words")' in report
    assert "priority:       0" in report
    assert "approval:       not required" in report
    assert "delete:         no" in report
    assert "Nothing was sent or stored" in report
    assert_nothing_stored()


@pytest.mark.usefixtures("nothing_leaves")
def test_rules_test_shows_priority_reasons_contact_and_approval(tmp_path: Path) -> None:
    apply_config(demo(), now=NOW)
    Contact.objects.create(domain="customer.test", level="vip", priority=50, name="Big Co")
    Rule.objects.filter(name="Refunds need approval").update(enabled=False)
    raw = (SAMPLES / "09-vip-complaint.eml").read_bytes()
    message = tmp_path / "refund.eml"
    message.write_bytes(raw.replace(b"Subject: FINAL WARNING", b"Subject: Refund or FINAL WARNING"))

    report = run_rules_test(message, box_address="Sales@Example.test")

    print(report)
    assert "Box: sales@example.test (as given" in report
    assert "Contact: Big Co, level vip, priority +50 (by domain customer.test)" in report
    assert "[skip] Refunds need approval: disabled" in report
    assert "queue:          sales (the box's skills; no rule names a queue)" in report
    assert "priority:       60" in report
    assert "+50  contact vip" in report and "+10  marked important" in report
    assert "approval:       required: customer level vip" in report
    assert_nothing_stored()


@pytest.mark.usefixtures("nothing_leaves")
def test_rules_test_with_a_stopping_rule_and_a_broken_row(tmp_path: Path) -> None:
    apply_config(demo(), now=NOW)
    Rule.objects.create(
        name="Broken by hand",
        position=5,
        conditions=[{"field": "subject", "op": "like", "value": "x"}],
        actions=[],
    )
    message = tmp_path / "spam.eml"
    message.write_bytes(
        b"From: w@spam.test\r\nTo: support@example.test\r\nSubject: WIN A PRIZE now\r\n"
        b"Message-ID: <s1@spam.test>\r\n\r\nclick for pricing\r\n"
    )

    report = run_rules_test(message)

    print(report)
    assert "[bad ] Broken by hand: invalid, never run: conditions[0].op" in report
    assert "[hit ] Sales words" in report and "[hit ] Spam" in report
    assert 'delete:         yes: "spam" (rule "Spam")' in report
    assert_nothing_stored()


def test_rules_test_without_rules_box_or_readable_file(tmp_path: Path) -> None:
    report = run_rules_test(SAMPLES / "01-order-not-arrived.eml")
    assert "Rules: none in the database." in report
    assert "none of the recipients is an incoming box" in report
    assert "queue:          unassigned" in report
    assert run_rules_test(tmp_path / "missing.eml").startswith("cannot read")
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b"\x00\x01 not mail")
    assert "not a readable mail" in run_rules_test(junk)


def test_main_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    apply_config(demo(), now=NOW)
    code = rules_cli.main(["test", str(SAMPLES / "08-sales-enquiry.eml"), "--config", str(DEMO)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Box: sales@example.test" in out and "Sales words" in out
    assert rules_cli.main(["test", "/nonexistent.eml"]) == 2


# -- admin ----------------------------------------------------------------------------------


def _form_data(**kw: object) -> dict[str, object]:
    data: dict[str, object] = {
        "position": 10,
        "name": "Refunds",
        "enabled": "on",
        "match": "all",
        "conditions": json.dumps([{"field": "subject", "op": "contains", "value": "refund"}]),
        "actions": json.dumps([{"action": "add_priority", "value": 5}]),
    }
    data.update(kw)
    return data


def test_the_admin_rule_form_validates_with_core_rules() -> None:
    form = RuleForm(data=_form_data())
    assert form.is_valid(), form.errors
    rule = form.save()
    assert rule_summary(rule) == 'if subject contains "refund" → add_priority 5'

    bad = RuleForm(
        data=_form_data(
            conditions=json.dumps([{"field": "subject", "op": "regex", "value": "(a+)+"}]),
            actions=json.dumps(
                [{"action": "queue", "value": "a"}, {"action": "queue", "value": "b"}]
            ),
        )
    )
    assert not bad.is_valid()
    assert bad.errors["conditions"][0].startswith("conditions[0].value: nested repetition")
    assert bad.errors["actions"] == ["actions[1].action: queue is given twice in one rule"]
    assert not RuleForm(data=_form_data(conditions='{"field": "to"}')).is_valid()


def test_rule_summary_reads_like_a_sentence() -> None:
    rule = Rule(
        name="x",
        match=Rule.ANY,
        conditions=[
            {"field": "from_domain", "op": "equals", "value": "vip.test"},
            {"field": "subject", "op": "not_contains", "value": "newsletter"},
        ],
        actions=[
            {"action": "queue", "value": "vip"},
            {"action": "require_approval", "value": True},
        ],
        continue_after=True,
    )
    assert rule_summary(rule) == (
        'if from_domain equals "vip.test" or subject not contains "newsletter" '
        '→ queue "vip", require_approval true (continue)'
    )
    assert rule_summary(Rule(name="y")) == "always → nothing (the check ends here)"
