"""Full-text search over what Postroom keeps of each interaction's mail (decision 0023).

The mail itself stays on the mail server (decision 0001); for search Postroom keeps, per
interaction, the subject and plain-text excerpts of the customer's mail (at reception) and
of the reply (when it is queued): `InteractionText`. One small interface over two engines:

- SQLite: an FTS5 table kept in step by triggers (migration 0007), queried with MATCH;
- PostgreSQL: a GIN index on ``to_tsvector('simple', ...)`` of the same columns, queried
  through django.contrib.postgres's SearchVector/SearchQuery (the very expression the
  index was built from, so the planner uses it).

People type words; the query is reduced to word tokens (`terms`), each matched as a
prefix, all required. No query syntax reaches either engine, so no input can make it fail.
Case and the common Latin diacritics are folded on both engines ("Zürich" is found as
"zurich"): FTS5's unicode61 tokenizer does it on SQLite; on PostgreSQL the indexed
expression is ``translate(lower(col), FOLD_FROM, FOLD_TO)``, and the query's words get
the same mapping in Python. The kept text itself stays as written (the composer quotes
it when the mail server cannot be asked).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.db import connection
from django.db.models import F, Func, Q, QuerySet, TextField, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Lower
from django.db.models.signals import post_save
from django.dispatch import receiver

from postroom.mail.message import UnreadableMessage, parse
from postroom.store import journal
from postroom.store.compiled import CompiledUpdate
from postroom.store.models import Interaction, InteractionText, Outgoing

log = logging.getLogger(__name__)

__all__ = ["EXCERPT_CHARS", "keep_customer_text", "keep_reply_text", "matching", "terms"]

# How much of each mail's text is kept for search: the start of a mail carries what it is
# about; quoted history further down would only repeat earlier mail.
EXCERPT_CHARS = 20_000
MAX_TERMS = 12
_WORD = re.compile(r"\w+", re.UNICODE)
FTS_COLUMNS = ("subject", "customer_text", "reply_text")


# The letters folded on PostgreSQL (and in queries): Latin letters with diacritics → base.
# Migration 0007 holds a copy for its index; tests check that the two are the same.
FOLD_FROM = "àáâãäåāăąçćčďđèéêëēėęěìíîïīįıłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿźżž"
FOLD_TO = "aaaaaaaaacccddeeeeeeeeiiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz"
_FOLD = str.maketrans(FOLD_FROM, FOLD_TO)


def fold(text: str) -> str:
    """Lower case, common Latin diacritics removed (as the PostgreSQL index does)."""
    return (text or "").lower().translate(_FOLD)


def search_vector():
    """The document PostgreSQL indexes and searches: the same expression in both places."""
    from django.contrib.postgres.search import SearchVector

    def folded(column: str) -> Func:
        return Func(
            Lower(F(column)), Value(FOLD_FROM), Value(FOLD_TO), function="translate",
            output_field=TextField(),
        )

    return SearchVector(*(folded(c) for c in FTS_COLUMNS), config="simple")


def terms(query: str) -> list[str]:
    """The words of a query, folded, each once, at most MAX_TERMS."""
    found = dict.fromkeys(w for w in _WORD.findall(fold(query)) if w.strip("_"))
    return list(found)[:MAX_TERMS]


def fts5_query(words: list[str]) -> str:
    """SQLite FTS5: every word as a quoted prefix (\\w+ needs no escaping inside quotes)."""
    return " AND ".join(f'"{w}"*' for w in words)


def tsquery(words: list[str]) -> str:
    """PostgreSQL raw tsquery: every word as a quoted prefix, all required."""
    return " & ".join(f"'{w}':*" for w in words)


def _excerpt(text: str) -> str:
    return (text or "").replace("\x00", "")[:EXCERPT_CHARS]


def keep_customer_text(ix: Interaction, text: str) -> None:
    """At reception: the subject and the start of the customer's mail, for search."""
    # The interaction is new (reception creates both in one transaction): a plain INSERT,
    # not update_or_create's savepoint, locking SELECT and INSERT (issue 9), with the
    # FETCH batch's others (journal.defer, decision 0043).
    journal.defer(InteractionText(interaction=ix, subject=_excerpt(ix.subject), customer_text=_excerpt(text)))


def _reply_rows(interaction_id: int, text: str) -> QuerySet[InteractionText]:
    return InteractionText.objects.filter(interaction=interaction_id)


def _reply_values(interaction_id: int, text: str) -> dict[str, Any]:
    return {"reply_text": text}


# ``UPDATE store_interactiontext SET reply_text = %s WHERE ….interaction_id = %s``,
# compiled by Django once per thread and connection (a thread's own, the island's) with
# the interaction and the text as its per-call values.
_REPLY_TEXT = CompiledUpdate(InteractionText._meta.get_field("interaction"), InteractionText._meta.get_field("reply_text"))


def _update_reply_text(ix: Interaction, text: str) -> int:
    """``InteractionText.objects.filter(interaction=ix).update(reply_text=text)``: the same
    statement and parameters, compiled once instead of for every reply (decisions 0059,
    0064); on SQLite the FTS5 triggers and on PostgreSQL the fence trigger fire on it as on
    the ORM's. The number of rows changed (0 when there is none yet)."""
    return _REPLY_TEXT.run(None, _reply_rows, _reply_values, ix.pk, text)


def keep_reply_text(ix: Interaction, text: str) -> None:
    """When a reply is queued (from a mail client, the web, or an approver's edit)."""
    updated = _update_reply_text(ix, _excerpt(text))
    if not updated:
        InteractionText.objects.create(
            interaction=ix, subject=_excerpt(ix.subject), reply_text=_excerpt(text)
        )


@receiver(post_save, sender=Outgoing, dispatch_uid="postroom-search-reply")
def _reply_queued(sender: Any, instance: Outgoing, created: bool, **kwargs: Any) -> None:
    """Every reply is an Outgoing row: its text is indexed whichever path queued it."""
    if not created or instance.kind != Outgoing.REPLY or instance.interaction_id is None:
        return
    # The builder that still holds the composed reply passes its text along (decision
    # 0050: parsing the bytes again was a seventh of the outbound box's watcher).
    text: str | None = getattr(instance, "search_text", None)
    if text is None:
        try:
            text = parse(bytes(instance.raw)).text
        except UnreadableMessage as exc:  # we built it; should not happen, never fatal
            log.warning("reply %s: not indexed for search: %s", instance.key, exc)
            return
    keep_reply_text(instance.interaction, text)


def matching(qs: QuerySet[Interaction], query: str) -> QuerySet[Interaction]:
    """The interactions of `qs` whose kept text contains every word of `query` (as a
    prefix). An empty query matches everything."""
    words = terms(query)
    if not words:
        return qs
    vendor = connection.vendor
    if vendor == "sqlite":
        ids = RawSQL(
            "SELECT rowid FROM store_interactiontext_fts WHERE store_interactiontext_fts MATCH %s",
            (fts5_query(words),),
        )
        return qs.filter(pk__in=ids)
    if vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery

        found = (
            InteractionText.objects.annotate(document=search_vector())
            .filter(document=SearchQuery(tsquery(words), search_type="raw", config="simple"))
            .values("interaction_id")
        )
        return qs.filter(pk__in=found)
    # Any other database: slow but right.
    for word in words:
        qs = qs.filter(
            Q(text__subject__icontains=word)
            | Q(text__customer_text__icontains=word)
            | Q(text__reply_text__icontains=word)
        )
    return qs
