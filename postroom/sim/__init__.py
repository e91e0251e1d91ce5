"""The demo simulator: customers who write in, agents who answer from their mail clients.

Used by ``make demo`` (``python -m postroom.sim.run``) and by the end-to-end tests.
"""

from postroom.sim.agents import (
    DEFAULT_TEXTS,
    STYLES,
    AgentClient,
    Style,
    compose_reply,
    is_auto_submitted,
    original_text,
)
from postroom.sim.customers import (
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
