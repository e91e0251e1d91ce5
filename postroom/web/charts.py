"""The reports' charts: drawn on the server with matplotlib as SVG and put in the page as
data: images (the page's policy allows images from data:, nothing inline to run). Each
chart has a text alternative; the table beside it carries the same figures.
"""

from __future__ import annotations

import base64
import functools
import io
import threading
from datetime import date

_lock = threading.Lock()  # matplotlib's font cache and rcParams are process-wide


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    matplotlib.rcParams.update(
        {"svg.fonttype": "none", "svg.hashsalt": "postroom", "font.size": 9,
         "axes.spines.top": False, "axes.spines.right": False}
    )
    return Figure(figsize=(width, height), dpi=96, layout="constrained")


def _svg(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


@functools.lru_cache(maxsize=64)
def trend(days: tuple[date, ...], inbound: tuple[int, ...], outbound: tuple[int, ...]) -> str:
    """Inbound and outbound mail per day, as a data: URI."""
    with _lock:
        fig = _figure(7.5, 2.6)
        ax = fig.subplots()
        x = list(range(len(days)))
        width = 0.4
        ax.bar([i - width / 2 for i in x], inbound, width, label="Inbound", color="#0550ae")
        ax.bar([i + width / 2 for i in x], outbound, width, label="Outbound", color="#1a7f37")
        step = max(1, len(days) // 10)
        ax.set_xticks(x[::step], [d.strftime("%m-%d") for d in days][::step])
        ax.set_ylabel("mails")
        ax.legend(loc="upper left", frameon=False)
        return _svg(fig)


@functools.lru_cache(maxsize=64)
def response_times(
    names: tuple[str, ...], medians: tuple[float, ...], p90s: tuple[float, ...]
) -> str:
    """First-response median and 90th percentile (minutes) per box or agent."""
    with _lock:
        fig = _figure(7.5, max(1.6, 0.45 * len(names) + 0.8))
        ax = fig.subplots()
        y = list(range(len(names)))
        height = 0.38
        ax.barh([i - height / 2 for i in y], medians, height, label="median", color="#0550ae")
        ax.barh([i + height / 2 for i in y], p90s, height, label="90th percentile", color="#bf8700")
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("minutes to first response")
        ax.legend(loc="lower right", frameon=False)
        return _svg(fig)
