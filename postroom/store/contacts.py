"""Who is writing: the contact database lookup behind priority and approval (fig. 5 318)."""

from __future__ import annotations

import functools

from django.db import connections, router
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
    # (what `|=` term by term built, without copying it at every term), its SQL compiled
    # by Django once per database and number of terms (decision 0061).
    found = _matching(list(exacts), list(domain_set))
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


# Values no address or domain is: where a compiled statement's parameters stand.
_MARK = "postroom-contact-mark-{}.invalid"


def _query(exacts: list[str], domains: list[str]) -> Q:
    terms = [("address__iexact", e) for e in exacts] + [("domain__iexact", d) for d in domains]
    return Q(*terms, _connector=Q.OR)


@functools.lru_cache(maxsize=512)
def _compiled(vendor: str, db: str, exacts: int, domains: int) -> str | None:
    """The SQL of ``Contact.objects.filter(_query(...))`` for that many terms on that
    database, or None when its parameters are not the terms' values in order, each as
    ``prep_for_iexact_query`` gives it (then each lookup is the ORM's own)."""
    marks = [_MARK.format(i) for i in range(exacts + domains)]
    queryset = Contact.objects.using(db).filter(_query(marks[:exacts], marks[exacts:]))
    sql, params = queryset.query.get_compiler(using=db).as_sql()
    ops = connections[db].ops
    return sql if list(params) == [ops.prep_for_iexact_query(m) for m in marks] else None


def _matching(exacts: list[str], domains: list[str]) -> list[Contact]:
    """``list(Contact.objects.filter(_query(exacts, domains)))``: the same statement and
    parameters, without building and compiling its terms at every batch (they were most
    of the lookup: issue 9)."""
    if not exacts and not domains:
        return []
    db = router.db_for_read(Contact)
    connection = connections[db]
    sql = _compiled(connection.vendor, db, len(exacts), len(domains))
    if sql is None:
        return list(Contact.objects.using(db).filter(_query(exacts, domains)))
    params = [connection.ops.prep_for_iexact_query(v) for v in (*exacts, *domains)]
    return list(Contact.objects.using(db).raw(sql, params))
