"""The data migrations write to the database being migrated (`migrate --database X`),
not to `default`: a second store (island mode's local file, a copy being upgraded) must
get its own rows fixed, and `default` must not be touched: it may be the one away.

Run in a child process (pytest-django guards every alias but its test database), with
`default` an empty file nobody migrated: a data migration that wrote through the default
manager would fail there, or fix the wrong rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import json, sys
from datetime import UTC, datetime
import django
django.setup()
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader
from postroom.settings import sqlite_database

OTHER = "other"
connections.settings[OTHER] = connections.configure_settings(
    {DEFAULT_DB_ALIAS: sqlite_database(sys.argv[1])})[DEFAULT_DB_ALIAS]
now = datetime(2026, 1, 1, tzinfo=UTC)

def models_at(migration):
    call_command("migrate", "store", migration, database=OTHER, verbosity=0)
    return MigrationLoader(connections[OTHER]).project_state(("store", migration)).apps

apps = models_at("0005_mailsec")
box = apps.get_model("store", "Mailbox").objects.using(OTHER).create(
    address="support@example.test", display_name="Support", login="support", auto_response_text="", updated_at=now)
apps.get_model("store", "Quarantined").objects.using(OTHER).create(
    mailbox=box, uidvalidity=1, uid=7, folder="Quarantine", reason="unreadable", created_at=now)
apps = models_at("0010_redundancy")
ix = apps.get_model("store", "Interaction").objects.using(OTHER).create(
    mailbox_id=box.pk, node_id="n1", uidvalidity=1, uid=7, message_id="<a@example.test>",
    to_addr="support@example.test", reply_to="", customer="Ann@Example.test", customer_name="Ann",
    subject="Hello", arrival_time=now, auto_response_skipped="", claim_node="", created_at=now,
    outcome="", resolution_code="", wrapup_code="")
apps.get_model("store", "Outgoing").objects.using(OTHER).create(
    interaction=ix, key="auto:1", kind="auto_response", envelope_from="support@example.test",
    recipients=["ann@example.test"], message_id="<r@example.test>", raw=b"x", next_attempt_at=now,
    last_error="", created_at=now, claimed_by="")
apps = models_at("0015_report_indexes")
for fields in ({"address": "JÖRG@xn--mller-kva.example"}, {"domain": "STRASSE.Example."}):
    apps.get_model("store", "Contact").objects.using(OTHER).create(level="gold", **fields)
call_command("migrate", database=OTHER, verbosity=0)
with connections[OTHER].cursor() as cursor:
    moved = [row[0] is not None for row in cursor.execute("SELECT moved_at FROM store_quarantined")]
    rate_keys = [row[0] for row in cursor.execute("SELECT rate_key FROM store_outgoing")]
    contact_keys = [list(row) for row in cursor.execute("SELECT address_key, domain_key FROM store_contact ORDER BY id")]
print(json.dumps({"moved": moved, "rate_keys": rate_keys, "contact_keys": contact_keys}))
'''


def test_the_data_migrations_fix_the_rows_of_the_database_they_migrate(tmp_path: Path) -> None:
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'default-untouched.sqlite3'}")
    env.setdefault("DJANGO_SETTINGS_MODULE", "postroom.settings")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "other.sqlite3")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "moved": [True], "rate_keys": ["ann@example.test"],  # 0006, 0011
        "contact_keys": [["jörg@müller.example", None], [None, "strasse.example"]],  # 0016
    }
