"""The API against a fuzzer: schemathesis, every check, all four phases (examples,
coverage, fuzzing, stateful), against the live server with a token. Any 5xx, any answer
the schema does not document, any bad input accepted, any auth ignored fails the run.

Run time is kept to a minute or two by the number of examples per operation and a fixed
seed (so a failure here reproduces with the same command).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store import agents as agent_state
from postroom.store.models import Agent, Approval, Interaction, Mailbox, OutboundMessage, WrapUpCode

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES = int(os.environ.get("POSTROOM_FUZZ_EXAMPLES", "25"))


def _world() -> str:
    """A small contact center to fuzz against; returns an administrator-agent's token."""
    users = get_user_model().objects
    mailbox = Mailbox.objects.create(address="support@example.test", login="support")
    WrapUpCode.objects.create(code="resolved", label="Resolved")
    boss_user = users.create_user("boss", is_staff=True)
    boss = Agent.objects.create(name="Boss", address="boss@example.test", user=boss_user, is_supervisor=True)
    alice = Agent.objects.create(
        name="Alice", address="alice@example.test", user=users.create_user("alice")
    )
    alice.supervisors.add(boss)
    now = timezone.now()
    for uid, (status, agent) in enumerate(
        [
            (State.QUEUED, None),
            (State.ROUTED, boss),
            (State.DELIVERED, alice),
            (State.REPLIED, boss),
            (State.AWAITING_APPROVAL, alice),
        ],
        start=1,
    ):
        ix = Interaction.objects.create(
            mailbox=mailbox,
            node_id="n",
            uidvalidity=1,
            uid=uid,
            customer=f"c{uid}@customer.test",
            subject=f"Question {uid}",
            arrival_time=now - timedelta(minutes=uid),
            status=status.value,
            agent=agent,
        )
    reply = OutboundMessage.objects.create(mailbox=mailbox, uidvalidity=1, uid=1, outcome="accepted")
    Approval.objects.create(
        interaction=ix,
        reply=reply,
        raw=b"From: support@example.test\r\nSubject: Re: Question\r\n\r\nAnswer\r\n",
        approvers=[boss.address],
        requested_at=now,
    )
    return agent_state.issue_token(boss_user)


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed (.[dev])")
def test_the_api_holds_up_to_a_fuzzer(live_server, tmp_path):
    token = _world()
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{live_server.url}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "8",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "too_slow",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    # The whole report, for reading after a failure (pytest shows only its end).
    Path(tempfile.gettempdir(), "postroom-fuzz.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
