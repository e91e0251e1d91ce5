"""The in-process contact center of the end-to-end tests (`center`), for the few cases here
that check one message at a time rather than running the engine as a process."""

from tests.e2e.conftest import center, make_center  # noqa: F401
