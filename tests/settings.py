"""The tests' settings: the product's, with the secrets a test run may make up.

Outside the demo and the tests Postroom refuses to serve without POSTROOM_SECRET_KEY
(postroom/settings.py); here a fixed test-only key stands in for it.
"""

from __future__ import annotations

import os

os.environ.setdefault("POSTROOM_SECRET_KEY", "tests-only-secret-key-" + "x" * 40)

from postroom.settings import *  # noqa: E402,F403
