"""Crash points for the restart tests: `POSTROOM_CRASH_AT=name` ends the process at once.

`os._exit` skips every cleanup, finally block and commit, exactly like SIGKILL at that
instant; the tests then start the engine again and check that nothing was lost or
doubled. `POSTROOM_PAUSE_AT=name` stops the process there instead (SIGSTOP to itself, the
first time it gets there), as a VM freeze or a stalled process would: the fencing tests
resume it once another node has taken over (decision 0031). Outside tests the variables
are unset and a checkpoint is one dict lookup.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("POSTROOM_CRASH_AT", "")
_PAUSE = {os.environ.get("POSTROOM_PAUSE_AT", "")} - {""}


def checkpoint(name: str) -> None:
    if _TARGET and name == _TARGET:
        os._exit(137)
    if name in _PAUSE:
        _PAUSE.discard(name)
        os.kill(os.getpid(), signal.SIGSTOP)
