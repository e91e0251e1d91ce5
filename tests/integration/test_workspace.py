"""The workspace on the database: box rights, the journal's search and pages, transcripts,
evaluations, reports and their downloads, and the web reply path. SQLite here, PostgreSQL
in make test's second pass (the full-text index differs; the answers must not)."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import timedelta
from email.message import EmailMessage

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from postroom.core import figures, paging
from postroom.core.lifecycle import State
from postroom.store import evaluations, search
from postroom.store.commands import CommandError
from postroom.store.finder import JournalQuery, find, history
from postroom.store.models import (
    Agent,
    AgentGroup,
    Approval,
    Evaluation,
    EvaluationCriterion,
    Interaction,
    JournalEvent,
    Mailbox,
    OutboundMessage,
    Outgoing,
)
from postroom.store.permissions import may_handle, may_see, principal, visible_interactions
from postroom.store.reports import ReportQuery, build
from postroom.store.webreply import accept_web_reply

pytestmark = pytest.mark.django_db

_uid = itertools.count(1)
NOW = timezone.now().replace(microsecond=0)


def box(address: str, **kw) -> Mailbox:
    return Mailbox.objects.create(address=address, login=address, **kw)


def agent(address: str, **kw) -> Agent:
    user = get_user_model().objects.create_user(address.split("@")[0])
    return Agent.objects.create(name=address.split("@")[0].title(), address=address, user=user, **kw)


def ix(mailbox: Mailbox, **kw) -> Interaction:
    uid = next(_uid)
    fields = {
        "node_id": "n", "uidvalidity": 1, "uid": uid, "message_id": f"<m{uid}@customer.test>",
        "to_addr": mailbox.address, "customer": f"c{uid}@customer.test", "subject": f"Question {uid}",
        "arrival_time": NOW - timedelta(hours=1),
    }
    fields.update(kw)
    return Interaction.objects.create(mailbox=mailbox, **fields)


def event(interaction: Interaction, kind: str, at, **kw) -> None:
    JournalEvent.objects.create(
        at=at, kind=kind, interaction=interaction, mailbox=interaction.mailbox,
        agent=kw.pop("agent", interaction.agent), detail=kw,
    )


@pytest.fixture
def site():
    support, sales = box("support@example.test"), box("sales@example.test")
    Mailbox.objects.create(address="outbound@example.test", login="o", kind=Mailbox.OUTBOUND)
    sue = agent("sue@example.test", is_supervisor=True)
    alice, bob, rita = agent("alice@example.test"), agent("bob@example.test"), agent("rita@example.test")
    for a in (alice, bob):
        a.supervisors.add(sue)
    team = AgentGroup.objects.create(name="Support team")
    team.members.add(rita)
    team.boxes.add(support)
    return {"support": support, "sales": sales, "sue": sue, "alice": alice, "bob": bob, "rita": rita}


# -- who sees what ---------------------------------------------------------------------------


def test_box_rights_open_a_box_to_its_readers_and_never_close_what_an_agent_holds(site):
    mine = ix(site["sales"], agent=site["alice"], status=State.DELIVERED.value)
    support_queue = ix(site["support"])
    support_bobs = ix(site["support"], agent=site["bob"], status=State.DELIVERED.value)
    sales_queue = ix(site["sales"])
    rita, alice = principal(site["rita"].user), principal(site["alice"].user)

    assert set(visible_interactions(rita, Interaction.objects.all())) == {support_queue, support_bobs}
    assert may_see(rita, support_bobs) and not may_handle(rita, support_bobs)
    assert not may_see(rita, sales_queue) and not may_see(rita, mine)
    # Alice has no box: what she holds, in whichever box.
    assert set(visible_interactions(alice, Interaction.objects.all())) == {mine}

    # A supervisor given no box watches every box's queue and its agents' work ...
    sue = principal(site["sue"].user)
    assert set(visible_interactions(sue, Interaction.objects.all())) == {
        mine, support_queue, support_bobs, sales_queue,
    }
    # ... and once given one, its agents' work and that box only.
    site["sue"].boxes.add(site["support"])
    sue = principal(site["sue"].user)
    assert set(visible_interactions(sue, Interaction.objects.all())) == {mine, support_queue, support_bobs}
    assert may_handle(sue, support_queue) and not may_see(sue, sales_queue)


def test_pages_refuse_an_agent_without_rights_to_the_box(site):
    sales = ix(site["sales"], subject="Secret sales deal", status=State.CLOSED.value, agent=site["bob"])
    client = Client()
    client.force_login(site["rita"].user)
    for url in (f"/interactions/{sales.guid}/", f"/interactions/{sales.guid}/transcript/",
                f"/api/interactions/{sales.guid}", f"/interactions/{sales.guid}/reply/"):
        assert client.get(url).status_code == 403, url
    for url in ("/journal/?q=secret", "/journal/", "/reports/", "/api/interactions",
                "/reports/download?table=history&format=csv"):
        response = client.get(url)
        assert response.status_code == 200 and b"Secret sales deal" not in response.content, url


# -- the journal ------------------------------------------------------------------------------


def test_full_text_finds_words_of_the_customers_mail_and_of_the_reply(site):
    parcel = ix(site["support"], subject="Where is it?", agent=site["alice"], status=State.REPLIED.value)
    search.keep_customer_text(parcel, "My parcel to Zürich never arrived, tracking 55-AB.")
    other = ix(site["support"], subject="Invoice")
    search.keep_customer_text(other, "Please send the invoice again.")
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "support@example.test", "c@customer.test", "Re: x"
    reply.set_content("We sent a replacement by courier.")
    Outgoing.objects.create(  # the signal indexes every reply, whichever path queued it
        key=f"reply:{parcel.guid}", kind=Outgoing.REPLY, interaction=parcel, envelope_from="s",
        recipients=["c"], message_id="<r@x>", raw=reply.as_bytes(), next_attempt_at=NOW,
    )
    admin = principal(get_user_model().objects.create_superuser("root", "r@x.test", None))

    def found(text: str, **kw) -> list[Interaction]:
        return find(admin, JournalQuery(text=text, **kw))[0]

    assert found("parcel") == [parcel]
    assert found("zur") == [parcel]  # diacritics folded on SQLite, prefix either way
    assert found("Zürich PARCEL") == [parcel]
    assert found("replacement courier") == [parcel]  # the reply's words
    assert found("invoice") == [other]
    assert found("parcel invoice") == []
    assert found('"); DROP TABLE x; --') == []  # no syntax reaches the engine
    assert found("parcel", state=State.REPLIED.value, agent=site["alice"].pk) == [parcel]
    assert found("parcel", box=site["sales"].pk) == []
    assert found("", customer=parcel.customer[:6]) == [parcel]


def test_keyset_pages_cover_everything_once_even_with_equal_times(site):
    same = NOW - timedelta(days=1)
    made = [ix(site["support"], arrival_time=same if n % 3 else NOW - timedelta(minutes=n)) for n in range(23)]
    admin = principal(get_user_model().objects.create_superuser("root", "r@x.test", None))
    seen, after = [], None
    pages = 0
    while True:
        rows, after = find(admin, JournalQuery(), after, limit=5)
        seen += rows
        pages += 1
        if after is None:
            break
    assert pages == 5
    assert sorted(i.pk for i in seen) == sorted(i.pk for i in made)
    assert seen == sorted(made, key=lambda i: (i.arrival_time, i.pk), reverse=True)


def test_the_journal_page_pages_with_a_cursor_and_answers_htmx_with_the_results(site):
    for n in range(55):
        ix(site["support"], subject=f"Pager {n:02d}", arrival_time=NOW - timedelta(minutes=n))
    client = Client()
    client.force_login(site["rita"].user)
    first = client.get("/journal/").content.decode()
    assert "Pager 00" in first and "Pager 49" in first and "Pager 50" not in first
    cursor = paging.encode(paging.Cursor(NOW - timedelta(minutes=49), Interaction.objects.get(subject="Pager 49").pk))
    second = client.get(f"/journal/?after={cursor}", HTTP_HX_REQUEST="true").content.decode()
    assert "Pager 50" in second and "Pager 54" in second and "Pager 49" not in second
    assert "<html" not in second  # only the results for htmx
    assert client.get("/journal/?after=garbage&since=2026-99-99&agent=x").status_code == 200


def test_history_is_the_same_customers_other_interactions_across_boxes(site):
    first = ix(site["support"], customer="ann@customer.test", arrival_time=NOW - timedelta(days=3))
    second = ix(site["sales"], customer="ann@customer.test", arrival_time=NOW - timedelta(days=2))
    now = ix(site["support"], customer="ann@customer.test")
    ix(site["support"], customer="someone@customer.test")
    admin = principal(get_user_model().objects.create_superuser("root", "r@x.test", None))
    assert history(admin, now) == [second, first]
    # Rita reads the support box only.
    assert history(principal(site["rita"].user), now) == [first]


# -- transcripts -------------------------------------------------------------------------------

HTML_MAIL = (
    "From: Ann <ann@customer.test>\r\nTo: support@example.test\r\nSubject: Broken\r\n"
    "Message-ID: <html1@customer.test>\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=out\r\n\r\n"
    "--out\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
    "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIt is broken.\r\n"
    "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<p onclick=\"x()\">It is <b>broken</b><script>alert(1)</script>"
    "<img src=\"https://tracker.example/p.gif\"></p>\r\n--alt--\r\n"
    "--out\r\nContent-Type: image/svg+xml; name=\"../../evil.svg\"\r\n"
    "Content-Disposition: attachment; filename=\"../../evil.svg\"\r\n\r\n"
    "<svg onload=\"alert(1)\"/>\r\n"
    "--out\r\nContent-Type: text/plain; name=note.txt\r\nContent-Disposition: attachment; filename=note.txt\r\n\r\n"
    "a note\r\n--out--\r\n"
)


def test_a_transcript_shows_every_message_and_event_and_html_only_in_a_locked_frame(site):
    this = ix(site["support"], agent=site["alice"], status=State.DELIVERED.value, subject="Broken")
    Outgoing.objects.create(
        key=f"forward:{this.guid}:1", kind=Outgoing.FORWARD, interaction=this, envelope_from="o",
        recipients=[site["alice"].address], message_id="<f@x>", raw=HTML_MAIL.encode(),
        next_attempt_at=NOW, state=Outgoing.SENT, sent_at=NOW,
    )
    event(this, "received", NOW - timedelta(minutes=50))
    event(this, "answered", NOW - timedelta(minutes=40), by="alice@example.test")
    client = Client()
    client.force_login(site["alice"].user)
    page = client.get(f"/interactions/{this.guid}/transcript/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "frame-src 'self'" in page["Content-Security-Policy"]
    assert "forwarded copy" in text  # no configuration here: the forward's bytes
    assert "answered" in text and "by alice@example.test" in text
    assert "<script>alert" not in text and "It is broken." in text
    assert "1 remote image blocked" in text
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in text

    frame = client.get(f"/interactions/{this.guid}/messages/customer/frame")
    body = frame.content.decode()
    assert frame["Content-Security-Policy"].startswith("default-src 'none'")
    assert "sandbox" in frame["Content-Security-Policy"]
    assert frame["X-Frame-Options"] == "SAMEORIGIN"
    assert "<b>broken</b>" in body and "script" not in body and "onclick" not in body
    assert "tracker.example" not in body
    shown = client.get(f"/interactions/{this.guid}/messages/customer/frame?images=1")
    assert "tracker.example" in shown.content.decode()
    assert "img-src data: http: https:" in shown["Content-Security-Policy"]

    svg = client.get(f"/interactions/{this.guid}/messages/customer/attachments/1")
    assert svg["Content-Type"] == "application/octet-stream"
    assert svg["Content-Disposition"].startswith('attachment; filename="evil.svg"')
    assert svg["X-Content-Type-Options"] == "nosniff"
    note = client.get(f"/interactions/{this.guid}/messages/customer/attachments/2")
    assert note["Content-Type"] == "text/plain; charset=utf-8" and note.content == b"a note"
    for bad in ("customer/attachments/3", "nonsense/frame", "out-999999/frame"):
        assert client.get(f"/interactions/{this.guid}/messages/{bad}").status_code == 404


# -- evaluation ---------------------------------------------------------------------------------


def test_a_supervisor_evaluates_a_finished_interaction_and_the_agents_report_shows_it(site):
    EvaluationCriterion.objects.create(code="accuracy", label="Accuracy", weight=3, max_score=5, position=1)
    EvaluationCriterion.objects.create(code="tone", label="Tone", weight=1, max_score=4, position=2)
    done = ix(site["support"], agent=site["alice"], status=State.CLOSED.value)
    live = ix(site["support"], agent=site["alice"], status=State.DELIVERED.value)
    with pytest.raises(CommandError) as refused:
        evaluations.record(live, by_user=site["sue"].user, scores={"accuracy": 5, "tone": 4}, now=NOW)
    assert refused.value.status == 409
    with pytest.raises(CommandError) as refused:
        evaluations.record(done, by_user=site["alice"].user, scores={"accuracy": 5, "tone": 4}, now=NOW)
    assert refused.value.status == 403

    client = Client()
    client.force_login(site["sue"].user)
    response = client.post(
        f"/interactions/{done.guid}/evaluate/",
        {"score-accuracy": "5", "score-tone": "2", "comment-tone": "a bit short", "comment": "Good"},
    )
    assert response.status_code == 302
    evaluation = Evaluation.objects.get(interaction=done)
    assert evaluation.score == 87.5 and evaluation.agent == site["alice"]
    assert evaluation.scores[1]["comment"] == "a bit short"
    assert JournalEvent.objects.filter(interaction=done, kind="evaluated").exists()
    bad = client.post(f"/interactions/{done.guid}/evaluate/", {"score-accuracy": "9"})
    assert bad.status_code == 400 and Evaluation.objects.get(interaction=done).score == 87.5

    report = build(principal(site["alice"].user), ReportQuery(since=NOW.date(), until=NOW.date()))
    rows = report.tables["evaluations"].as_dicts()
    assert {"by": "agent", "name": "alice@example.test", "evaluations": 1, "mean_score": 87.5,
            "lowest": 87.5, "highest": 87.5} in rows


# -- reports ------------------------------------------------------------------------------------


def test_report_figures_come_from_the_journal(site):
    t0 = NOW - timedelta(hours=10)
    fast = ix(site["support"], agent=site["alice"], status=State.CLOSED.value, arrival_time=t0)
    slow = ix(site["support"], agent=site["bob"], status=State.CLOSED.value, arrival_time=t0)
    waiting = ix(site["support"], arrival_time=t0)  # unanswered and past 4 h: a miss
    for one, answer_after, reply_after in ((fast, 5, 30), (slow, 60, 300)):
        event(one, "received", t0)
        event(one, "answered", t0 + timedelta(minutes=answer_after))
        event(one, "reply_accepted", t0 + timedelta(minutes=answer_after + 10))
        event(one, "reply_sent", t0 + timedelta(minutes=reply_after))
    event(waiting, "received", t0)
    event(slow, "no_reply_expired", t0 + timedelta(minutes=30), agent=site["alice"])
    event(slow, "transferred", t0 + timedelta(minutes=40))
    for one in (fast, slow):
        Outgoing.objects.create(key=f"reply:{one.guid}", kind=Outgoing.REPLY, interaction=one,
                                envelope_from="s", recipients=["c"], message_id=f"<{one.pk}@x>",
                                raw=b"Subject: x\r\n\r\nx", next_attempt_at=NOW)
    sue = principal(site["sue"].user)
    report = build(sue, ReportQuery(since=t0.date(), until=NOW.date()), now=NOW)
    boxes = {r["box"]: r for r in report.tables["boxes"].as_dicts()}
    support = boxes["support@example.test"]
    assert (support["received"], support["answered"]) == (3, 2)
    assert support["first_response_median_min"] == 165.0  # 30 and 300 minutes
    assert support["first_response_p90_min"] == 273.0
    assert support["handle_median_min"] == 10.0
    # 30 min within 4 h, 300 min not, the waiting one is past 4 h: 1 of 3
    assert support["service_level_pct"] == 33.3
    agents = {r["agent"]: r for r in report.tables["agents"].as_dicts()}
    assert agents["alice@example.test"]["first_response_median_min"] == 30.0
    assert agents["bob@example.test"]["first_response_median_min"] == 300.0
    reroutes = report.tables["reroutes"].as_dicts()
    assert {(r["agent"], r["no_reply"], r["transferred"]) for r in reroutes} == {
        ("alice@example.test", 1, 0), ("bob@example.test", 0, 1),
    }
    messages = report.tables["messages"].as_dicts()[0]
    assert (messages["interactions"], messages["messages"], messages["replies"]) == (3, 5, 2)
    assert sum(r[1] for r in report.tables["daily"].rows) == 3
    # A whole day's service time for the reader who asks: 300 min is in, the waiting one not yet past.
    wide = build(sue, ReportQuery(since=t0.date(), until=NOW.date(), within=86400), now=NOW)
    assert wide.tables["boxes"].as_dicts()[0]["service_level_pct"] == 100.0


def test_open_ages_message_counts_and_the_service_time_edge_per_box(site):
    """The report's per-box tables that are counted in SQL (open by age, messages) give the
    counts a row-by-row reading gives, at the buckets' edges too; a reply sent exactly at the
    box's service time is within it (times are read as epoch seconds, to the millisecond)."""
    admin = principal(get_user_model().objects.create_superuser("root", "r@x.test", None))
    support, sales = site["support"], site["sales"]
    ages = {  # age of an open interaction -> the bucket it belongs to
        timedelta(minutes=-1): "under 1 h",  # stamped after `now` (a clock ahead): youngest
        timedelta(minutes=30): "under 1 h",
        timedelta(hours=1): "1-4 h",  # exactly at the edge: the older bucket, as age_bucket says
        timedelta(hours=3, minutes=59): "1-4 h",
        timedelta(hours=10): "4-24 h",
        timedelta(days=2): "1-3 days",
        timedelta(days=3): "over 3 days",
        timedelta(days=40): "over 3 days",
    }
    for age in ages:
        ix(support, arrival_time=NOW - age, status=State.QUEUED.value)
    ix(sales, arrival_time=NOW - timedelta(hours=2), status=State.DELIVERED.value, agent=site["alice"])
    ix(sales, arrival_time=NOW - timedelta(days=5), status=State.CLOSED.value)  # not open
    expected = {"under 1 h": 2, "1-4 h": 2, "4-24 h": 1, "1-3 days": 1, "over 3 days": 2}
    assert {figures.age_bucket(age.total_seconds()) for age in ages} == set(expected)
    report = build(admin, ReportQuery(since=(NOW - timedelta(days=1)).date(), until=NOW.date()), now=NOW)
    opened = {r["box"]: r for r in report.tables["open"].as_dicts()}
    assert {k: v for k, v in opened["support@example.test"].items() if k in expected} == expected
    assert opened["support@example.test"]["total"] == 8
    assert opened["sales@example.test"]["1-4 h"] == 1 and opened["sales@example.test"]["total"] == 1

    # Messages: the customer's mail plus what was built for it, summed per box.
    t0 = NOW - timedelta(hours=6)
    on_time = ix(sales, agent=site["bob"], status=State.CLOSED.value, arrival_time=t0)
    event(on_time, "reply_sent", t0 + timedelta(hours=4))  # exactly the default 4 h: within
    late = ix(sales, agent=site["bob"], status=State.CLOSED.value, arrival_time=t0)
    event(late, "reply_sent", t0 + timedelta(hours=4, milliseconds=1))  # a millisecond late
    for one in (on_time, late):
        for n, kind in enumerate((Outgoing.AUTO_RESPONSE, Outgoing.FORWARD, Outgoing.REPLY)):
            Outgoing.objects.create(key=f"{kind}:{one.guid}", kind=kind, interaction=one,
                                    envelope_from="s", recipients=["c"], message_id=f"<{one.pk}.{n}@x>",
                                    raw=b"Subject: x\r\n\r\nx", next_attempt_at=NOW)
    report = build(admin, ReportQuery(since=t0.date(), until=NOW.date()), now=NOW)
    messages = {r["box"]: r for r in report.tables["messages"].as_dicts()}
    sales_row = messages["sales@example.test"]
    arrived_in_sales = 3  # the open one (2 h old), on time and late; not the closed one of 5 days ago
    assert sales_row["interactions"] == arrived_in_sales
    assert (sales_row["auto_responses"], sales_row["forwards"], sales_row["replies"]) == (2, 2, 2)
    assert sales_row["messages"] == arrived_in_sales + 6
    assert sales_row["per_interaction"] == round((arrived_in_sales + 6) / arrived_in_sales, 2)
    boxes = {r["box"]: r for r in report.tables["boxes"].as_dicts()}
    assert boxes["sales@example.test"]["first_response_median_min"] == 240.0
    # the open one (2 h old) is not yet past 4 h: on time and late count, 1 of 2
    assert boxes["sales@example.test"]["service_level_pct"] == 50.0


def test_the_daily_trend_counts_days_in_the_sites_time_zone(site):
    """An email at 23:30 in New York is that day's, though it is the next day in UTC; and
    each of the range's days has its row (zero when nothing happened)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    late = datetime(2026, 3, 7, 23, 30, tzinfo=ny)  # 04:30 UTC on March 8
    early = datetime(2026, 3, 9, 0, 30, tzinfo=ny)  # after the DST change of March 8
    for when in (late, early):
        one = ix(site["support"], arrival_time=when)
        event(one, "received", when)
    event(one, "reply_sent", early + timedelta(hours=1))
    sue = principal(site["sue"].user)
    with timezone.override(ny):
        report = build(sue, ReportQuery(since=late.date(), until=early.date()), now=early + timedelta(hours=2))
    assert report.tables["daily"].rows == [["2026-03-07", 1, 0], ["2026-03-08", 0, 0], ["2026-03-09", 1, 1]]


def _value(cell):
    """A cell as a number when it is one (CSV has text only), else as text."""
    if cell is None or cell == "":
        return ""
    try:
        return float(cell)
    except (TypeError, ValueError):
        return str(cell)


def test_every_table_downloads_as_csv_and_excel_with_the_pages_figures(site):
    from openpyxl import load_workbook

    risky = ix(site["support"], subject="=HYPERLINK(\"http://evil.test\")", agent=site["alice"])
    event(risky, "received", NOW - timedelta(minutes=5))
    client = Client()
    client.force_login(site["sue"].user)
    assert client.get("/reports/").status_code == 200
    for table in ("daily", "boxes", "agents", "reroutes", "open", "messages", "evaluations", "history"):
        as_csv = client.get(f"/reports/download?table={table}&format=csv")
        assert as_csv["Content-Type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
        book = load_workbook(io.BytesIO(client.get(f"/reports/download?table={table}&format=xlsx").content))
        sheet = [list(row) for row in book.active.iter_rows(values_only=True)]
        assert [[_value(c) for c in r] for r in rows] == [[_value(c) for c in r] for r in sheet], table
    history_rows = list(csv.reader(io.StringIO(
        client.get("/reports/download?table=history&format=csv").content.decode("utf-8-sig"))))
    assert history_rows[1][2] == "'=HYPERLINK(\"http://evil.test\")"  # never a formula


# -- replies from the web --------------------------------------------------------------------------


def _reply_message(text: str = "Here is your answer.") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.test>"
    msg["To"] = "support@example.test"
    msg["Subject"] = "Re: Question"
    msg.set_content(text)
    return msg


def test_a_web_reply_takes_the_same_path_once(site):
    this = ix(site["support"], agent=site["alice"], status=State.DELIVERED.value,
              references=["<earlier@customer.test>"])
    assert accept_web_reply(this, site["alice"], _reply_message(), now=NOW) == "queued"
    this.refresh_from_db()
    assert this.status == State.REPLYING.value
    out = Outgoing.objects.get(key=f"reply:{this.guid}")
    raw = bytes(out.raw).decode()
    assert "From: support@example.test" in raw and f"In-Reply-To: {this.message_id}" in raw
    assert "<earlier@customer.test>" in raw and out.recipients == [this.customer]
    ledger = OutboundMessage.objects.get(interaction=this)
    assert (ledger.outcome, ledger.sender, ledger.removed_at is not None) == ("accepted", "alice@example.test", True)
    assert JournalEvent.objects.filter(interaction=this, kind="reply_accepted").exists()
    with pytest.raises(CommandError) as again:
        accept_web_reply(this, site["alice"], _reply_message("twice"), now=NOW)
    assert again.value.status == 409
    assert Outgoing.objects.filter(interaction=this, kind=Outgoing.REPLY).count() == 1
    other = ix(site["support"], agent=site["bob"], status=State.DELIVERED.value)
    with pytest.raises(CommandError) as stranger:
        accept_web_reply(other, site["alice"], _reply_message(), now=NOW)
    assert stranger.value.status == 403


def test_a_probationers_web_reply_is_held_for_the_supervisor(site):
    site["alice"].probationary = True
    site["alice"].save()
    this = ix(site["support"], agent=site["alice"], status=State.ANSWERED.value)
    assert accept_web_reply(this, site["alice"], _reply_message(), now=NOW) == "held"
    this.refresh_from_db()
    assert this.status == State.AWAITING_APPROVAL.value
    approval = Approval.objects.get(interaction=this)
    assert approval.approvers == ["sue@example.test"]
    assert not Outgoing.objects.filter(interaction=this, kind=Outgoing.REPLY).exists()


def test_the_composer_answers_an_offer_and_sends_with_attachments(site):
    from django.core.files.uploadedfile import SimpleUploadedFile

    this = ix(site["support"], agent=site["alice"], status=State.ROUTED.value)
    client = Client()
    client.force_login(site["alice"].user)
    assert client.get(f"/interactions/{this.guid}/reply/").status_code == 200
    assert client.post(f"/interactions/{this.guid}/reply/", {"text": "   "}).status_code == 400
    response = client.post(
        f"/interactions/{this.guid}/reply/",
        {"text": "Dear Ann,\n\n**Good news**: it ships today.", "formatted": "on",
         "attachments": [SimpleUploadedFile("label.pdf", b"%PDF-1.4 x", "application/pdf")]},
    )
    assert response.status_code == 302 and "sent=queued" in response["Location"]
    this.refresh_from_db()
    assert this.status == State.REPLYING.value and this.answered_at is not None
    raw = bytes(Outgoing.objects.get(key=f"reply:{this.guid}").raw)
    from postroom.mail.parts import readable

    mail = readable(raw)
    assert "<strong>Good news</strong>" in mail.html and "**Good news**" in mail.text
    assert [a.filename for a in mail.attachments] == ["label.pdf"]
    # Bob holds nothing here: he may not even open it; Sue may look but not send.
    bob = Client()
    bob.force_login(site["bob"].user)
    assert bob.get(f"/interactions/{this.guid}/reply/").status_code == 403
