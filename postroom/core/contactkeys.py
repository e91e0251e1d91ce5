"""The one form a contact's address or domain is compared in (decision 0068).

A contact typed into the admin as ``JÖRG@Bücher.example`` and mail from
``jörg@xn--bcher-kva.example`` are the same person: both keys are
``jörg@bücher.example``. The key is what the database compares by equality (an indexed
column of `Contact`), so the match means the same on SQLite, whose LIKE folds ASCII case
only, and on PostgreSQL.

* Case: Unicode full case folding (``str.casefold``) of the NFC form, the caseless match
  of the Unicode standard, language-neutral: ``Ö``/``ö`` and ``ß``/``ss``/``SS`` match;
  Turkish dotted ``İ`` folds to ``i`` + combining dot above (U+0307), so it matches
  ``i̇`` but not a plain ``i`` (no Turkish tailoring: we do not know the writer's language).
* Domains: each ``xn--`` label (IDNA's ASCII form) is decoded to its Unicode form before
  folding, so a domain matches whether it was written in punycode or in Unicode. The
  Unicode form, because the admin types it that way and decoding never fails on a valid
  label (a label that does not decode is kept as written); encoding to ASCII would need
  IDNA's mapping rules, which differ between IDNA 2003 and 2008 (``ß``).
* Trailing dots and a leading ``@`` of a domain are dropped, as are surrounding blanks.
"""

from __future__ import annotations

import unicodedata

__all__ = ["address_key", "candidates", "domain_key"]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


def _label(label: str) -> str:
    if label[:4].lower() == "xn--":
        try:
            return label[4:].encode("ascii").decode("punycode")
        except (UnicodeError, ValueError):
            return label
    return label


def domain_key(domain: str) -> str:
    """``"Bücher.EXAMPLE."`` and ``"xn--bcher-kva.example"`` -> ``"bücher.example"``."""
    domain = domain.strip().removeprefix("@").strip(".")
    return _fold(".".join(_label(label) for label in domain.split(".") if label))


def address_key(address: str) -> str:
    """``"JÖRG@xn--bcher-kva.example"`` -> ``"jörg@bücher.example"``: the local part folded,
    the domain as `domain_key` (text without an ``@`` is only folded)."""
    address = address.strip()
    if "@" not in address:
        return _fold(address)
    local, _, domain = address.rpartition("@")
    return f"{_fold(local)}@{domain_key(domain)}"


def candidates(address: str) -> tuple[str | None, list[str]]:
    """(the address's key, the keys of its domain and parent domains, most specific first).

    ``Ann@A.B.Example.com`` -> ``("ann@a.b.example.com", ["a.b.example.com",
    "b.example.com", "example.com"])``. A bare top-level domain is never a candidate: a
    contact for "com" would be a configuration accident, not a customer.
    """
    if "@" not in address:
        return None, []
    exact = address_key(address)
    domain = exact.rpartition("@")[2]
    labels = [label for label in domain.split(".") if label]
    domains = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    return exact, domains or ([domain] if domain else [])
