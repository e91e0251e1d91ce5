"""The tests' settings: the product's, with the secrets a test run may make up.

Outside the demo and the tests Postroom refuses to serve without POSTROOM_SECRET_KEY
(postroom/settings.py); here a fixed test-only key stands in for it.
"""

from __future__ import annotations

import os

os.environ.setdefault("POSTROOM_SECRET_KEY", "tests-only-secret-key-" + "x" * 40)

from postroom.settings import *  # noqa: E402,F403

# A file, not SQLite's shared in-memory database, for the test database: pages tested in a
# real browser are served by a live-server thread while the test writes (a login, a new
# row), and shared-cache table locks fail at once ("database table is locked") where a
# file's locks wait on busy_timeout like production's. On tmpfs, in a directory of this
# process's own (pytest-django adds the xdist worker suffix), removed when it exits.
if DATABASES["default"]["ENGINE"].endswith(("sqlite3", ".sqlite")):  # noqa: F405
    import atexit
    import shutil
    import tempfile

    _shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    _test_db_dir = tempfile.mkdtemp(prefix="postroom-test-", dir=_shm)
    atexit.register(shutil.rmtree, _test_db_dir, True)
    DATABASES["default"]["TEST"] = {"NAME": f"{_test_db_dir}/test.sqlite3"}  # noqa: F405
