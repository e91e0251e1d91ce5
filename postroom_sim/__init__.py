"""The demo simulator: customers who write in, agents who answer from their mail clients.

A package of its own beside `postroom`, not inside it: the product never runs on it (an
import-linter contract says so); only `postroom demo` starts it, lazily, and the tests
and benchmarks drive it as the outside world.

Used by ``make demo`` (``python -m postroom_sim.run``) and by the end-to-end tests.
"""

from postroom_sim.agents import (
    DEFAULT_TEXTS,
    STYLES,
    AgentClient,
    Style,
    compose_reply,
    is_auto_submitted,
    original_text,
)
from postroom_sim.customers import (
    SAMPLES_DIR,
    CustomerSimulator,
    prepare_customer_mail,
    sample_paths,
    send_customer_mail,
)

__all__ = [
    "DEFAULT_TEXTS",
    "SAMPLES_DIR",
    "STYLES",
    "AgentClient",
    "CustomerSimulator",
    "Style",
    "compose_reply",
    "is_auto_submitted",
    "original_text",
    "prepare_customer_mail",
    "sample_paths",
    "send_customer_mail",
]
