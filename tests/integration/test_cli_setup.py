"""The CLI's commands, called in a process where Django already runs (the tests call
`cli.main` in-process; `postroom demo` and the web call `prepare` after start-up), leave
that process's logging alone.

`django.setup()` applies settings.LOGGING at every call: a second call bound the
"postroom" logger to whatever `sys.stderr` was at that moment, in pytest the capture of
the calling test, closed when it ended, so every later test's log line said "Logging
error: I/O operation on closed file".
"""

from __future__ import annotations

import logging

from postroom import cli


def test_setting_django_up_again_keeps_the_loggers_handlers(capsys) -> None:
    before = list(logging.getLogger("postroom").handlers)
    cli.setup_django()
    assert logging.getLogger("postroom").handlers == before
