"""Who is writing: the contact database lookup behind priority and approval (fig. 5 318)."""

from __future__ import annotations

from django.db.models import Q

from postroom.store.models import Contact

__all__ = ["candidates", "lookup", "lookup_many"]


def candidates(address: str) -> tuple[str | None, list[str]]:
    """(the address, its domain and parent domains, most specific first).

    ``Ann@A.B.Example.com`` -> ``("ann@a.b.example.com", ["a.b.example.com",
    "b.example.com", "example.com"])``. A bare top-level domain is never a candidate: a
    contact for "com" would be a configuration accident, not a customer.
    """
    address = address.strip().lower()
    if "@" not in address:
        return None, []
    domain = address.rpartition("@")[2].strip(".")
    labels = [label for label in domain.split(".") if label]
    domains = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    return address, domains or ([domain] if domain else [])


def lookup(address: str | None) -> Contact | None:
    """The contact for ``address``: exact address, else its domain, else a parent domain."""
    return lookup_many([address]).get(address) if address else None


def lookup_many(addresses: list[str | None]) -> dict[str, Contact | None]:
    """`lookup` of each address, in one query for all of them (a FETCH batch's senders:
    decision 0043)."""
    wanted = {a: candidates(a) for a in addresses if a}
    # Each address and domain asked once: a batch's senders share their domains (and
    # building the query's terms was most of the lookup: issue 9, decision 0057).
    exacts: dict[str, None] = {}
    domain_set: dict[str, None] = {}
    for exact, domains in wanted.values():
        if exact is None:
            continue
        exacts[exact] = None
        domain_set.update(dict.fromkeys(domains))
    # iexact so "Example.COM" typed into the admin still matches. The terms of one OR
    # (what `|=` term by term built, without copying it at every term).
    terms = [("address__iexact", e) for e in exacts] + [("domain__iexact", d) for d in domain_set]
    query = Q(*terms, _connector=Q.OR)
    found = list(Contact.objects.filter(query)) if query else []
    by_address: dict[str, Contact] = {}
    by_domain: dict[str, Contact] = {}
    for c in found:
        if c.address:
            by_address.setdefault(c.address.lower(), c)
        if c.domain:
            by_domain.setdefault(c.domain.lower(), c)
    return {
        address: None
        if exact is None
        else by_address.get(exact) or next((by_domain[d] for d in domains if d in by_domain), None)
        for address, (exact, domains) in wanted.items()
    }
