"""postroom.config: [health], archive folders and the message size limit."""

from __future__ import annotations

from pathlib import Path

from postroom.config import HealthConfig, load_config
from tests.unit.test_config import base, errors_of, write


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, base()))
    assert config.health == HealthConfig()
    assert config.health.sync_alert_after_seconds == 300
    assert config.incoming[0].archive_folder == "Postroom-Archive"
    assert config.outbound.archive_folder == "Postroom-Archive"
    assert config.server.max_message_bytes == 25 * 1024 * 1024


def test_everything_given(tmp_path: Path) -> None:
    doc = base()
    doc["health"] = {
        "alert_mail_interval": "30m",
        "sync_alert_after": "2m",
        "reconcile_interval": "10m",
        "withdrawal_attempts": 3,
    }
    doc["incoming"][0]["archive_folder"] = "Trash"
    doc["outbound"]["archive_folder"] = "Sent replies"
    doc["server"]["max_message_bytes"] = 10_000_000
    config = load_config(write(tmp_path, doc))
    assert config.health == HealthConfig(
        alert_mail_interval_seconds=1800,
        sync_alert_after_seconds=120,
        reconcile_interval_seconds=600,
        withdrawal_attempts=3,
    )
    assert config.incoming[0].archive_folder == "Trash"
    assert config.outbound.archive_folder == "Sent replies"
    assert config.server.max_message_bytes == 10_000_000


def test_bad_values_name_their_key(tmp_path: Path) -> None:
    doc = base()
    doc["health"] = {"sync_alert_after": "10s", "reconcile_interval": "soon", "withdrawal_attempts": 0, "engine_lease": "60s", "alert_every": "1h"}
    doc["dead_box"]["archive_folder"] = "X"  # the dead box keeps what it gets
    doc["server"]["max_message_bytes"] = 100
    paths = {e.path for e in errors_of(tmp_path, doc)}
    assert paths == {
        "health.sync_alert_after",
        "health.reconcile_interval",
        "health.withdrawal_attempts",
        "health.engine_lease",
        "health.alert_every",
        "dead_box.archive_folder",
        "server.max_message_bytes",
    }
