"""Who is writing: the contact database lookup behind priority and approval (fig. 5 318)."""

from __future__ import annotations

from django.db.models import Q

from postroom.store.models import Contact

__all__ = ["candidates", "lookup"]


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
    if not address:
        return None
    exact, domains = candidates(address)
    if exact is None:
        return None
    # One query for the address and every candidate domain (reception does this for
    # every mail; iexact so "Example.COM" typed into the admin still matches).
    query = Q(address__iexact=exact)
    for domain in domains:
        query |= Q(domain__iexact=domain)
    found = list(Contact.objects.filter(query))
    by_address = next((c for c in found if c.address and c.address.lower() == exact), None)
    if by_address is not None:
        return by_address
    by_domain = {c.domain.lower(): c for c in found if c.domain}
    return next((by_domain[d] for d in domains if d in by_domain), None)
