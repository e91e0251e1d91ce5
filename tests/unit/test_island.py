"""Fig. 11's claim protocol (postroom.core.island): examples, then Hypothesis over
interleavings of two and three nodes that each act on their own, lagging reading of the
sync box."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.config import load_config
from postroom.core.island import (
    ChangeKind,
    ClaimBook,
    EmailKey,
    Garbled,
    Holding,
    SyncKind,
    SyncMessage,
    decode,
    encode,
)
from postroom.engine.island import IslandSettings

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EXPIRY = timedelta(minutes=60)
A = EmailKey("support@example.test", "<a@x>", "aa" * 32)
B = EmailKey("support@example.test", "<b@x>", "bb" * 32)


def msg(
    uid: int, minutes: float, kind: SyncKind, node: str, email: EmailKey | None = A
) -> SyncMessage:
    at = T0 + timedelta(minutes=minutes)
    return SyncMessage(
        uid,
        at,
        kind,
        node,
        at - timedelta(seconds=3),
        None if kind is SyncKind.TIME_SYNC else email,
    )


def test_first_claim_to_arrive_wins_and_a_later_one_loses() -> None:
    book = ClaimBook(EXPIRY)
    won = book.apply(msg(1, 0, SyncKind.CLAIM, "n2"))
    assert [(c.kind, c.claim.node) for c in won] == [(ChangeKind.WON, "n2")]
    assert book.apply(msg(2, 0, SyncKind.CLAIM, "n1")) == []
    assert book.owner(A) == "n2"
    assert book.live[A].local_time == T0 - timedelta(seconds=3)


def test_a_claim_expires_by_server_time_unless_reasserted() -> None:
    book = ClaimBook(EXPIRY)
    book.apply(msg(1, 0, SyncKind.CLAIM, "n1"))
    book.apply(msg(2, 50, SyncKind.RECLAIM, "n1"))
    assert book.apply(msg(3, 100, SyncKind.TIME_SYNC, "n2")) == []  # 50 past the re-claim
    changes = book.apply(msg(4, 111, SyncKind.TIME_SYNC, "n2"))  # 61 past it
    assert [(c.kind, c.claim.node) for c in changes] == [(ChangeKind.EXPIRED, "n1")]
    assert book.owner(A) is None
    won = book.apply(msg(5, 112, SyncKind.CLAIM, "n2"))
    assert [(c.kind, c.claim.node) for c in won] == [(ChangeKind.WON, "n2")]


def test_a_message_that_arrives_late_expires_before_it_claims() -> None:
    book = ClaimBook(EXPIRY)
    book.apply(msg(1, 0, SyncKind.CLAIM, "n1"))
    changes = book.apply(msg(2, 61, SyncKind.CLAIM, "n2"))
    assert [c.kind for c in changes] == [ChangeKind.EXPIRED, ChangeKind.WON]
    assert book.owner(A) == "n2"


def test_release_only_by_the_holder() -> None:
    book = ClaimBook(EXPIRY)
    book.apply(msg(1, 0, SyncKind.CLAIM, "n1"))
    assert book.apply(msg(2, 1, SyncKind.RELEASE, "n2")) == []
    assert [c.kind for c in book.apply(msg(3, 2, SyncKind.RELEASE, "n1"))] == [ChangeKind.RELEASED]
    assert book.owner(A) is None


def test_a_reclaim_for_an_unclaimed_email_is_a_claim_and_rereading_is_harmless() -> None:
    book = ClaimBook(EXPIRY)
    assert [c.kind for c in book.apply(msg(7, 0, SyncKind.RECLAIM, "n3"))] == [ChangeKind.WON]
    assert book.apply(msg(7, 0, SyncKind.RECLAIM, "n3")) == []
    assert book.apply(msg(5, 0, SyncKind.CLAIM, "n1")) == []  # below the last UID read
    assert book.owner(A) == "n3"


def test_server_time_does_not_step_back() -> None:
    book = ClaimBook(EXPIRY)
    book.apply(msg(1, 0, SyncKind.CLAIM, "n1"))
    book.apply(msg(2, 70, SyncKind.TIME_SYNC, "n2"))
    assert book.owner(A) is None
    book.apply(msg(3, 5, SyncKind.CLAIM, "n2"))  # the server's clock stepped back
    assert book.server_now == T0 + timedelta(minutes=70)


def test_reassert_due_and_holding() -> None:
    book = ClaimBook(EXPIRY)
    book.apply(msg(1, 0, SyncKind.CLAIM, "n1"))
    book.apply(msg(2, 10, SyncKind.CLAIM, "n1", B))
    book.apply(msg(3, 20, SyncKind.TIME_SYNC, "n2"))
    assert book.reassert_due("n1", timedelta(minutes=20)) == [A]
    assert book.reassert_due("n2", timedelta(minutes=1)) == []
    hold = Holding(T0, EXPIRY, timedelta(minutes=5))
    assert hold.safe_until == T0 + timedelta(minutes=55)


def test_wire_format_round_trip_and_garbage() -> None:
    body = encode(SyncKind.CLAIM, "n1", T0, A)
    assert decode(9, T0, body) == SyncMessage(9, T0, SyncKind.CLAIM, "n1", T0, A)
    assert decode(9, T0, encode(SyncKind.TIME_SYNC, "n1", T0)).email is None
    with pytest.raises(ValueError):
        encode(SyncKind.TIME_SYNC, "n1", T0, A)
    bad = [
        b"\xff\xfe",
        b"hello",
        b"[1]",
        b'{"v": 99}',
        b'{"v": 1, "kind": "steal", "node": "n1", "local_time": "2026-12-06T12:00:00+00:00"}',
        b'{"v": 1, "kind": "claim", "node": "", "local_time": "2026-12-06T12:00:00+00:00", "email": {"mailbox": "m", "message_id": "i", "sha256": "s"}}',
        b'{"v": 1, "kind": "claim", "node": "n1", "local_time": "2026-12-06T12:00:00"}',
        b'{"v": 1, "kind": "claim", "node": "n1", "local_time": "soon", "email": {}}',
        b'{"v": 1, "kind": "time-sync", "node": "n1", "local_time": "2026-12-06T12:00:00+00:00", "email": {"mailbox": "m", "message_id": "i", "sha256": "s"}}',
    ]
    for body in bad:
        with pytest.raises(Garbled):
            decode(1, T0, body)


def test_settings_must_fit_inside_one_expiry() -> None:
    with pytest.raises(ValueError):
        IslandSettings(
            "sync@x.test",
            "n1@x.test",
            claim_expiry=timedelta(seconds=60),
            claim_reassert=timedelta(seconds=40),
            clock_margin=timedelta(seconds=20),
        )
    IslandSettings("sync@x.test", "n1@x.test")  # the patent's 60 / 20 minutes fit


# -- interleavings ------------------------------------------------------------------------

EMAILS = [EmailKey("box@example.test", f"<m{i}@x>", f"{i:064x}") for i in range(3)]
REASSERT = timedelta(minutes=20)


class Node:
    """A node as the engine runs one: it reads the box up to some point (its lag), then
    claims what it sees unowned, re-claims what it holds when due, and sends time-syncs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.book = ClaimBook(EXPIRY)
        self.changes: list = []
        self.missed = False  # another node expunged messages before this one read them

    def read(self, box: list[SyncMessage], upto: int) -> None:
        seen = [m for m in box if self.book.last_uid < m.uid <= upto]
        if seen and [m.uid for m in seen] != list(range(self.book.last_uid + 1, seen[-1].uid + 1)):
            self.missed = True
        for m in seen:
            self.changes.extend(self.book.apply(m))

    def wants(self, visible: list[EmailKey]) -> list[tuple[SyncKind, EmailKey | None]]:
        out: list[tuple[SyncKind, EmailKey | None]] = []
        out += [(SyncKind.CLAIM, e) for e in visible if self.book.owner(e) is None]
        out += [(SyncKind.RECLAIM, e) for e in self.book.reassert_due(self.name, REASSERT)]
        return out or [(SyncKind.TIME_SYNC, None)]


step = st.tuples(
    st.integers(0, 2),  # which node acts
    st.integers(0, 6),  # how far behind the end of the box it reads
    st.integers(0, 2),  # how many of the emails exist yet
    st.floats(0, 45),  # minutes since the previous arrival
    st.integers(0, 3),  # which of its wishes it sends (mod how many)
    st.booleans(),  # whether it expunges after reading
)


def run(
    nodes_n: int, steps: list[tuple[int, int, int, float, int, bool]]
) -> tuple[list[Node], list[SyncMessage], list[SyncMessage]]:
    nodes = [Node(f"n{i + 1}") for i in range(nodes_n)]
    full: list[SyncMessage] = []  # everything ever delivered
    box: list[SyncMessage] = []  # what is left on the server after expunges
    now = T0
    for who, lag, visible, gap, pick, expunge in steps:
        node = nodes[who % nodes_n]
        node.read(box, upto=(box[-1].uid - lag) if box else 0)
        if expunge:
            gone = set(node.book.expungeable())
            box = [m for m in box if m.uid not in gone]
        wishes = node.wants(EMAILS[: visible + 1])
        kind, email = wishes[pick % len(wishes)]
        now += timedelta(minutes=gap)
        m = SyncMessage(len(full) + 1, now, kind, node.name, now - timedelta(seconds=1), email)
        full.append(m)
        box.append(m)
    return nodes, full, box


def check(nodes: list[Node], full: list[SyncMessage], box: list[SyncMessage]) -> None:
    # One reader of the whole stream: ownership per email alternates WON / ended, and
    # each WON goes to the first claim after the previous end (at most one owner).
    reader = ClaimBook(EXPIRY)
    owner: dict[EmailKey, str | None] = {}
    for m in full:
        for change in reader.apply(m):
            e = change.claim.email
            if change.kind is ChangeKind.WON:
                assert owner.get(e) is None, (
                    f"{e} won by {change.claim.node} while {owner.get(e)} held it"
                )
                assert change.uid == m.uid and change.claim.node == m.node
                owner[e] = change.claim.node
            else:
                assert owner.get(e) == change.claim.node
                if change.kind is ChangeKind.EXPIRED:
                    assert m.arrived - change.claim.asserted > EXPIRY
                owner[e] = None
        if m.email is not None and m.kind is not SyncKind.RELEASE:
            assert owner.get(m.email) is not None  # a claim never leaves its email unowned
        assert {e: c.node for e, c in reader.live.items()} == {e: o for e, o in owner.items() if o}
    # Every node that has read a prefix of the stream agrees with the whole-stream reader
    # at that prefix. (A node that lagged behind another's expunge read a different
    # sequence; it must agree once it has caught up: `settle`.)
    for node in nodes:
        if node.missed:
            continue
        prefix = ClaimBook(EXPIRY)
        prefix.apply_all(m for m in full if m.uid <= node.book.last_uid)
        assert node.book.live == prefix.live
    # A reader that starts late, from what is left on the server after the expunges,
    # finds the same live claims as the one who read everything.
    late = ClaimBook(EXPIRY)
    late.apply_all(box)
    assert {e: (c.node, c.uid) for e, c in late.live.items()} == {
        e: (c.node, c.uid) for e, c in reader.live.items()
    }


def settle(nodes: list[Node], full: list[SyncMessage], box: list[SyncMessage]) -> None:
    """Quiet time: every node reads everything and claims what it sees unowned; then
    every email is owned and every node agrees who owns it."""
    now = full[-1].arrived if full else T0
    for node in nodes:
        node.read(box, upto=box[-1].uid if box else 0)
        for kind, email in node.wants(EMAILS):
            if kind is SyncKind.CLAIM:
                now += timedelta(seconds=1)
                m = SyncMessage(len(full) + 1, now, kind, node.name, now, email)
                full.append(m)
                box.append(m)
    for node in nodes:
        node.read(box, upto=box[-1].uid)
    views = [{e: node.book.owner(e) for e in EMAILS} for node in nodes]
    assert all(owner is not None for owner in views[0].values())
    assert all(view == views[0] for view in views)
    whole = ClaimBook(EXPIRY)
    whole.apply_all(full)
    assert all(node.book.live == whole.live for node in nodes)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_two_nodes(steps: list) -> None:
    nodes, full, box = run(2, steps)
    check(nodes, full, box)
    settle(nodes, full, box)
    check(nodes, full, box)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_three_nodes(steps: list) -> None:
    nodes, full, box = run(3, steps)
    check(nodes, full, box)
    settle(nodes, full, box)
    check(nodes, full, box)


def test_settings_come_from_the_cluster_table_and_always_fit(tmp_path: Path) -> None:
    from tests.unit.test_config import base, write

    environ = {"DATABASE_URL": "postgres://postgres@127.0.0.1/postroom"}
    assert IslandSettings.of(load_config(write(tmp_path, base()), environ=environ)) is None
    cluster = {"sync_address": "sync@example.test", "sync_password": "pw", "claim_expiry": "10s", "claim_reassert": "5s"}
    config = load_config(write(tmp_path, base() | {"cluster": cluster}), environ=environ)
    assert IslandSettings.of(config) == IslandSettings(
        "sync@example.test", config.outbound.address, timedelta(seconds=10), timedelta(seconds=5),
        timedelta(seconds=10) / 120,
    )
    config = load_config(write(tmp_path, base() | {"cluster": cluster | {"claim_expiry": "1h", "claim_reassert": "20m"}}),
                         environ=environ)
    assert IslandSettings.of(config).clock_margin == timedelta(seconds=30)  # type: ignore[union-attr]
