"""Where a transcript finds the bytes of each message.

Postroom's own mail is in the database as it was sent (`Outgoing.raw`; held replies in
`Approval.raw`). The customer's mail is on the mail server (decision 0001): read there,
read-only (`postroom.mail.lookup`), when the web knows the site's file (settings
.POSTROOM_CONFIG: `postroom run` sets it); else, or once the server no longer has it,
from the copy Postroom forwarded to the agent, which carries the customer's body and
attachments unchanged. A small in-process cache spares the server a login per frame and
per attachment of the same page.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from postroom.config import Config, ConfigInvalid, load_config
from postroom.mail.imap import ImapAccount
from postroom.mail.lookup import fetch_message
from postroom.store.models import Interaction, InteractionText, Outgoing
from postroom.store.oauth2 import current_access_token

__all__ = ["Copy", "customer_copy", "customer_excerpt"]

CACHE_ENTRIES = 16
CACHE_MAX_BYTES = 5_000_000


@dataclass(frozen=True)
class Copy:
    raw: bytes
    # Where it was read, for the reader: "mail server", "forwarded copy".
    source: str


_cache: OrderedDict[str, Copy] = OrderedDict()
_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _config(path: str, mtime: float) -> Config | None:
    try:
        return load_config(path)
    except (ConfigInvalid, OSError):
        return None


def _site_config() -> Config | None:
    path = getattr(settings, "POSTROOM_CONFIG", "")
    if not path:
        return None
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return None
    return _config(path, mtime)


def _cafile(config: Config) -> str | None:
    cafile = config.server.cafile
    if cafile == "system":
        return None
    if cafile == "devstack":
        from postroom.devstack.cli import default_state_dir
        from postroom.devstack.stack import DevStack

        base = config.devstack.base_port if config.devstack else 21000
        return str(DevStack(default_state_dir(), base_port=base).cafile)
    return cafile


def _from_server(ix: Interaction) -> bytes | None:
    config = _site_config()
    if config is None:
        return None
    box = ix.mailbox
    login = box.login or box.address
    password = config.mail_passwords().get(box.address.lower())
    # A box on OAuth2: the engine keeps its access token fresh; the web only reads it.
    token = current_access_token(login, timezone.now()) if login.lower() in config.oauth2_logins() else None
    if not password and not token:
        return None
    account = ImapAccount(
        host=config.server.imap_host,
        port=config.server.imap_port,
        tls=config.server.imap_tls,
        login=login,
        password=password or "",
        folder=box.folder,
        cafile=_cafile(config),
        timeout=10.0,
        token=(lambda: token) if token else None,
    )
    return fetch_message(
        account,
        # Where the engine files finished mail (the archive) and discarded mail (the trash).
        folders=(box.folder, box.archive_folder or "Postroom-Archive", box.trash_folder or "Trash"),
        uidvalidity=ix.uidvalidity,
        uid=ix.uid,
        message_id=ix.message_id or None,
    )


def customer_copy(ix: Interaction) -> Copy | None:
    """The customer's mail of `ix`, or None when neither the server nor a forward has it."""
    key = str(ix.guid)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    raw = _from_server(ix)
    copy = Copy(raw, "mail server") if raw is not None else None
    if copy is None:
        forward = (
            Outgoing.objects.filter(interaction=ix, kind=Outgoing.FORWARD).order_by("-id").first()
        )
        if forward is not None:
            copy = Copy(bytes(forward.raw), "forwarded copy")
    if copy is not None and len(copy.raw) <= CACHE_MAX_BYTES:
        with _lock:
            _cache[key] = copy
            while len(_cache) > CACHE_ENTRIES:
                _cache.popitem(last=False)
    return copy


def customer_excerpt(ix: Interaction) -> str:
    """The start of the customer's text as kept for search (decision 0023): what is left
    to quote when neither the server nor a forward has the mail."""
    found = InteractionText.objects.filter(interaction=ix).values_list("customer_text", flat=True)
    return found.first() or ""
