"""Keyset pagination: a page ends at a (time, id) pair and the next starts after it.

OFFSET makes the database walk every row before the page (page 2,000 of a 100,000-row
journal reads 100,000 rows); a keyset cursor makes it seek in the index, so every page
costs the same. The cursor is opaque to the browser and checked on the way back in: a
tampered one is no cursor (the first page), never an error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")

__all__ = ["Cursor", "decode", "encode", "split_page"]


@dataclass(frozen=True, order=True)
class Cursor:
    """The last row of a page, newest first: the next page holds rows before it."""

    at: datetime
    id: int


def encode(cursor: Cursor) -> str:
    raw = f"{cursor.at.isoformat()}|{cursor.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str | None) -> Cursor | None:
    """The cursor in `text`, or None for anything that is not one we made."""
    if not text or len(text) > 200:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        at, _, ident = raw.partition("|")
        parsed = datetime.fromisoformat(at)
        number = int(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if parsed.tzinfo is None or number < 0 or number >= 2**63:
        return None
    return Cursor(parsed, number)


def split_page(
    rows: Sequence[T], limit: int, key: Callable[[T], Cursor]
) -> tuple[list[T], Cursor | None]:
    """Rows fetched with LIMIT `limit` + 1: the page, and the cursor of the next page
    (None when this is the last)."""
    page = list(rows[:limit])
    if len(rows) > limit and page:
        return page, key(page[-1])
    return page, None
