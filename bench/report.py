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

# Issue 9's targets (and issue 7's chaos figures).
TARGETS = {
    "engine_cpu_ms_per_interaction": ("<=", 10.0, "≤ 10 ms"),
    "engine_cpu_vs_stack": ("<=", 0.5, "≤ 0.5× the stack's CPU"),
    "throughput_vs_ceiling": (">=", 0.6, "≥ 0.6× the ceiling"),
    "latency_p99_vs_floor": ("<=", 1.2, "≤ 1.2× the floor"),
    "ingest_vs_helpdesk_tuned": (">=", 5.0, "≥ 5× helpdesk (tuned)"),
    "ingest_vs_ceiling": (">=", 0.6, "≥ 0.6× the ceiling"),
    "backlog_100k_peak_rss_mb": ("<=", 300.0, "≤ 300 MB"),
    "engine_peak_rss_mb": ("<=", 300.0, "≤ 300 MB"),
    "routing_decision_p99_us": ("<=", 100.0, "≤ 100 µs"),
    "resume_100k_sqlite_s": ("<=", 3.0, "≤ 3 s"),
    "resume_100k_postgres_s": ("<=", 3.0, "≤ 3 s"),
    "chaos_lost": ("<=", 0.0, "0"),
    "chaos_duplicates": ("<=", 0.0, "0"),
    # Issue 10: the secondary takes over within 10 s of the primary's death.
    "failover_s": ("<=", 10.0, "≤ 10 s"),
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
        spec = TARGETS.get(self.name)
        if spec is None and self.name.startswith("page_p95_ms_"):
            spec = ("<=", 200.0, "≤ 200 ms")  # issue 11: every page, 100,000 interactions
        if spec is not None:
            op, bound, text = spec
            self.target = text
            self.target_value = bound
            if isinstance(self.value, int | float):
                self.meets_target = self.value <= bound if op == "<=" else self.value >= bound


def run_kind(meta: dict) -> str:
    if meta.get("quick"):
        return "QUICK smoke run (small counts, not comparable)"
    changed = meta.get("changed_from_full") or {}
    if changed:
        return "reduced run: " + ", ".join(f"{k}={v}" for k, v in changed.items()) + " instead of the full counts"
    return "full run"


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
        f"{run_kind(meta)}, "
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

    floor = v.get("latency_floor_p99_s") if isinstance(v.get("latency_floor_p99_s"), float) else None
    bars(
        axes[0][0],
        ["stack IDLE\np99", "floor", "Postroom\np50", "p90", "p99", "max"],
        [v.get("stack_idle_p99_s"), floor, v.get("latency_p50_s"), v.get("latency_p90_s"),
         v.get("latency_p99_s"), v.get("latency_max_s")],
        ["grey", "dimgrey", "steelblue", "steelblue", "steelblue", "lightsteelblue"],
        "Latency: customer SMTP → agent inbox",
        "seconds",
        1.2 * floor if floor else None,
        "1.2× floor",
    )
    ceiling = v.get("ceiling_interactions_per_s")
    bars(
        axes[0][1],
        ["stack ceiling\n(same mails)", "Postroom\nthroughput", "Postroom\nsustained"],
        [ceiling, v.get("throughput_interactions_per_s"), v.get("sustained_interactions_per_s")],
        ["grey", "steelblue", "lightsteelblue"],
        "Complete interactions per second",
        "interactions / s",
        0.6 * ceiling if isinstance(ceiling, float) else None,
        "60 % of ceiling",
    )
    bars(
        axes[1][0],
        ["stack\nceiling", "helpdesk\n(tuned) acks", "Postroom\nacks", "helpdesk\n(tuned) no acks", "Postroom\nno acks"],
        [v.get("ingest_ceiling_per_s"), v.get("helpdesk_ingest_tuned_per_s"), v.get("postroom_ingest_per_s"),
         v.get("helpdesk_ingest_tuned_noack_per_s"), v.get("postroom_ingest_noack_per_s")],
        ["grey", "darkorange", "steelblue", "darkorange", "steelblue"],
        f"Ingest of the same {meta_n(figures, 'ingest_n')}-mail mailbox",
        "mails / s",
    )
    ax = axes[1][0]
    if isinstance(v.get("helpdesk_ingest_tuned_per_s"), float):
        level = 5 * v["helpdesk_ingest_tuned_per_s"]
        ax.hlines(level, 1.6, 2.4, color="crimson", linestyle="--", linewidth=1)
        ax.text(2, level, "5× helpdesk", color="crimson", ha="center", va="bottom", fontsize=8)
    bars(
        axes[1][1],
        ["resume\nSQLite", "resume\nPostgreSQL"],
        [v.get("resume_100k_sqlite_s"), v.get("resume_100k_postgres_s")],
        ["steelblue", "steelblue"],
        f"Resume with {meta_n(figures, 'resume_n')} live records",
        "seconds to routing again",
        3.0,
        "3 s",
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
    if out_dir.resolve() == Path(__file__).resolve().parent:
        # Written together, so that the README never shows figures results.json does not hold
        # (tests/unit/test_bench_readme.py checks it).
        update_readme(json.loads((out_dir / "results.json").read_text()))


# -- the README's performance table ----------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_BEGIN = "<!-- bench:table begin (generated from bench/results.json by bench/report.py; do not edit) -->"
TABLE_END = "<!-- bench:table end -->"
# The figures the README shows, in this order: issue 9's targets and what they compare.
README_FIGURES = [
    "engine_cpu_ms_per_interaction", "stack_cpu_ms_per_interaction", "engine_cpu_vs_stack",
    "throughput_interactions_per_s", "ceiling_interactions_per_s", "throughput_vs_ceiling",
    "sustained_interactions_per_s", "sustained_latency_p99_s",
    "latency_p99_s", "latency_floor_p99_s", "latency_p99_vs_floor",
    "postroom_ingest_per_s", "helpdesk_ingest_tuned_per_s", "ingest_vs_helpdesk_tuned", "ingest_ceiling_per_s",
    "ingest_vs_ceiling",
    "backlog_100k_per_s", "backlog_100k_peak_rss_mb", "engine_peak_rss_mb",
    "routing_decision_p99_us", "resume_100k_sqlite_s", "resume_100k_postgres_s",
    "chaos_lost", "chaos_duplicates",
    # Issue 10: several nodes on one PostgreSQL.
    "failover_s", "throughput_2_nodes_vs_1", "island_claim_latency_s", "island_claim_latency_p99_s",
    # Issue 11: the live pages' server time at 100,000 interactions, 10,000 open.
    "page_p95_ms_agent_bar", "page_p95_ms_console", "page_p95_ms_console_feed_304", "page_p95_ms_live",
    "page_p95_ms_journal_search", "page_p95_ms_transcript", "page_p95_ms_reports_7_days",
]


def readme_table(doc: dict) -> str:
    """The README's table for one results.json document (its "figures" and "meta")."""
    by_name = {f["name"]: f for f in doc["figures"]}
    meta = doc["meta"]
    out = [
        TABLE_BEGIN,
        f"Run {meta['started']} ({run_kind(meta)}, "
        f"{meta['duration_s'] / 60:.0f} min, {meta.get('cpus')} CPUs); the notes in "
        "[bench/results.md](bench/results.md) say what each figure measured in that run."
        # Phases measured again later (`run.py --add-to`) replace that run's figures: say so.
        + "".join(f" {note}" for note in meta.get("notes", []) if "added to this run's results" in note),
        "",
        "| figure | value | reps (min–max) | compared with | target | met |",
        "| --- | ---: | --- | --- | --- | --- |",
    ]
    for name in README_FIGURES:
        f = by_name.get(name)
        if f is None:
            out.append(f"| `{name}` | not in this run | | | | |")
            continue
        reps = str(f.get("reps") or "")
        spread = f.get("spread")
        if spread and (f.get("reps") or 0) > 1:
            reps += f" ({fmt(spread[0], f['unit'])}–{fmt(spread[1], f['unit'])})"
        compared = f"`{f['compared_name']}`" if f.get("compared_name") else ""
        met = {True: "yes", False: "**no**", None: ""}[f.get("meets_target")]
        value = f"{fmt(f['value'], f['unit'])} {f['unit']}".strip() if f["value"] is not None else "—"
        out.append(f"| `{name}` | {value} | {reps} | {compared} | {f.get('target') or ''} | {met} |")
    out.append(TABLE_END)
    return "\n".join(out)


def readme_section(text: str) -> str:
    """The generated table as the README holds it (markers included)."""
    begin = text.index(TABLE_BEGIN)
    return text[begin : text.index(TABLE_END, begin) + len(TABLE_END)]


def update_readme(doc: dict, readme: Path = README) -> None:
    text = readme.read_text()
    readme.write_text(text.replace(readme_section(text), readme_table(doc)))
