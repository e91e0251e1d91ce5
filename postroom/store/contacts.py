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
    found = Contact.objects.filter(address__iexact=exact).first()
    if found is not None:
        return found
    if not domains:
        return None
    # iexact: a domain typed into the admin as "Example.COM" still matches.
    query = Q()
    for domain in domains:
        query |= Q(domain__iexact=domain)
    by_domain = {c.domain.lower(): c for c in Contact.objects.filter(query) if c.domain}
    return next((by_domain[d] for d in domains if d in by_domain), None)
