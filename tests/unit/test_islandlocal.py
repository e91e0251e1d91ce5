"""The cut-off node's island mode, its pure parts (core/islandlocal.py, decision 0036)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postroom.core.islandlocal import Copy, Merge, answer_message_id, carries, merge

ME, PEER = "node-p", "node-s"


def test_the_answer_id_is_the_same_on_every_node_for_the_same_email() -> None:
    a = answer_message_id("ar", "Support@Example.com", "<m1@x>", "ab" * 32, "example.com")
    b = answer_message_id("ar", "support@example.com", "<m1@x>", "ab" * 32, "example.com")
    assert a == b and a is not None and a.startswith("<ar.") and a.endswith("@example.com>")


def test_the_answer_id_differs_by_kind_box_message_id_and_bytes() -> None:
    base = ("ar", "support@example.com", "<m1@x>", "ab" * 32, "example.com")
    ids = {answer_message_id(*base)}
    for i, other in ((0, "re"), (1, "sales@example.com"), (2, "<m2@x>"), (3, "cd" * 32)):
        changed = list(base)
        changed[i] = other
        ids.add(answer_message_id(*changed))
    assert len(ids) == 5


def test_an_email_without_a_stable_name_gets_no_derived_id() -> None:
    assert answer_message_id("ar", "support@example.com", "", "ab" * 32, "example.com") is None
    assert answer_message_id("ar", "support@example.com", "<m1@x>", "", "example.com") is None


def test_a_local_record_whose_claim_this_node_never_won_brings_nothing() -> None:
    assert merge(ME, Copy("", closed=False), None) is Merge.LEAVE
    assert merge(ME, Copy(PEER, closed=False), Copy(PEER, closed=False)) is Merge.LEAVE


def test_a_won_email_the_database_never_saw_is_inserted() -> None:
    assert merge(ME, Copy(ME, closed=False), None) is Merge.INSERT


def test_a_won_email_known_on_both_sides_keeps_one_record_with_our_claim() -> None:
    assert merge(ME, Copy(ME, closed=False), Copy("", closed=False)) is Merge.TAKE_OVER
    assert merge(ME, Copy(ME, closed=True), Copy(ME, closed=False)) is Merge.TAKE_OVER


def test_a_closed_shared_record_keeps_its_outcome() -> None:
    assert merge(ME, Copy(ME, closed=False), Copy("", closed=True)) is Merge.LEAVE
    assert merge(ME, Copy(ME, closed=False), Copy(ME, closed=True)) is Merge.LEAVE


def test_a_shared_record_closed_by_the_node_that_lost_our_claim_is_reopened() -> None:
    # The node on the database lost the claim to us and closed its copy (islandclaim),
    # naming us: we only sent the auto-response, so the email must be routed and answered.
    assert merge(ME, Copy(ME, closed=False), Copy(ME, closed=True, claimed_elsewhere=True)) is Merge.REOPEN
    # ... closed before the winner was named on it: our copy's claim decides.
    assert merge(ME, Copy(ME, closed=False), Copy("", closed=True, claimed_elsewhere=True)) is Merge.REOPEN


def test_a_win_we_had_not_read_before_the_link_came_back_is_reopened_too() -> None:
    # Our claim was in flight: the other node read our win, we did not (nothing sent here).
    assert merge(ME, Copy("", closed=False), Copy(ME, closed=True, claimed_elsewhere=True)) is Merge.REOPEN


def test_no_reopening_of_another_nodes_win_or_with_our_copy_closed() -> None:
    assert merge(ME, Copy("", closed=False), Copy("", closed=True, claimed_elsewhere=True)) is Merge.LEAVE
    assert merge(ME, Copy(PEER, closed=False), Copy("", closed=True, claimed_elsewhere=True)) is Merge.LEAVE
    # A third node won it after ours expired: it reopens it when it merges.
    assert merge(ME, Copy(ME, closed=False), Copy(PEER, closed=True, claimed_elsewhere=True)) is Merge.LEAVE
    assert merge(ME, Copy(ME, closed=True), Copy(ME, closed=True, claimed_elsewhere=True)) is Merge.LEAVE


nodes = st.sampled_from(["", ME, PEER])
copies = st.builds(Copy, nodes, st.booleans(), st.booleans(), st.booleans())


@given(copies, st.none() | copies)
def test_the_shared_record_is_only_changed_for_an_email_this_node_won(local: Copy, shared: Copy | None) -> None:
    action = merge(ME, local, shared)
    if action in (Merge.INSERT, Merge.TAKE_OVER):
        assert local.claim_node == ME
    if action is Merge.TAKE_OVER:
        # Never over another node's claim, never over a closed outcome.
        assert shared is not None and shared.claim_node in ("", ME) and not shared.closed
    if action is Merge.REOPEN:
        # Only a record closed because its claim was lost to us, and only for an open copy
        # of ours; the winner named there, or none named and ours won.
        assert shared is not None and shared.closed and shared.claimed_elsewhere
        assert not local.closed or local.progressed
        assert shared.claim_node == ME or (shared.claim_node == "" and local.claim_node == ME)
    if action is Merge.INSERT:
        assert shared is None
    if shared is not None and shared.closed and not shared.claimed_elsewhere:
        assert action is Merge.LEAVE


def test_what_the_island_routed_forwarded_or_answered_goes_with_the_surviving_record() -> None:
    routed = Copy(ME, closed=False, progressed=True)
    assert merge(ME, routed, None) is Merge.INSERT and carries(Merge.INSERT, routed)
    assert carries(merge(ME, routed, Copy("", closed=False)), routed)
    # Closed as claimed elsewhere by the node that lost it to us: reopened in our state.
    lost_to_us = Copy(ME, closed=True, claimed_elsewhere=True)
    assert merge(ME, routed, lost_to_us) is Merge.REOPEN and carries(Merge.REOPEN, routed)
    # Answered and closed here (or vanished after we forwarded it): its outcome goes over.
    done = Copy(ME, closed=True, progressed=True)
    assert merge(ME, done, lost_to_us) is Merge.REOPEN and carries(Merge.REOPEN, done)
    # Only the auto-response sent: the claim crosses over, the nodes there route it.
    auto_only = Copy(ME, closed=False)
    assert not carries(merge(ME, auto_only, lost_to_us), auto_only)
    # Never over a closed outcome or another node's claim, never for a claim not ours.
    assert merge(ME, routed, Copy("", closed=True)) is Merge.LEAVE
    assert merge(ME, routed, Copy(PEER, closed=False)) is Merge.CLAIMED_ELSEWHERE
    assert not carries(Merge.CLAIMED_ELSEWHERE, routed)
    assert merge(ME, Copy(PEER, closed=False, progressed=True), None) is Merge.LEAVE


@given(copies, st.none() | copies)
def test_the_island_state_is_carried_exactly_when_its_record_survives_and_it_acted(
    local: Copy, shared: Copy | None
) -> None:
    action = merge(ME, local, shared)
    carried = carries(action, local)
    # Carried only for our own claim's records that the merge writes, and always for
    # those when we gave the email to an agent: nothing we forwarded or answered is
    # routed, forwarded or answered again from an older state.
    assert carried == (action in (Merge.INSERT, Merge.TAKE_OVER, Merge.REOPEN) and local.progressed)
    if carried:
        assert (local.claim_node == ME) or (shared is not None and shared.claim_node == ME)
    # A record we won and acted on is dropped only where another outcome or claim stands.
    won = local.claim_node == ME or (
        shared is not None and shared.closed and shared.claimed_elsewhere and shared.claim_node == ME
    )
    if won and local.progressed and not carried:
        assert shared is not None
        assert (shared.closed and not shared.claimed_elsewhere) or shared.claim_node not in ("", ME)
