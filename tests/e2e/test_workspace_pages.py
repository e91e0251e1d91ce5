"""The workspace in a real Chromium against a running Postroom on the real mail stack:
answering from the web composer, box rights in the journal, the reports and by URL, a
hostile HTML mail in a transcript, reports downloaded as CSV and Excel, an evaluation in
the agent's report; axe-core on every page; screenshots in tests/artifacts/.
"""

from __future__ import annotations

import csv
import io
import os
import time
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store import commands
from postroom.store.models import (
    Agent,
    Evaluation,
    EvaluationCriterion,
    Interaction,
    JournalEvent,
    Outgoing,
)
from tests.e2e.browser import axe_violations, needs_chromium, open_page, screenshot

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.mailstack,
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]

PASSWORD = "correct horse battery staple"
ELSEWHERE = "http://127.0.0.2:9"
RIGHTS = """
[[incoming]]
address = "{sales}"
name = "Example Sales"
password = "{sales_pw}"
skills = ["sales"]

[[agents]]
name = "Stan Sales"
address = "{stranger}"
skills = ["sales"]

[[groups]]
name = "Support desk"
members = ["{bob}"]
boxes = ["{support}"]
"""


def web_passwords(center) -> None:
    for who in ("alice", "bob", "sam"):
        user = get_user_model().objects.get(username=center.address(who))
        user.set_password(PASSWORD)
        user.save()


def log_in(page, base: str, center, who: str, path: str) -> None:
    page.goto("about:blank")  # the last page stops polling before its session goes
    page.context.clear_cookies()
    page.goto(base + path)
    page.fill('input[name="username"]', center.address(who))
    page.fill('input[name="password"]', PASSWORD)
    page.click('#login-form button[type="submit"]')
    page.wait_for_url(base + path)


def no_serious_violations(page, name: str) -> None:
    screenshot(page, name)
    found = axe_violations(page)
    assert found == [], f"{name}: {found}"


def customer_mail(center, to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Carol Customer <{center.address('carol')}>"
    msg["To"] = center.address(to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("c", domain="customer.test")
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


def wait_until(page, check, timeout: float = 15.0) -> None:
    """Wait in Playwright's loop (its events are delivered only while it runs)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        page.wait_for_timeout(200)


def test_an_agent_answers_a_customer_mail_from_the_web_composer(make_center, live_server):
    center = make_center(alice_auto=False)
    web_passwords(center)
    base = live_server.url
    with open_page() as page:
        log_in(page, base, center, "alice", "/agent/")
        page.wait_for_selector("#ready-toggle")
        no_serious_violations(page, "agent-bar-not-ready")
        page.keyboard.press("r")  # the Ready shortcut
        page.wait_for_selector('#ready-state.ready')
        assert Agent.objects.get(address=center.address("alice")).ready

        original = customer_mail(center, "support", "Kettle never arrived", "Hello,\n\nmy kettle has not arrived.\n\nCarol")
        center.send(original, center.address("support"), center.address("carol"))
        center.wait_for("support", 1)
        center.engine.run_until_idle()  # received, auto-response sent, offered to Alice
        offer = page.wait_for_selector('#offered tr[data-guid]')  # the open page shows it
        assert "Kettle never arrived" in offer.inner_text()
        no_serious_violations(page, "agent-bar-offer")

        page.click('#offered a[data-action="reply"]')
        page.wait_for_selector("#reply-form")
        assert "my kettle has not arrived" in page.locator("#original").inner_text()
        assert "> my kettle has not arrived." in page.locator("#reply-text").input_value()
        no_serious_violations(page, "composer")
        page.fill("#reply-text", "Dear Carol,\n\n**Good news**: a new kettle left today.\n\n"
                  + page.locator("#reply-text").input_value())
        page.check('input[name="formatted"]')
        page.set_input_files('input[name="attachments"]', files=[
            {"name": "label.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 shipping label"}
        ])
        page.click("#send-reply")
        page.wait_for_selector("#reply-sent")
        screenshot(page, "composer-sent")

        center.engine.run_until_idle()  # the outbox sends it
        mails = center.wait_for("carol", 2)
        replies = [m for m in mails if m["Auto-Submitted"] is None]
        assert len(replies) == 1, [m["Subject"] for m in mails]
        reply = replies[0]
        assert reply["From"].addresses[0].addr_spec == center.address("support")
        assert reply["In-Reply-To"] == original["Message-ID"]
        assert original["Message-ID"] in reply["References"]
        assert "a new kettle left today" in reply.get_body(("plain",)).get_content()
        assert "<strong>Good news</strong>" in reply.get_body(("html",)).get_content()
        assert [p.get_filename() for p in reply.iter_attachments()] == ["label.pdf"]
        ix = Interaction.objects.get()
        assert ix.status in (State.REPLIED.value, State.CLOSED.value)
        assert Outgoing.objects.filter(interaction=ix, kind=Outgoing.REPLY).count() == 1
        kinds = set(JournalEvent.objects.filter(interaction=ix).values_list("kind", flat=True))
        assert {"answered", "reply_accepted", "reply_sent"} <= kinds
        assert page.errors == []


HOSTILE_HTML = (
    "<p>The <b>lid</b> is broken. Zebrafish-4242.</p>"
    "<script>window.__pwned = 1; alert('script')</script>"
    "<img src=x onerror=\"window.__pwned = 2; alert('onerror')\">"
    f"<style>body {{ background: url({ELSEWHERE}/css.png) }} p {{ position: fixed }}</style>"
    f"<img src=\"{ELSEWHERE}/pixel.png\" alt=\"tracker\">"
    "<a href=\"javascript:alert('link')\">click</a>"
    f"<a href=\"{ELSEWHERE}/help\">help</a>"
    "<svg onload=\"alert('svg')\"></svg><iframe src=\"javascript:alert('frame')\"></iframe>"
)


def test_rights_journal_transcript_reports_and_evaluation(make_center, live_server, settings):
    center = make_center(RIGHTS)
    settings.POSTROOM_CONFIG = str(center.path)  # transcripts read the mail server
    web_passwords(center)
    EvaluationCriterion.objects.filter(code="process").update(active=False)
    center.ready("alice")
    hostile = customer_mail(center, "support", "Broken lid", "The lid is broken. Zebrafish-4242.", HOSTILE_HTML)
    center.send(hostile, center.address("support"), center.address("carol"))
    secret = customer_mail(center, "sales", "Sales secret Okapi-77", "A private offer, Okapi-77.")
    center.send(secret, center.address("sales"), center.address("carol"))
    center.wait_for("support", 1)
    center.wait_for("sales", 1)
    center.engine.run_until_idle()
    lid = Interaction.objects.get(subject="Broken lid")
    sales = Interaction.objects.get(subject__startswith="Sales secret")
    assert lid.agent.address == center.address("alice")
    base = live_server.url

    with open_page(accept_downloads=True) as page:
        requests: list[str] = []
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())

        # Bob reads the support box only: the sales mail is nowhere for him.
        log_in(page, base, center, "bob", "/journal/")
        page.fill("#q", "okapi")
        page.click("#search")
        page.wait_for_selector("#journal-table tbody tr.empty")
        page.fill("#q", "zebrafish")
        page.click("#search")
        page.wait_for_selector(f'#journal-table tr[data-guid="{lid.guid}"]')
        assert "Okapi" not in page.content()
        no_serious_violations(page, "journal-reader")
        for path in (f"/interactions/{sales.guid}/transcript/", f"/interactions/{sales.guid}/"):
            response = page.goto(base + path)
            assert response.status == 403 and "Okapi" not in page.content()
        page.goto(base + "/reports/")
        assert "Okapi" not in page.content() and center.address("sales") not in page.content()
        assert page.locator(f'#table-history tr:has-text("{lid.subject}")').count() == 1

        # Sam, the supervisor, searches the journal and opens the hostile mail's transcript.
        log_in(page, base, center, "sam", "/journal/")
        page.fill("#q", "Zebrafish")
        page.click("#search")
        page.wait_for_selector(f'#journal-table tr[data-guid="{lid.guid}"]')
        screenshot(page, "journal")
        page.click(f'#journal-table tr[data-guid="{lid.guid}"] a')
        page.wait_for_selector('li.message.customer iframe.mail')
        page.wait_for_load_state("networkidle")
        frame = page.frame_locator('li.message.customer iframe.mail')
        assert "The lid is broken. Zebrafish-4242." in frame.locator("body").inner_text()
        assert frame.locator("script, style[data-x], iframe, svg").count() == 0
        assert "mail server" in page.locator('li.message.customer .source').inner_text()
        assert page.evaluate("window.__pwned") is None
        no_serious_violations(page, "transcript")
        assert [u for u in requests if not u.startswith(base)] == []
        assert dialogs == []
        # Remote images load only when the reader asks (and then only into the frame).
        page.click('li.message.customer a[data-action="show-images"]')
        wait_until(page, lambda: any(u.startswith(ELSEWHERE + "/pixel.png") for u in requests))
        assert [u for u in requests if not u.startswith(base)] == [ELSEWHERE + "/pixel.png"]
        assert dialogs == [] and page.evaluate("window.__pwned") is None

        # Alice ends it (a wrap-up code) and the engine clears up: now it can be evaluated.
        lid.refresh_from_db()
        commands.hang_up(lid, by_user=lid.agent.user, code="resolved", now=timezone.now())
        center.engine.run_until_idle()
        page.reload()
        page.wait_for_selector('li.message.customer iframe.mail')
        # Sam evaluates it; the score is in Alice's report.
        page.click("#evaluate-link")
        page.wait_for_selector("#evaluate-form")
        page.check('input[name="score-accuracy"][value="4"]')
        page.check('input[name="score-tone"][value="5"]')
        page.fill("#comment", "Clear and kind.")
        no_serious_violations(page, "evaluate")
        page.click("#save-evaluation")
        page.wait_for_selector(".evaluation .score")
        evaluation = Evaluation.objects.get(interaction=lid)
        # accuracy 4/5 weight 3, tone 5/5 weight 2: (3 * 0.8 + 2 * 1) / 5 = 88 %
        assert evaluation.score == 88.0

        # A report, its charts, and every table as CSV and Excel with the database's figures.
        page.goto(base + "/reports/")
        page.wait_for_selector("#chart-trend")
        no_serious_violations(page, "reports")
        with page.expect_download() as got:
            page.click('a[data-download="boxes-csv"]')
        rows = list(csv.DictReader(io.StringIO(got.value.path().read_text(encoding="utf-8-sig"))))
        received = {r["Box"]: int(r["Received"]) for r in rows}
        for box in ("support", "sales"):
            assert received[center.address(box)] == Interaction.objects.filter(mailbox__address=center.address(box)).count()
        with page.expect_download() as got:
            page.click('a[data-download="daily-xlsx"]')
        from openpyxl import load_workbook

        assert got.value.suggested_filename.endswith(".xlsx")
        sheet = list(load_workbook(io.BytesIO(got.value.path().read_bytes())).active.iter_rows(values_only=True))
        assert sheet[0] == ("Day", "Inbound", "Outbound")
        assert sum(r[1] for r in sheet[1:]) == JournalEvent.objects.filter(kind="received").count() == 2

        log_in(page, base, center, "alice", "/reports/")
        row = page.locator(f'#table-evaluations tbody tr:has-text("{center.address("alice")}")')
        assert center.address("alice") in row.inner_text() and "88.0" in row.inner_text()
        screenshot(page, "reports-agent")
        # (the refused pages and the aborted remote image are expected "failed to load"s)
        assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []


def test_the_console_and_the_live_page_pass_axe(make_center, live_server):
    center = make_center()
    web_passwords(center)
    with open_page() as page:
        log_in(page, live_server.url, center, "sam", "/supervisor/")
        page.wait_for_selector("#agents tbody tr")
        no_serious_violations(page, "console")
        page.goto(live_server.url + "/")
        page.wait_for_selector("#queue")
        no_serious_violations(page, "live")
        assert page.errors == []


def test_a_day_of_work_on_every_page(live_server, django_user_model):
    """A center with a day's work behind it (no mail stack needed: the pages read the
    database): every page drawn, axe-clean, and pictured (the README's screenshots)."""
    import random
    from datetime import timedelta

    from postroom.store import search
    from postroom.store.models import AgentGroup, Mailbox, WrapUpCode

    rnd = random.Random(4)
    now = timezone.now()
    support = Mailbox.objects.create(address="support@example.com", login="s", display_name="Support")
    sales = Mailbox.objects.create(address="sales@example.com", login="s2", display_name="Sales")
    WrapUpCode.objects.create(code="resolved", label="Resolved")

    def person(name: str, address: str, **kw) -> Agent:
        user = django_user_model.objects.create_user(address, password=PASSWORD)
        return Agent.objects.create(name=name, address=address, user=user, **kw)

    sue = person("Sue Supervisor", "sue@example.com", is_supervisor=True, ready=True, skills=["support"])
    team = [person(n, f"{n.split()[0].lower()}@example.com", skills=["support", "sales"], capacity=3,
                   ready=n != "Dan Dorsey", state_changed_at=now - timedelta(minutes=rnd.randint(5, 90)))
            for n in ("Alice Archer", "Bob Baker", "Chloe Chen", "Dan Dorsey")]
    desk = AgentGroup.objects.create(name="Support desk")
    desk.members.add(*team)
    desk.boxes.add(support)
    EvaluationCriterion.objects.create(code="accuracy", label="Accurate and complete", weight=3, position=1)
    EvaluationCriterion.objects.create(code="tone", label="Tone and courtesy", weight=2, position=2)
    subjects = ["Where is my order #4711?", "Invoice 1042 is wrong", "Refund for a broken kettle",
                "Password reset does not arrive", "Change of delivery address", "Warranty claim: lid",
                "Quote for 40 office chairs", "Cancel my subscription", "Parcel damaged in transit",
                "Discount code not accepted"]
    customers = [("Jane Doe", "jane@customer.example"), ("Max Mustermann", "max@kunde.example"),
                 ("Richard Roe", "richard@customer.example"), ("Ann Smith", "ann@customer.example")]
    made = []
    for n in range(36):
        box = support if n % 3 else sales
        name, address = customers[n % len(customers)]
        arrival = now - timedelta(hours=rnd.randint(1, 6 * 24), minutes=rnd.randint(0, 59))
        if n < 8:
            status, agent, arrival = State.QUEUED.value, None, now - timedelta(minutes=rnd.randint(2, 240))
        elif n < 14:
            status, agent, arrival = State.DELIVERED.value, team[n % 3], now - timedelta(minutes=rnd.randint(20, 200))
        else:
            status, agent = rnd.choice([State.CLOSED.value] * 4 + [State.ENDED.value]), team[n % 4]
        ix = Interaction.objects.create(
            node_id="n", mailbox=box, uidvalidity=1, uid=n + 1, message_id=f"<d{n}@customer.example>",
            customer=address, customer_name=name, subject=subjects[n % len(subjects)], arrival_time=arrival,
            priority=rnd.choice([0, 0, 5, 10, 50]), queue="support", status=status, agent=agent,
            answered_at=arrival + timedelta(minutes=7) if agent else None,
            no_reply_due_at=now + timedelta(minutes=rnd.randint(-10, 200)) if status == State.DELIVERED.value else None,
        )
        search.keep_customer_text(ix, f"Hello,\n\n{ix.subject.lower()}. Please help.\n\n{name}")
        JournalEvent.objects.create(at=arrival, kind="received", interaction=ix, mailbox=box)
        if agent:
            JournalEvent.objects.create(at=arrival + timedelta(minutes=7), kind="answered", interaction=ix,
                                        mailbox=box, agent=agent)
        if status == State.CLOSED.value:
            done = arrival + timedelta(minutes=rnd.randint(20, 400))
            JournalEvent.objects.create(at=done - timedelta(minutes=2), kind="reply_accepted", interaction=ix,
                                        mailbox=box, agent=agent)
            JournalEvent.objects.create(at=done, kind="reply_sent", interaction=ix, mailbox=box, agent=agent)
            if n % 4 == 0:
                Evaluation.objects.create(interaction=ix, agent=agent, mailbox=box, evaluator=sue.address,
                                          scores=[], score=rnd.choice([70.0, 85.0, 92.5, 100.0]),
                                          created_at=done, updated_at=done)
        if n % 7 == 0 and agent:
            JournalEvent.objects.create(at=arrival + timedelta(minutes=90), kind="no_reply_expired",
                                        interaction=ix, mailbox=box, agent=agent)
        made.append(ix)
    base = live_server.url
    with open_page(height=1000) as page:
        page.goto(base + "/accounts/login/")
        for who, path, ready, name in (
            ("alice@example.com", "/agent/", "#current tbody tr[data-guid]", "readme-agent-bar"),
            ("sue@example.com", "/supervisor/", "#queues section.queue", "readme-console"),
            ("sue@example.com", "/journal/?q=kettle", "#journal-table tbody tr", "readme-journal"),
            ("sue@example.com", "/reports/", "#chart-trend", "readme-report"),
            ("sue@example.com", f"/interactions/{made[20].guid}/transcript/", "#transcript", "readme-transcript"),
            ("alice@example.com", "/journal/", "#journal-table tbody tr", "journal-agent"),
        ):
            page.goto("about:blank")  # the last page stops polling before its session goes
            page.context.clear_cookies()
            page.goto(base + "/accounts/login/")
            page.fill('input[name="username"]', who)
            page.fill('input[name="password"]', PASSWORD)
            page.click('#login-form button[type="submit"]')
            page.goto(base + path)
            page.wait_for_selector(ready)
            page.wait_for_timeout(1200)  # one poll of the live pages
            no_serious_violations(page, name)
        assert page.errors == []
