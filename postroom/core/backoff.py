"""Retry delays: exponential, capped, with jitter (pure; the caller supplies the randomness).

Jitter spreads the retries of many boxes, or of many engines, that failed at the same
moment (a mail server restart) so they do not all come back in the same second.
"""

from __future__ import annotations


def delay(failures: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after `failures` consecutive failures (1, 2, ...).

    "Equal jitter": half of the exponential step is fixed, half is `jitter` (0 <= jitter <
    1) of it, so the wait never collapses to zero and never exceeds `cap`.
    """
    if failures <= 0:
        return 0.0
    step = min(cap, base * 2 ** min(failures - 1, 30))
    return step / 2 + step / 2 * min(max(jitter, 0.0), 1.0)
