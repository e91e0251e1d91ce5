"""Who is writing: the contact database lookup behind priority and approval (fig. 5 318)."""

from __future__ import annotations

from django.db.models import Q

from postroom.core.contactkeys import candidates
from postroom.store.compiled import CompiledIn
from postroom.store.models import Contact

__all__ = ["candidates", "lookup", "lookup_many"]


def lookup(address: str | None) -> Contact | None:
    """The contact for ``address``: exact address, else its domain, else a parent domain."""
    return lookup_many([address]).get(address) if address else None


def by_keys(keys: list[str]) -> Q:
    """The contacts whose address or domain has one of these keys. An address key always
    holds an "@" and a domain key never does, so asking both columns for every key finds
    nothing more than each column asked for its own kind."""
    return Q(address_key__in=keys) | Q(domain_key__in=keys)


# Compiled once per thread, connection and number of keys (decisions 0061, 0068): the
# terms of the query were most of the lookup's cost (issue 9, decision 0057).
_BY_KEYS = CompiledIn(lambda keys: Contact.objects.filter(by_keys(keys)), Contact._meta.get_field("address_key"), up_to=256)


def lookup_many(addresses: list[str | None]) -> dict[str, Contact | None]:
    """`lookup` of each address, in one query for all of them (a FETCH batch's senders:
    decision 0043), by equality of the keys of `core.contactkeys` (decision 0068)."""
    wanted = {a: candidates(a) for a in addresses if a}
    # Each address and domain asked once: a batch's senders share their domains.
    keys: dict[str, None] = {}
    for exact, domains in wanted.values():
        if exact is None:
            continue
        keys[exact] = None
        keys.update(dict.fromkeys(domains))
    found = _BY_KEYS.objects(list(keys)) if keys else []
    by_address: dict[str, Contact] = {}
    by_domain: dict[str, Contact] = {}
    for c in found:
        if c.address_key:
            by_address.setdefault(c.address_key, c)
        if c.domain_key:
            by_domain.setdefault(c.domain_key, c)
    return {
        address: None
        if exact is None
        else by_address.get(exact) or next((by_domain[d] for d in domains if d in by_domain), None)
        for address, (exact, domains) in wanted.items()
    }
