"""Writing the results: bench/results.json, bench/results.md, bench/results.png, a table.

``results.json`` holds one object per figure (name, value, unit, and where there is one
the compared value, the target and whether it is met), then the settings and the raw
per-repetition measurements the figures are medians of.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

TARGETS = {
    "latency_p99_vs_floor": ("<=", 1.5, "latency p99 ≤ 1.5× floor"),
    "throughput_vs_ceiling": (">=", 0.6, "throughput ≥ 60 % of ceiling"),
    "ingest_vs_helpdesk": (">=", 10.0, "ingest ≥ 10× helpdesk, with acks"),
    "ingest_noack_vs_helpdesk": (">=", 20.0, "ingest ≥ 20× helpdesk, without acks"),
    "routing_decision_p99_us": ("<=", 100.0, "routing ≤ 100 µs p99"),
    "resume_100k_sqlite_s": ("<=", 5.0, "resume ≤ 5 s"),
    "resume_100k_postgres_s": ("<=", 5.0, "resume ≤ 5 s"),
    "engine_peak_rss_mb": ("<=", 300.0, "RSS ≤ 300 MB"),
    "chaos_lost": ("<=", 0.0, "nothing lost under SIGKILL"),
    "chaos_duplicates": ("<=", 0.0, "nothing doubled under SIGKILL"),
}


@dataclass
class Figure:
    name: str
    value: float | str | None
    unit: str
    compared_name: str | None = None
    compared_value: float | None = None
    reps: int | None = None
    note: str = ""
    # [min, max] over the repetitions, where there were several.
    spread: list[float] | None = None
    target: str | None = field(default=None, init=False)
    target_value: float | None = field(default=None, init=False)
    meets_target: bool | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.value, float) and (math.isnan(self.value) or math.isinf(self.value)):
            self.value = None
        if self.name in TARGETS:
            op, bound, text = TARGETS[self.name]
            self.target = text
            self.target_value = bound
            if isinstance(self.value, int | float):
                self.meets_target = self.value <= bound if op == "<=" else self.value >= bound


def fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    v = float(value)
    if unit == "s" and abs(v) < 10:
        return f"{v:.3f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table_rows(figures: list[Figure]) -> list[list[str]]:
    rows = []
    for f in figures:
        compared = f"{f.compared_name} = {fmt(f.compared_value)}" if f.compared_name else ""
        met = {True: "yes", False: "NO", None: ""}[f.meets_target]
        rows.append([f.name, fmt(f.value, f.unit), f.unit, compared, f.target or "", met, f.note])
    return rows


def console_table(figures: list[Figure]) -> str:
    head = ["figure", "value", "unit", "compared with", "target", "met"]
    rows = [r[:6] for r in table_rows(figures)]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=False))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def markdown(figures: list[Figure], meta: dict) -> str:
    out = [
        "# Postroom benchmark results",
        "",
        f"Run {meta['started']} on {meta['host']} ({meta['cpus']} CPUs), "
        f"{'QUICK smoke run (small counts, not comparable)' if meta['quick'] else 'full run'}, "
        f"took {meta['duration_s'] / 60:.1f} min. Produced by `make bench` (`bench/run.py`).",
        "",
        "Every figure is the median of the repetitions shown; every ratio divides two things "
        "measured in this same run. The mail stack is the project's DevStack (real Dovecot + "
        "Postfix on 127.0.0.1), started by the benchmark; everything shares the machine's "
        "cores, so the figures are for this machine only.",
        "",
        "| figure | value | unit | compared with | target | met | reps (min–max) | note |",
        "| --- | ---: | --- | --- | --- | --- | ---: | --- |",
    ]
    for f, row in zip(figures, table_rows(figures), strict=False):
        reps = str(f.reps or "")
        if f.spread and f.reps and f.reps > 1:
            reps += f" ({fmt(f.spread[0], f.unit)}–{fmt(f.spread[1], f.unit)})"
        cells = row[:6] + [reps, row[6]]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += ["", "## Settings", ""]
    for key, value in meta["settings"].items():
        out.append(f"* `{key}`: {value}")
    if meta.get("notes"):
        out += ["", "## Notes", ""]
        out += [f"* {n}" for n in meta["notes"]]
    out.append("")
    return "\n".join(out)


_COUNTS: dict[str, int] = {}


def meta_n(figures: list[Figure], key: str) -> str:
    n = _COUNTS.get(key)
    return f"{n:,}" if n else "the"


def plot(figures: list[Figure], path: Path) -> str | None:
    """A 2×2 summary figure; None if written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib into the venv)"
    v = {f.name: f.value for f in figures}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle("Postroom benchmark (medians; dashed lines are targets)")

    def bars(ax, labels, values, colors, title, ylabel, target=None, target_label=None):
        vals = [x if isinstance(x, int | float) else 0 for x in values]
        ax.bar(labels, vals, color=colors)
        for i, x in enumerate(values):
            ax.text(i, vals[i], fmt(x), ha="center", va="bottom", fontsize=9)
        if target is not None:
            ax.axhline(target, color="crimson", linestyle="--", linewidth=1)
            if target_label:
                ax.text(len(labels) - 0.5, target, target_label, color="crimson", ha="right", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelsize=8)

    floor = None
    if isinstance(v.get("stack_idle_p99_s"), float) and isinstance(v.get("stack_latency_p99_s"), float):
        floor = v["stack_idle_p99_s"] + v["stack_latency_p99_s"]
    bars(
        axes[0][0],
        ["stack IDLE\np99", "floor", "Postroom\np50", "p90", "p99", "max"],
        [v.get("stack_idle_p99_s"), floor, v.get("latency_p50_s"), v.get("latency_p90_s"),
         v.get("latency_p99_s"), v.get("latency_max_s")],
        ["grey", "dimgrey", "steelblue", "steelblue", "steelblue", "lightsteelblue"],
        "Latency: customer SMTP → agent inbox",
        "seconds",
        1.5 * floor if floor else None,
        "1.5× floor",
    )
    ceiling = v.get("stack_ceiling_msgs_per_s")
    thr = v.get("throughput_interactions_per_s")
    bars(
        axes[0][1],
        ["stack ceiling\nmsg/s", "Postroom\ninteractions/s × 4"],
        [ceiling, thr * 4 if isinstance(thr, float) else None],
        ["grey", "steelblue"],
        "Throughput (complete interactions)",
        "messages / s",
        0.6 * ceiling if isinstance(ceiling, float) else None,
        "60 % of ceiling",
    )
    bars(
        axes[1][0],
        ["helpdesk\nacks", "Postroom\nacks", "helpdesk\nno acks", "Postroom\nno acks"],
        [v.get("helpdesk_ingest_per_s"), v.get("postroom_ingest_per_s"),
         v.get("helpdesk_ingest_noack_per_s"), v.get("postroom_ingest_noack_per_s")],
        ["darkorange", "steelblue", "darkorange", "steelblue"],
        f"Ingest of the same {meta_n(figures, 'ingest_n')}-mail mailbox",
        "mails / s",
    )
    ax = axes[1][0]
    for i, (peer, target) in enumerate((("helpdesk_ingest_per_s", 10), ("helpdesk_ingest_noack_per_s", 20))):
        if isinstance(v.get(peer), float):
            ax.hlines(v[peer] * target, 2 * i + 0.6, 2 * i + 1.4, color="crimson", linestyle="--", linewidth=1)
            ax.text(2 * i + 1, v[peer] * target, f"{target}× helpdesk", color="crimson", ha="center", va="bottom", fontsize=8)
    bars(
        axes[1][1],
        ["resume\nSQLite", "resume\nPostgreSQL"],
        [v.get("resume_100k_sqlite_s"), v.get("resume_100k_postgres_s")],
        ["steelblue", "steelblue"],
        f"Resume with {meta_n(figures, 'resume_n')} live records",
        "seconds to routing again",
        5.0,
        "5 s",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def write(out_dir: Path, figures: list[Figure], meta: dict, details: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    meta.setdefault("host", platform.node())
    _COUNTS.update({k: v for k, v in meta.get("settings", {}).items() if isinstance(v, int)})
    why = plot(figures, out_dir / "results.png")
    if why:
        meta.setdefault("notes", []).append(f"No results.png: {why}.")
    doc = {
        "figures": [asdict(f) for f in figures],
        "meta": meta,
        "details": details,
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(markdown(figures, meta))
