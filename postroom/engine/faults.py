"""Crash points for the restart tests: `POSTROOM_CRASH_AT=name` ends the process at once.

`os._exit` skips every cleanup, finally block and commit, exactly like SIGKILL at that
instant; the tests then start the engine again and check that nothing was lost or
doubled. Outside tests the variable is unset and a checkpoint is one dict lookup.
"""

from __future__ import annotations

import os

_TARGET = os.environ.get("POSTROOM_CRASH_AT", "")


def checkpoint(name: str) -> None:
    if _TARGET and name == _TARGET:
        os._exit(137)
