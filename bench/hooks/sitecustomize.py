"""Stamps of IMAP commands for the ingest figures, the same for Postroom and the peer.

The benchmark puts this directory on PYTHONPATH of the process it times and names a file
in BENCH_IMAP_STAMPS; nothing happens without that variable. Both programs speak IMAP
through the standard library's imaplib (Postroom through IMAPClient, which sends every
command with ``imaplib.IMAP4._command``), so one wrapper there sees both:

* the wall-clock time the first FETCH was sent (``first_fetch``): where ingest starts;
  and the process's CPU time then (``first_fetch_cpu``: user + system, reaped children
  included, as /proc counts it), so its CPU per mail leaves out its start-up;
* every STORE and EXPUNGE, with its start and end (``changes``): django-helpdesk marks
  each message it has taken ``\\Deleted`` right after that message's last commit, so the
  start of its last STORE is where its ingest ends, and the time its earlier STOREs took
  is its deleting, left out of the figure as the issue asks.

The stamps are written to the file as JSON when the process exits (or is stopped with
SIGTERM); the wrapper itself costs a time.time() call per command.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import time

_PATH = os.environ.get("BENCH_IMAP_STAMPS")

if _PATH:
    import imaplib

    _stamps: dict = {"first_fetch": None, "changes": []}
    _command = imaplib.IMAP4._command
    _complete = imaplib.IMAP4._command_complete

    def _name(args: tuple) -> str:
        name = str(args[0]).upper() if args else ""
        if name == "UID" and len(args) > 1:
            name = str(args[1]).upper()
        return name

    def _wrapped_command(self, *args):  # type: ignore[no-untyped-def]
        name = _name(args)
        now = time.time()
        if name == "FETCH" and _stamps["first_fetch"] is None:
            _stamps["first_fetch"] = now
            _stamps["first_fetch_cpu"] = sum(os.times()[:4])
        if name in ("STORE", "EXPUNGE"):
            self._bench_change = now
        return _command(self, *args)

    def _wrapped_complete(self, name, tag):  # type: ignore[no-untyped-def]
        try:
            return _complete(self, name, tag)
        finally:
            started = getattr(self, "_bench_change", None)
            if started is not None:
                _stamps["changes"].append([started, time.time()])
                self._bench_change = None

    imaplib.IMAP4._command = _wrapped_command
    imaplib.IMAP4._command_complete = _wrapped_complete

    def _dump() -> None:
        try:
            with open(_PATH, "w") as fh:
                json.dump(_stamps, fh)
        except OSError:
            pass

    atexit.register(_dump)
    _previous = signal.getsignal(signal.SIGTERM)

    def _on_term(signum, frame):  # type: ignore[no-untyped-def]
        _dump()
        if callable(_previous):
            _previous(signum, frame)
        else:
            raise SystemExit(128 + signum)

    # Only where nobody else wants SIGTERM yet; a program that installs its own handler
    # later (postroom engine does) still exits through atexit.
    if _previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_term)
