"""core/cluster.py: how the nodes share out the mailbox and router leases (decision 0030)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postroom.core.cluster import ROUTER, Peer, Role, active, mailbox_lease, plan, share


def settle(peers: list[Peer], boxes: list[int], holders: dict[str, str | None]) -> dict[str, str | None]:
    """Every live node applies its plan in turn until nothing changes (a compare-and-set
    lets only the first taker of a free lease win)."""
    for _ in range(10):
        changed = False
        for peer in peers:
            if not peer.live:
                continue
            p = plan(peer.node_id, peers, holders, boxes)
            for name in p.release:
                holders[name] = None
                changed = True
            for name in p.take:
                if holders.get(name) is None:
                    holders[name] = peer.node_id
                    changed = True
        if not changed:
            return holders
    raise AssertionError(f"no fixed point: {holders}")


def test_secondaries_stand_by_while_a_primary_is_live() -> None:
    peers = [Peer("b", Role.SECONDARY, True), Peer("a", Role.PRIMARY, True)]
    assert active(peers) == ["a"]
    assert active([Peer("b", Role.SECONDARY, True), Peer("a", Role.PRIMARY, False)]) == ["b"]


def test_shares_add_up_to_the_boxes() -> None:
    working = ["a", "b", "c"]
    assert [share(n, working, 7) for n in working] == [3, 2, 2]
    assert share("z", working, 7) == 0


def test_a_secondary_gives_everything_back_when_a_primary_comes() -> None:
    peers = [Peer("a", Role.PRIMARY, True), Peer("s", Role.SECONDARY, True)]
    holders: dict[str, str | None] = {ROUTER: "s", mailbox_lease(1): "s"}
    p = plan("s", peers, holders, [1])
    assert set(p.release) == {ROUTER, mailbox_lease(1)} and p.take == ()


@given(
    roles=st.lists(st.sampled_from(list(Role)), min_size=1, max_size=4),
    alive=st.lists(st.booleans(), min_size=4, max_size=4),
    boxes=st.integers(min_value=0, max_value=9),
    dead_then=st.integers(min_value=0, max_value=3),
)
def test_every_box_ends_up_with_one_active_node(roles: list[Role], alive: list[bool], boxes: int, dead_then: int) -> None:
    peers = [Peer(f"n{i}", role, alive[i]) for i, role in enumerate(roles)]
    pks = list(range(1, boxes + 1))
    holders = settle(peers, pks, {})
    working = active(peers)
    names = [ROUTER, *(mailbox_lease(pk) for pk in pks)]
    if not working:
        assert all(holders.get(n) is None for n in names)
        return
    assert all(holders.get(n) in working for n in names)
    counts = [sum(1 for n in names[1:] if holders[n] == w) for w in working]
    assert max(counts) - min(counts) <= 1
    # One node dies: its leases are free (its holder is not live), the others take them.
    victim = dead_then % len(peers)
    peers[victim] = Peer(peers[victim].node_id, peers[victim].role, False)
    holders = {n: (None if h == peers[victim].node_id else h) for n, h in holders.items()}
    holders = settle(peers, pks, holders)
    working = active(peers)
    assert all(holders.get(n) in working for n in names) if working else True
