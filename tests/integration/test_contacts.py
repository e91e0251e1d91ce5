"""Contacts found by the equality of their keys (decision 0068): one meaning on SQLite and
PostgreSQL (SQLite's LIKE, behind iexact, folded ASCII case only), the keys kept by every
path that writes a contact, filled for the contacts that were there before migration 0016,
and the compiled read (store/compiled.CompiledIn) the same statement and rows as the ORM's."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from postroom.store import contacts
from postroom.store.models import Contact

pytestmark = pytest.mark.django_db


ODD_CONTACTS = [
    {"address": "Ann@Customer.test"}, {"address": "JÖRG@Müller.example"}, {"address": "a_b%c@odd.test"},
    {"address": "aXb1c@odd.test"}, {"address": "back\\slash@odd.test"}, {"address": "o'brien@Quote.test"},
    {"address": "İnci@turk.test"}, {"domain": "xn--bcher-kva.example"}, {"domain": "Example.COM"},
    {"domain": "EU.example.com"}, {"domain": "STRASSE.example"}, {"address": "Dora@Ölfirma.example"},
]
# What each asked address finds: the index into ODD_CONTACTS, or None.
MEANING = {
    "ann@customer.test": 0, "ANN@CUSTOMER.TEST": 0,
    # Non-ASCII case: Ö/ö on both databases (SQLite's LIKE did not fold it).
    "jörg@müller.example": 1, "JÖRG@MÜLLER.EXAMPLE": 1, "jörg@xn--mller-kva.example": 1,
    # LIKE's wildcards and escape character are plain characters of a key.
    "a_b%c@odd.test": 2, "axb1c@odd.test": 3, "a%@odd.test": None, "ab%c@odd.test": None,
    "back\\slash@odd.test": 4, "backxslash@odd.test": None, "back\\\\slash@odd.test": None,
    "O'Brien@quote.test": 5, "o''brien@quote.test": None,
    # Turkish İ folds to i + U+0307 (no Turkish tailoring): it matches itself, not a plain i.
    "i\u0307nci@turk.test": 6, "İnci@TURK.TEST": 6, "inci@turk.test": None,
    # IDN: a domain written in punycode matches the Unicode form and back.
    "x@bücher.example": 7, "x@BÜCHER.example": 7, "x@xn--bcher-kva.example": 7, "x@a.bücher.example": 7,
    "dora@xn--lfirma-vxa.example": 11,
    # Domains and their subdomains, most specific first.
    "x@example.com": 8, "x@a.eu.example.com": 9, "x@EU.EXAMPLE.COM.": 9,
    # ß folds to ss.
    "x@straße.example": 10, "x@strasse.example": 10,
    "nobody": None, "%@%": None, "_@_.__": None, "x@com": None,
}


def make_contacts() -> list[Contact]:
    return [Contact.objects.create(level="gold", **fields) for fields in ODD_CONTACTS]


def test_one_meaning_on_this_database() -> None:
    made = make_contacts()
    found = contacts.lookup_many(list(MEANING))
    assert {a: (made.index(c) if c else None) for a, c in found.items()} == MEANING
    assert {a: contacts.lookup(a) for a in MEANING} == found


def test_the_compiled_read_is_the_orms() -> None:
    """`lookup_many`'s read compiled once per number of keys: the statement and parameters
    the ORM builds for the same keys, the same contacts found (fails if the compiled read
    binds its values anywhere else, e.g. the keys only once for both columns)."""
    make_contacts()
    keys = list(dict.fromkeys(k for a in MEANING for e, ds in [contacts.candidates(a)] if e for k in (e, *ds)))
    for n in range(1, len(keys) + 1):
        for asked in (keys[:n], keys[-n:]):
            with CaptureQueriesContext(connection) as ours:
                mine = contacts._BY_KEYS.objects(asked)
            with CaptureQueriesContext(connection) as orms:
                theirs = list(Contact.objects.filter(contacts.by_keys(asked)))
            assert [q["sql"] for q in ours] == [q["sql"] for q in orms]
            assert [(c.pk, c.address, c.domain, c.address_key, c.domain_key, c.level) for c in mine] == [
                (c.pk, c.address, c.domain, c.address_key, c.domain_key, c.level) for c in theirs
            ]
    assert contacts._BY_KEYS._local.plans[1].fits == 2  # the compiled path ran, both columns bound


def test_every_write_keeps_the_keys() -> None:
    ann = Contact.objects.create(address="Ann@Customer.test")
    firm = Contact(domain="Firm.Test")
    firm.save()
    assert (ann.address_key, firm.domain_key) == ("ann@customer.test", "firm.test")
    ann.address = "ANNA@Customer.test"
    ann.save(update_fields=["address"])
    firm.domain = "xn--bcher-kva.example"
    firm.save(update_fields=["domain", "level"])
    bulk = Contact.objects.bulk_create([Contact(address="Bob@X.test"), Contact(domain="Y.TEST")])
    bulk[0].address = "Bobby@X.test"
    Contact.objects.bulk_update(bulk, ["address"])
    Contact.objects.filter(pk=bulk[1].pk).update(domain="Z.Test")
    keys = dict(Contact.objects.values_list("pk", "address_key"))
    domains = dict(Contact.objects.values_list("pk", "domain_key"))
    assert keys[ann.pk] == "anna@customer.test" and domains[firm.pk] == "bücher.example"
    assert keys[bulk[0].pk] == "bobby@x.test" and domains[bulk[1].pk] == "z.test"
    with pytest.raises(TypeError):
        Contact.objects.update(address=F("name"))


def test_the_admin_form_saves_the_keys(admin_client) -> None:
    response = admin_client.post("/admin/store/contact/add/", {
        "address": "ANN@Bücher.example", "domain": "", "name": "Ann", "level": "vip", "priority": "5", "notes": "",
    })
    assert response.status_code == 302, response.content[:2000]
    assert contacts.lookup("ann@xn--bcher-kva.example").name == "Ann"


def test_the_migration_fills_the_keys_of_existing_contacts() -> None:
    """0016's data migration on this database (SQLite: also test_data_migrations, from
    0015's schema): contacts whose keys are not set get them, as `save` sets them."""
    made = make_contacts()
    Contact.objects.update(address_key=None, domain_key=None)
    assert contacts.lookup_many(list(MEANING)) == {a: None for a in MEANING}
    migration = importlib.import_module("postroom.store.migrations.0016_contact_address_key")
    historic = MigrationLoader(connection).project_state(("store", "0016_contact_address_key")).apps
    migration.fill_keys(historic, SimpleNamespace(connection=connection))
    found = contacts.lookup_many(list(MEANING))
    assert {a: (made.index(c) if c else None) for a, c in found.items()} == MEANING
