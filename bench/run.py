"""`make bench`: every benchmark figure of issue 4 on the local mail stack, in one run.

    python bench/run.py [--quick] [--only PHASES] [--keep] [--out DIR]

Starts its own DevStack (base port 21500, state under a short temp dir in /tmp), gives
every phase fresh mailboxes, its own database and config TOML, runs Postroom as
``.venv/bin/postroom engine CONFIG``, and stops everything it started at the end (by pid).
Writes results.json, results.md and results.png (into bench/ unless --out) and prints a
table. --quick runs small counts (a smoke test of the harness in about a minute); its
figures are not comparable. Phases: stack, latency, throughput, ingest, resume, routing, chaos,
pages, failover and nodes (issue 10: several nodes on one PostgreSQL, bench/redundancy.py).
Timing is never asserted anywhere: this reports, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chaos as chaos_mod  # noqa: E402
from bench import island as island_mod  # noqa: E402
from bench import peer as peer_mod  # noqa: E402
from bench import postroom_runs as pr  # noqa: E402
from bench import redundancy as nodes_mod  # noqa: E402
from bench import report  # noqa: E402
from bench import stack as stack_mod  # noqa: E402
from bench.common import BASE_PORT, BENCH, CUSTOMERS, PY, ROOT, Stack, log, make_messages, median  # noqa: E402
from bench.report import Figure  # noqa: E402
from postroom.config.schema import OutboxConfig  # noqa: E402

PHASES = (
    "stack", "latency", "sustained", "throughput", "ingest", "backlog", "resume", "routing", "pages", "chaos",
    "failover", "nodes", "island",
)

FULL = {
    "stack_reps": 3, "stack_latency_n": 200, "stack_idle_n": 200, "floor_n": 300,
    "pattern_reps": 3, "pattern_n": 1000, "pattern_agents": 4,
    "latency_reps": 1, "latency_n": 1000, "latency_rate_per_s": 10.0, "latency_agents": 2,
    "sustained_rates": [2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0], "sustained_step_s": 30.0, "sustained_drain_s": 60.0,
    "throughput_reps": 1, "throughput_n": 2000, "throughput_agents": 4,
    "ingest_n": 1000, "ingest_reps": 3,
    "backlog_n": 100_000,
    "resume_n": 100_000, "resume_reps": 3,
    "routing_args": ["--queued", "100000", "--agents", "2000", "--skills", "20"],
    "chaos_customers": 1000, "chaos_kills": 50, "chaos_seed": 2026,
    "pages_args": ["--interactions", "100000", "--open", "10000", "--agents", "200", "--reps", "30"],
    "island_n": 200, "island_gap": 0.25, "island_reps": 3, "island_shared_with": "",
    "failover_reps": 3, "nodes_n": 500, "nodes_reps": 3, "nodes_agents": 4, "nodes_shared_with": "",
}
QUICK = {
    "stack_reps": 1, "stack_latency_n": 40, "stack_idle_n": 40, "floor_n": 40,
    "pattern_reps": 1, "pattern_n": 50, "pattern_agents": 4,
    "latency_reps": 1, "latency_n": 50, "latency_rate_per_s": 10.0, "latency_agents": 2,
    "sustained_rates": [2.0, 4.0], "sustained_step_s": 5.0, "sustained_drain_s": 30.0,
    "throughput_reps": 1, "throughput_n": 50, "throughput_agents": 4,
    "ingest_n": 50, "ingest_reps": 1,
    "backlog_n": 500,
    "resume_n": 2000, "resume_reps": 1,
    "routing_args": ["--queued", "2000", "--agents", "50", "--skills", "5"],
    "chaos_customers": 40, "chaos_kills": 6, "chaos_seed": 2026,
    "pages_args": ["--interactions", "5000", "--open", "500", "--agents", "20", "--reps", "5"],
    "island_n": 20, "island_gap": 0.25, "island_reps": 1, "island_shared_with": "",
    "failover_reps": 1, "nodes_n": 40, "nodes_reps": 1, "nodes_agents": 4, "nodes_shared_with": "",
}
# The SMTP sessions the engine's outbox sends over ([outbox] sessions, its default, which
# the bench's configs keep): the ceiling's contact-center side gets as many.
POSTROOM_SMTP_CONNECTIONS = OutboxConfig().sessions

PG_STATE = "/tmp/postroom-bench-pg"
PG_PORT = 21096

def method_notes(cfg: dict) -> list[str]:
    """What this run measured, from its own settings (nothing static)."""
    c = cfg
    return [
        f"Repetitions: stack {c['stack_reps']} (latency, IDLE, floor), pattern ceiling {c['pattern_reps']}, "
        f"latency {c['latency_reps']}, throughput {c['throughput_reps']}, ingest {c['ingest_reps']} for every "
        f"variant (Postroom, helpdesk stock, helpdesk tuned; with and without auto-responses), resume "
        f"{c['resume_reps']}, sustained / backlog / routing / chaos 1.",
        "Messages: the 12 bundled customer samples (postroom_sim/samples, 0.4-3.8 KB), re-addressed, cycled, "
        "each from a sender of its own (plus-addressed to five customer boxes), with a `[bench …]` marker in the "
        "Subject; the stack's own figures use the same set.",
        f"Latency floor: the p99 of the combined path (customer mail to the MX → IDLE notice → FETCH → one "
        f"authenticated STARTTLS submission, journal box included → visible in the agent's box), by a minimal "
        f"IMAPClient forwarder, at the latency run's rate ({c['latency_rate_per_s']:g}/s, {c['floor_n']} mails per rep).",
        f"Ceiling: the five mails of {c['pattern_n']} complete interactions prebuilt with Postroom's composers "
        f"(customer mail to the MX; auto-response, forward, reply submitted as the contact center with the journal "
        f"box as one more recipient each; the agent's reply submitted as the agent), over "
        f"{POSTROOM_SMTP_CONNECTIONS} contact-center session(s) (what the engine's outbox uses), one per agent "
        f"({c['pattern_agents']}), one to the MX, all on the ports, TLS and auth Postroom uses; first byte → every "
        f"copy visible. Counted as 5 SMTP transactions and 8 deliveries per interaction (3 journal copies).",
        "CPU per interaction: user+system CPU of the process trees (/proc/PID/stat utime+stime+cutime+cstime), for "
        "the engine (`postroom engine`) and for the stack (Dovecot's and Postfix's masters and every process under "
        "them), read before and after the run. `engine_cpu_vs_stack` divides the engine's CPU per interaction in "
        "the throughput run by the stack's CPU per interaction in the pattern ceiling run (the stack's own cost of "
        "the same mails, without anybody's IMAP polling: the stricter denominator); the stack's CPU in the "
        "throughput run itself is reported too (it includes the simulated agents' and the benchmark's polling).",
        f"Sustained: one engine, {c['throughput_agents']} replying agents, open-loop "
        f"steps of {c['sustained_step_s']:g} s at rates {', '.join(f'{r:g}' for r in c['sustained_rates'])}/s; a rate "
        f"holds when every forward reached an agent with p99 ≤ 2× the floor and every interaction of the step had "
        f"its auto-response and reply sent within {c['sustained_drain_s']:g} s of the step's end.",
        "Ingest: both sides timed from their first IMAP FETCH (stamped by bench/hooks/sitecustomize.py in the "
        "process) to their last commit: Postroom's last auto-response recorded sent (or interaction recorded, "
        "without auto-responses); helpdesk's start of its last STORE \\\\Deleted (it stores each after that "
        "message's commit), minus the time its earlier STOREs took (its deleting). Headline ratio: helpdesk "
        "`tuned` (Postroom's SQLite settings: WAL, synchronous=FULL; acknowledgements over authenticated STARTTLS "
        "submission like Postroom's). `stock` = Django's default SQLite and plain SMTP to the MX.",
        f"Ingest ceiling: a minimal IMAPClient reading the same {c['ingest_n']} mails in FETCH batches of 50 and "
        f"submitting a prebuilt auto-response for each (journal copy included) over {POSTROOM_SMTP_CONNECTIONS} kept "
        "session(s): first FETCH → last 250.",
        f"Backlog: {c['backlog_n']:,} mails written into the box's Maildir before the engine starts "
        "(auto-responses off); first FETCH → all recorded; peak RSS (VmHWM).",
        "Routing: `routing_decision_p99_us` is the p99 of the decisions that routed an item (calls that routed "
        "nothing are reported apart, as `routing_decision_any_p99_us`).",
    ]


def reap_stale() -> None:
    """Stop and remove what an earlier, killed run of the benchmark left behind: its
    stack (by the pids in its state dir) and its temp dir; nothing of a live run."""
    from postroom.devstack import DevStack, DevStackError

    for work in Path("/tmp").glob("prb-*"):
        marker = work / "owner.pid"
        try:
            owner = int(marker.read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        if (work / "stack").is_dir():
            try:
                DevStack(work / "stack").stop()
            except DevStackError as exc:
                log(f"could not stop the stale stack in {work}: {exc}")
                continue
        log(f"removed the leftovers of an earlier run: {work}")
        shutil.rmtree(work, ignore_errors=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cfg = dict(QUICK if args.quick else FULL)
        for item in args.set:
            key, _, value = item.partition("=")
            if key not in self.cfg:
                raise SystemExit(f"--set {key}: no such setting ({', '.join(self.cfg)})")
            self.cfg[key] = json.loads(value)
        self.phases = [p for p in (args.only.split(",") if args.only else PHASES) if p]
        self.raw: dict = {}
        self.notes: list[str] = method_notes(self.cfg)
        self.errors: dict[str, str] = {}
        reap_stale()
        self.work = Path(tempfile.mkdtemp(prefix="prb-", dir="/tmp"))
        (self.work / "owner.pid").write_text(str(os.getpid()))
        self.stack = Stack.create(self.work / "stack", args.base_port)
        self.pg_started = False

    # -- phases ----------------------------------------------------------------------
    def phase(self, name: str, fn) -> None:
        if name not in self.phases:
            return
        t0 = time.monotonic()
        self.raw.setdefault("phase_load", {})[name] = os.getloadavg()[0]
        log(f"== {name}")
        try:
            fn()
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"phase {name} FAILED:\n{traceback.format_exc()}")
        self.raw.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t0, 1)

    def run_stack(self) -> None:
        c = self.cfg
        out = self.raw["stack"] = stack_mod.measure(
            self.stack, reps=c["stack_reps"], latency_n=c["stack_latency_n"], idle_n=c["stack_idle_n"],
        )
        out["floor"] = [stack_mod.floor_run(self.stack, r, c["floor_n"], c["latency_rate_per_s"])
                        for r in range(c["stack_reps"])]
        out["pattern"] = [stack_mod.pattern_run(self.stack, r, c["pattern_n"], POSTROOM_SMTP_CONNECTIONS,
                                                c["pattern_agents"])
                          for r in range(c["pattern_reps"])]

    def run_latency(self) -> None:
        c = self.cfg
        self.raw["latency"] = [
            pr.latency_run(self.stack, self.work / f"latency-{r}", r, c["latency_n"],
                           c["latency_rate_per_s"], c["latency_agents"])
            for r in range(c["latency_reps"])
        ]

    def floor_p99(self) -> float | None:
        floors = (self.raw.get("stack") or {}).get("floor") or []
        return median(f["p99_s"] for f in floors) if floors else None

    def run_sustained(self) -> None:
        c = self.cfg
        floor = self.floor_p99()
        self.raw["sustained"] = pr.sustained_run(
            self.stack, self.work / "sustained", c["sustained_rates"], c["sustained_step_s"], c["sustained_drain_s"],
            2 * floor if floor else None, agents=c["throughput_agents"],
        )

    def run_throughput(self) -> None:
        c = self.cfg
        self.raw["throughput"] = [
            pr.throughput_run(self.stack, self.work / f"throughput-{r}", r, c["throughput_n"], c["throughput_agents"])
            for r in range(c["throughput_reps"])
        ]

    def run_ingest(self) -> None:
        c = self.cfg
        box = "ingest@example.test"
        self.stack.user(box, "pw-ingest")
        raws = [raw for _m, raw in make_messages(c["ingest_n"], box, "I")]
        version = peer_mod.ensure_venv()
        peer = peer_mod.Peer(self.stack, self.work / "peer", box)
        peer.prepare()
        out = self.raw["ingest"] = {"helpdesk_version": version, "postroom": {"ack": [], "noack": []},
                                    "helpdesk": {"ack": [], "noack": []},
                                    "helpdesk_tuned": {"ack": [], "noack": []}, "ceiling": []}
        # Round robin, every variant the same number of times, so slow drift of the
        # machine spreads over all sides.
        for r in range(c["ingest_reps"]):
            for ack in (True, False):
                mode = "ack" if ack else "noack"
                out["postroom"][mode].append(
                    pr.ingest_run(self.stack, self.work / f"ingest-{mode}-{r}", box, raws, ack, r))
                out["helpdesk"][mode].append(peer.ingest_run(raws, ack, r, "stock"))
                out["helpdesk_tuned"][mode].append(peer.ingest_run(raws, ack, r, "tuned"))
            out["ceiling"].append(stack_mod.ingest_ceiling_run(self.stack, box, raws, r, POSTROOM_SMTP_CONNECTIONS))

    def run_backlog(self) -> None:
        c = self.cfg
        raws = [raw for _m, raw in make_messages(120, "backlog-support@example.test", "B")]
        self.raw["backlog"] = pr.backlog_run(self.stack, self.work / "backlog", raws, c["backlog_n"])

    def run_resume(self) -> None:
        c = self.cfg
        res = self.raw["resume"] = {}
        site = pr.resume_prepare(self.stack, self.work / "resume-sqlite", "ressq", c["resume_n"])
        res["sqlite"] = [pr.resume_run(site, r) for r in range(c["resume_reps"])]
        url = self.start_pg()
        site = pr.resume_prepare(self.stack, self.work / "resume-pg", "respg", c["resume_n"], database_url=url)
        res["postgres"] = [pr.resume_run(site, r) for r in range(c["resume_reps"])]
        self.stop_pg()

    def run_routing(self) -> None:
        script = BENCH / "routing.py"
        if not script.exists():
            self.raw["routing"] = None
            self.notes.append("bench/routing.py does not exist yet: routing figures missing.")
            return
        out = self.work / "routing.json"
        cmd = [PY, str(script), *self.cfg["routing_args"], "--json", str(out)]
        log(" ".join(cmd))
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"bench/routing.py failed ({result.returncode}): {result.stderr[-2000:]}")
        self.raw["routing"] = json.loads(out.read_text())

    def run_chaos(self) -> None:
        c = self.cfg
        self.raw["chaos"] = chaos_mod.chaos_run(
            self.stack, self.work / "chaos", c["chaos_customers"], c["chaos_kills"], c["chaos_seed"]
        )
    def run_pages(self) -> None:
        """Issue 11: server time of each page at 100,000 interactions, 10,000 open (SQLite)."""
        out = self.work / "pages.json"
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["DATABASE_URL"] = f"sqlite:///{self.work}/pages.sqlite3"
        cmd = [PY, str(BENCH / "pages.py"), *self.cfg["pages_args"], "--json", str(out)]
        log(" ".join(cmd))
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=1800, env=env)
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"bench/pages.py failed ({result.returncode}): {result.stderr[-2000:]}")
        self.raw["pages"] = json.loads(out.read_text())

    def run_failover(self) -> None:
        url = self.start_pg()
        self.raw["failover"] = [
            nodes_mod.failover_run(self.stack, self.work / f"failover-{r}", r, url) for r in range(self.cfg["failover_reps"])
        ]
        self.stop_pg()

    def run_nodes(self) -> None:
        c = self.cfg
        url = self.start_pg()
        out = self.raw["nodes"] = {"1": [], "2": []}
        for r in range(c["nodes_reps"]):  # one node, then two, in turn
            for nodes in (1, 2):
                out[str(nodes)].append(nodes_mod.nodes_throughput_run(
                    self.stack, self.work / f"nodes{nodes}-{r}", r, c["nodes_n"], c["nodes_agents"], nodes, url))
        self.stop_pg()

    def start_pg(self) -> str:
        """A fresh throwaway PostgreSQL (postroom.devstack.postgres); its URL."""
        started = time.monotonic()
        self.pg_started = True
        self.stop_pg()  # a cluster left by a killed run would hold its old data
        self.pg_started = True
        port = str(self.args.pg_port)
        result = subprocess.run(
            [PY, "-m", "postroom.devstack.postgres", "start", "--state", f"{PG_STATE}-{port}", "--port", port],
            cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180,
        )
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr[-2000:]}")
        url = result.stdout.strip().splitlines()[-1]
        log(f"PostgreSQL up in {time.monotonic() - started:.1f} s: {url}")
        return url
    def run_island(self) -> None:
        c = self.cfg
        self.raw["island"] = [
            island_mod.claim_latency_run(self.stack, f"b{r}", c["island_n"], c["island_gap"]) for r in range(c["island_reps"])
        ]

    def stop_pg(self) -> None:
        if self.pg_started:
            port = str(self.args.pg_port)
            subprocess.run(
                [PY, "-m", "postroom.devstack.postgres", "destroy", "--state", f"{PG_STATE}-{port}", "--port", port],
                cwd=ROOT, capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
            )
            self.pg_started = False

    # -- the whole run ---------------------------------------------------------------
    def run(self) -> int:
        started = time.time()
        self.load_start = os.getloadavg()
        t0 = time.monotonic()
        try:
            if "ingest" in self.phases:
                peer_mod.ensure_venv()  # before the clock of any phase: pip may take a while
            log(f"mail stack in {self.stack.dev.state_dir}, base port {self.stack.dev.base_port}")
            self.stack.start()
            self.stack.add((a, f"pw-{a.split('@')[0]}") for a in CUSTOMERS)
            self.phase("stack", self.run_stack)
            self.phase("latency", self.run_latency)
            self.phase("sustained", self.run_sustained)
            self.phase("throughput", self.run_throughput)
            self.phase("ingest", self.run_ingest)
            self.phase("backlog", self.run_backlog)
            self.phase("resume", self.run_resume)
            self.phase("routing", self.run_routing)
            self.phase("chaos", self.run_chaos)
            self.phase("pages", self.run_pages)
            self.phase("island", self.run_island)
            self.phase("failover", self.run_failover)
            self.phase("nodes", self.run_nodes)
        finally:
            try:
                self.stop_pg()
            finally:
                self.stack.stop()
                if not self.args.keep:
                    shutil.rmtree(self.work, ignore_errors=True)
                else:
                    (self.work / "owner.pid").unlink(missing_ok=True)  # not to be reaped
                    log(f"kept {self.work}")
        duration = time.monotonic() - t0
        figures = self.figures()
        load0, load1 = self.load_start, os.getloadavg()
        self.notes.append(
            f"Machine load (1/5/15-min averages): {'/'.join(f'{x:.2f}' for x in load0)} at the start, "
            f"{'/'.join(f'{x:.2f}' for x in load1)} at the end, on {os.cpu_count()} cores shared with other "
            "work: every process of the run (engine, stack, clients, other users) competes for them. "
            "1-min load as each phase began: "
            + ", ".join(f"{k} {v:.1f}" for k, v in self.raw.get("phase_load", {}).items()) + "."
        )
        meta = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "duration_s": round(duration, 1),
            "quick": self.args.quick,
            "changed_from_full": changed_from_full(self.cfg, self.args.quick),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "settings": {k: v for k, v in self.cfg.items()},
            "phase_seconds": self.raw.get("phase_seconds", {}),
            "errors": self.errors,
            "notes": self.notes + [f"phase {k} failed: {v}" for k, v in self.errors.items()],
        }
        if self.args.add_to:
            return add_to(self.args.add_to, self.args.out, self.phases, self.raw, meta)
        report.write(self.args.out, figures, meta, self.raw)
        print(report.console_table(figures))
        print(f"\n{len(figures)} figures in {duration / 60:.1f} min; "
              f"{self.args.out / 'results.json'}, results.md, results.png")
        return 1 if self.errors else 0

    # -- figures ---------------------------------------------------------------------
    def figures(self) -> list[Figure]:
        F = self._figures()
        spreads = self._spreads()
        for f in F:
            if f.name in spreads and f.reps and f.reps > 1:
                f.spread = spreads[f.name]
        return F

    def _spreads(self) -> dict[str, list[float]]:
        """[min, max] over the repetitions of the figures that are medians of raw values."""
        raw = self.raw
        out: dict[str, list[float]] = {}

        def put(name: str, values) -> None:
            vals = [v for v in values if isinstance(v, int | float)]
            if vals:
                out[name] = [min(vals), max(vals)]

        st = raw.get("stack") or {}
        for key, name in (("latency_p50_s", "stack_latency_p50_s"), ("latency_p99_s", "stack_latency_p99_s"),
                          ("idle_p50_s", "stack_idle_p50_s"), ("idle_p99_s", "stack_idle_p99_s")):
            put(name, (r.get(key) for r in st.get("reps", [])))
        put("latency_floor_p99_s", (f["p99_s"] for f in st.get("floor", [])))
        pat = st.get("pattern", [])
        put("ceiling_interactions_per_s", (p["interactions_per_s"] for p in pat))
        put("stack_cpu_ms_per_interaction", (1000 * p["stack_cpu_s"] / p["n"] for p in pat))
        thr = raw.get("throughput") or []
        put("throughput_interactions_per_s", (r["interactions_per_s"] for r in thr))
        put("engine_cpu_ms_per_interaction", (1000 * r["engine_cpu_s"] / r["n"] for r in thr))
        ing = raw.get("ingest") or {}
        for side, prefix in (("postroom", "postroom_ingest"), ("helpdesk", "helpdesk_ingest"),
                             ("helpdesk_tuned", "helpdesk_ingest_tuned")):
            for mode, suffix in (("ack", "_per_s"), ("noack", "_noack_per_s")):
                put(prefix + suffix, (r["per_s"] for r in ing.get(side, {}).get(mode, [])))
        put("ingest_ceiling_per_s", (r["per_s"] for r in ing.get("ceiling", [])))
        for db in ("sqlite", "postgres"):
            put(f"resume_100k_{db}_s", (r["seconds"] for r in (raw.get("resume") or {}).get(db, [])))
        put("failover_s", (r.get("seconds") for r in raw.get("failover") or []))
        isl = island_runs(raw)
        put("island_claim_latency_s", (r.get("p50_s") for r in isl))
        put("island_claim_latency_p99_s", (r.get("p99_s") for r in isl))
        nd = raw.get("nodes") or {}
        put("throughput_1_node_pg_per_s", (r["interactions_per_s"] for r in nd.get("1") or []))
        put("throughput_2_nodes_pg_per_s", (r["interactions_per_s"] for r in nd.get("2") or []))
        put("throughput_2_nodes_vs_1", paired_ratios(nd))
        return out

    def peak_rss(self) -> dict[str, float]:
        """Engine VmHWM (MB) by phase: the largest of each phase's runs."""
        raw = self.raw
        runs: dict[str, list] = {
            "latency": raw.get("latency") or [],
            "sustained": [raw["sustained"]] if raw.get("sustained") else [],
            "throughput": raw.get("throughput") or [],
            "ingest": [r for m in ("ack", "noack") for r in ((raw.get("ingest") or {}).get("postroom") or {}).get(m, [])],
            "backlog": [raw["backlog"]] if raw.get("backlog") else [],
        }
        for db, rs in (raw.get("resume") or {}).items():
            runs[f"resume-{db}"] = rs
        out = {}
        for phase, rs in runs.items():
            vals = [r.get("engine_peak_rss_mb") for r in rs if isinstance(r.get("engine_peak_rss_mb"), int | float)]
            if vals:
                out[phase] = max(vals)
        return out

    def _figures(self) -> list[Figure]:  # noqa: C901 - one list, in the order of the report
        F: list[Figure] = []
        raw = self.raw
        c = self.cfg
        missing = lambda phase: "not run" if phase not in self.phases else f"failed: {self.errors.get(phase, '?')}"  # noqa: E731
        ratio = lambda a, b: a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None  # noqa: E731

        # -- the stack alone
        st = raw.get("stack")
        reps = st["reps"] if st else []
        med = lambda key: median(r.get(key) for r in reps) if reps else None  # noqa: E731
        n_st = len(reps) or None
        note = "" if st else missing("stack")
        floors = (st or {}).get("floor") or []
        floor = median(f["p99_s"] for f in floors) if floors else None
        pat = (st or {}).get("pattern") or []
        ceiling = median(p["interactions_per_s"] for p in pat) if pat else None
        stack_ms = median(1000 * p["stack_cpu_s"] / p["n"] for p in pat) if pat else None
        F += [
            Figure("stack_latency_p50_s", med("latency_p50_s"), "s", reps=n_st, note=note or "SMTP 250 → STATUS sees it (2 ms polls)"),
            Figure("stack_latency_p99_s", med("latency_p99_s"), "s", reps=n_st, note=note),
            Figure("stack_idle_p50_s", med("idle_p50_s"), "s", reps=n_st, note=note or "SMTP 250 → * N EXISTS in IDLE"),
            Figure("stack_idle_p99_s", med("idle_p99_s"), "s", reps=n_st, note=note),
            Figure("latency_floor_p99_s", floor, "s", reps=len(floors) or None,
                   note=note or f"combined path (IDLE notice → FETCH → STARTTLS submission → visible) at "
                                f"{c['latency_rate_per_s']:g}/s, {c['floor_n']} mails"),
            Figure("ceiling_interactions_per_s", ceiling, "interactions/s", reps=len(pat) or None,
                   note=note or f"the 5 mails (+3 journal copies) of {c['pattern_n']} interactions, same ports/TLS/auth, "
                                f"{pat[0]['connections'] if pat else '?'} connections"),
            Figure("stack_cpu_ms_per_interaction", stack_ms, "ms", reps=len(pat) or None,
                   note=note or "Dovecot + Postfix process trees' CPU in the ceiling run ÷ interactions"),
        ]

        # -- latency
        lat = raw.get("latency") or []
        n_lat = len(lat) or None
        note = "" if lat else missing("latency")
        lp = lambda key: median(r[key] for r in lat) if lat else None  # noqa: E731
        p99 = lp("p99")
        F += [
            Figure("latency_p50_s", lp("p50"), "s", reps=n_lat,
                   note=note or f"{c['latency_n']} customer mails at {c['latency_rate_per_s']:g}/s → forward visible in the agent's inbox"),
            Figure("latency_p90_s", lp("p90"), "s", reps=n_lat, note=note),
            Figure("latency_p99_s", p99, "s", reps=n_lat, note=note),
            Figure("latency_max_s", lp("max"), "s", reps=n_lat, note=note),
            Figure("latency_p99_vs_floor", ratio(p99, floor), "×", "latency_floor_p99_s", floor, n_lat, note),
        ]
        if lat:
            F.append(Figure("latency_never_delivered", median(r["missing"] for r in lat), "mails", reps=n_lat,
                            note=f"of {c['latency_n']} mails, no forward reached an agent"))

        # -- steady state
        sus = raw.get("sustained")
        note = "" if sus else missing("sustained")
        if sus:
            tried = ", ".join(f"{s['rate']:g}/s {'held' if s['held'] else 'NOT held'}" for s in sus["steps"])
            note = f"open loop, {sus['step_s']:g} s per rate, p99 limit {fmt_s(sus['limit_s'])}: {tried}"
        F += [
            Figure("sustained_interactions_per_s", (sus or {}).get("sustained"), "interactions/s", reps=1 if sus else None,
                   note=note),
            Figure("sustained_latency_p99_s", (sus or {}).get("p99_at_sustained"), "s", reps=1 if sus else None,
                   note="forward latency p99 at that rate" if sus else note),
        ]

        # -- throughput and cost per interaction
        thr = raw.get("throughput") or []
        n_thr = len(thr) or None
        note = "" if thr else missing("throughput")
        rate = median(r["interactions_per_s"] for r in thr) if thr else None
        engine_ms = median(1000 * r["engine_cpu_s"] / r["n"] for r in thr) if thr else None
        thr_stack_ms = median(1000 * r["stack_cpu_s"] / r["n"] for r in thr if r.get("stack_cpu_s")) if thr else None
        F += [
            Figure("throughput_interactions_per_s", rate, "interactions/s", reps=n_thr,
                   note=note or f"{c['throughput_n']} mails at once, agents answer at once; first mail → every "
                                "auto-response, reply and journal copy delivered"),
            Figure("throughput_vs_ceiling", ratio(rate, ceiling), "×", "ceiling_interactions_per_s", ceiling, n_thr, note),
            Figure("engine_cpu_ms_per_interaction", engine_ms, "ms", reps=n_thr,
                   note=note or "engine process CPU over the throughput run (until every interaction closed) ÷ interactions"),
            Figure("engine_cpu_vs_stack", ratio(engine_ms, stack_ms), "×", "stack_cpu_ms_per_interaction", stack_ms, n_thr,
                   note or "the stack's CPU for the same mails in the ceiling run"),
            Figure("throughput_stack_cpu_ms_per_interaction", thr_stack_ms, "ms", reps=n_thr,
                   note=note or "Dovecot + Postfix CPU during the throughput run (agents' and watchers' polling included)"),
        ]

        # -- ingest
        ing = raw.get("ingest")
        note = "" if ing else missing("ingest")

        def irate(side: str, mode: str):
            runs = (ing or {}).get(side, {}).get(mode, []) if side != "ceiling" else (ing or {}).get("ceiling", [])
            return (median(r["per_s"] for r in runs) if runs else None), (len(runs) or None)

        pa, n_pa = irate("postroom", "ack")
        pn, n_pn = irate("postroom", "noack")
        ha, n_ha = irate("helpdesk", "ack")
        hn, n_hn = irate("helpdesk", "noack")
        ta, n_ta = irate("helpdesk_tuned", "ack")
        tn, n_tn = irate("helpdesk_tuned", "noack")
        ca, n_ca = irate("ceiling", "")

        def icpu(side: str, mode: str, key: str):
            runs = [r for r in (ing or {}).get(side, {}).get(mode, []) if r.get(key)]
            return median(1000 * r[key] / r["n"] for r in runs) if runs else None

        F += [
            Figure("postroom_ingest_per_s", pa, "mails/s", reps=n_pa,
                   note=note or f"{c['ingest_n']} mails, first FETCH → last auto-response recorded sent"),
            Figure("helpdesk_ingest_tuned_per_s", ta, "mails/s", reps=n_ta,
                   note=note or "django-helpdesk, acknowledgements on, Postroom's SQLite settings and way of sending; "
                                "first FETCH → last commit"),
            Figure("ingest_vs_helpdesk_tuned", ratio(pa, ta), "×", "helpdesk_ingest_tuned_per_s", ta, n_pa,
                   note or "the headline: like for like"),
            Figure("ingest_ceiling_per_s", ca, "mails/s", reps=n_ca,
                   note=note or "minimal client: FETCH batches of 50 + one prebuilt auto-response each"),
            Figure("ingest_vs_ceiling", ratio(pa, ca), "×", "ingest_ceiling_per_s", ca, n_pa, note),
            Figure("postroom_ingest_noack_per_s", pn, "mails/s", reps=n_pn,
                   note=note or "auto_response = false; first FETCH → last interaction recorded"),
            Figure("helpdesk_ingest_tuned_noack_per_s", tn, "mails/s", reps=n_tn, note=note or "acknowledgement template deleted"),
            Figure("ingest_noack_vs_helpdesk_tuned", ratio(pn, tn), "×", "helpdesk_ingest_tuned_noack_per_s", tn, n_pn, note),
            Figure("helpdesk_ingest_per_s", ha, "mails/s", reps=n_ha, note=note or "stock: Django's default SQLite, plain SMTP to the MX"),
            Figure("ingest_vs_helpdesk", ratio(pa, ha), "×", "helpdesk_ingest_per_s", ha, n_pa, note),
            Figure("helpdesk_ingest_noack_per_s", hn, "mails/s", reps=n_hn, note=note),
            Figure("ingest_noack_vs_helpdesk", ratio(pn, hn), "×", "helpdesk_ingest_noack_per_s", hn, n_pn, note),
            Figure("postroom_ingest_cpu_ms_per_mail", icpu("postroom", "ack", "engine_cpu_s"), "ms", reps=n_pa,
                   note=note or "engine process CPU from its first FETCH ÷ mails (start-up left out, as in the time)"),
            Figure("helpdesk_ingest_tuned_cpu_ms_per_mail", icpu("helpdesk_tuned", "ack", "cpu_s"), "ms", reps=n_ta,
                   note=note or "get_email process CPU ÷ mails, start-up included"),
            Figure("helpdesk_version", (ing or {}).get("helpdesk_version"), "", note=note or "django-helpdesk from PyPI, own venv"),
        ]

        # -- backlog
        bl = raw.get("backlog")
        note = "" if bl else missing("backlog")
        if bl:
            note = f"{bl['taken']:,} of {bl['n']:,} taken" + ("" if bl["finished"] else " (NOT finished in time)")
        F += [
            Figure("backlog_100k_ingest_s", (bl or {}).get("seconds"), "s", reps=1 if bl else None, note=note),
            Figure("backlog_100k_per_s", (bl or {}).get("per_s"), "mails/s", reps=1 if bl else None, note=note),
            Figure("backlog_100k_peak_rss_mb", (bl or {}).get("engine_peak_rss_mb"), "MB", reps=1 if bl else None, note=note),
        ]

        # -- memory, over every phase that ran an engine
        rss = self.peak_rss()
        F.append(Figure("engine_peak_rss_mb", max(rss.values()) if rss else None, "MB",
                        note=("max VmHWM over " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items())) if rss else "no engine ran"))

        # -- routing
        rt = raw.get("routing")
        if rt:
            args = "bench/routing.py " + " ".join(c["routing_args"])
            renames = {"routing_decision_p99_us": "routing_decision_any_p99_us",
                       "routing_decision_p50_us": "routing_decision_any_p50_us",
                       "routing_decision_max_us": "routing_decision_any_max_us",
                       "routed_decision_p99_us": "routing_decision_p99_us"}
            for key, value in rt.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    unit = {"_us": "µs", "_ms": "ms", "_s": "s", "_mb": "MB"}.get("_" + key.rsplit("_", 1)[-1], "")
                    name = renames.get(key) or (key if key.startswith("routing") or unit else f"routing_{key}")
                    what = {"routing_decision_p99_us": f"decisions that routed an item; {args}",
                            "routing_decision_any_p99_us": "every timed assign() call, routed or not"}.get(name, "")
                    F.append(Figure(name, float(value), unit, note=what))
        else:
            F.append(Figure("routing_decision_p99_us", None, "µs", note=missing("routing")))

        res = raw.get("resume") or {}
        for db in ("sqlite", "postgres"):
            runs = res.get(db) or []
            F.append(Figure(f"resume_100k_{db}_s", median(r["seconds"] for r in runs) if runs else None, "s",
                            reps=len(runs) or None,
                            note=(f"{c['resume_n']:,} QUEUED records; engine start → routed to the Ready agent"
                                  if runs else missing("resume"))))

        pages = (raw.get("pages") or {}).get("pages") or {}
        seeded = (raw.get("pages") or {}).get("seed") or {}
        size = (f"{seeded.get('interactions', 0):,} interactions, {seeded.get('open', 0):,} open, "
                f"{seeded.get('journal_events', 0):,} journal events, {(raw.get('pages') or {}).get('database', '')}")
        for name, figures in pages.items():
            F.append(Figure(f"page_p95_ms_{name}", figures["p95_ms"], "ms",
                            note=f"{figures['url']} (p50 {figures['p50_ms']} ms); {size}"))
        if not pages:
            F.append(Figure("page_p95_ms_agent_bar", None, "ms", note=missing("pages")))

        ch = raw.get("chaos")
        if ch:
            what = (f"{ch['customers']:,} interactions, {ch['kills']} SIGKILLs (seed {ch['seed']}), "
                    "counted in the customers' and agents' mailboxes")
            F += [
                Figure("chaos_lost", ch["lost"], "mails", reps=1,
                       note=what + ("" if ch["settled"] else "; NOT SETTLED: " + str(ch["not_closed"]) + " not closed")),
                Figure("chaos_duplicates", ch["duplicates"], "mails", reps=1, note="second copies of any mail"),
            ]
        else:
            F += [
                Figure("chaos_lost", None, "mails", note=missing("chaos")),
                Figure("chaos_duplicates", None, "mails", note=missing("chaos")),
            ]

        isl = island_runs(raw)
        if isl:
            won_by: dict[str, int] = {}
            for r in isl:
                for node, count in r["won_by"].items():
                    won_by[node] = won_by.get(node, 0) + count
            note = (f"new mail → claim won through the sync box, two racing nodes, {len(isl)} reps of "
                    f"{isl[0]['n']} mails {isl[0]['gap_s']} s apart: {sum(r['won'] for r in isl)} won "
                    f"(by {won_by}), {sum(r['double'] for r in isl)} doubly owned; median over the reps of each "
                    f"rep's p50 (p99: the next figure)" + load_note(raw, self.cfg, "island"))
            F += [
                Figure("island_claim_latency_s", median(r["p50_s"] for r in isl), "s", reps=len(isl), note=note),
                Figure("island_claim_latency_p99_s", median(r["p99_s"] for r in isl), "s", reps=len(isl),
                       note="the same runs: median over the reps of each rep's p99"),
            ]
        elif "island" in self.phases:
            F.append(Figure("island_claim_latency_s", None, "s", note=missing("island")))

        # -- issue 10: several nodes on one PostgreSQL (bench/redundancy.py)
        fo = [r for r in raw.get("failover") or [] if r.get("seconds") is not None]
        fo_db = [r["leases_after_heartbeat_s"] for r in fo if r.get("leases_after_heartbeat_s") is not None]
        F.append(Figure(
            "failover_s", median(r["seconds"] for r in fo) if fo else None, "s", reps=len(fo) or None,
            note=(f"primary SIGKILLed, one mail sent at once → routed by the secondary (node_lease 6 s); every box "
                  f"taken {median(fo_db):.1f} s after the primary's last heartbeat (database clock)"
                  if fo and fo_db else missing("failover")),
        ))
        nd = raw.get("nodes") or {}
        one, two = (median(r["interactions_per_s"] for r in nd.get(k) or []) for k in ("1", "2"))
        n_nodes = len(nd.get("2") or []) or None
        first = (nd.get("2") or [{}])[0]
        boxes = first.get("boxes", 1)
        if not nd:
            note = missing("nodes")
        elif boxes > 1:
            watched = "; ".join(
                f"rep {i + 1}: " + ", ".join(f"{k} {'+'.join(v)}" for k, v in sorted(r.get("watched", {}).items()))
                for i, r in enumerate(nd.get("2") or [])
            )
            note = (f"{first.get('n', '?')} mails at once split over {boxes} incoming boxes, agents answer at once, "
                    f"PostgreSQL; one node, then two primaries, in turn, {n_nodes} times; the ratio is the median of "
                    f"each turn's two-node ÷ one-node rate (spread: those ratios); boxes watched ({watched})"
                    + load_note(raw, self.cfg, "nodes"))
        else:  # a run from before the second box
            note = (f"{first.get('n', '?')} mails at once to one box, agents answer at once, PostgreSQL; "
                    "two primaries (one watches the box, both send) ÷ one node")
        pairs = paired_ratios(nd)
        F += [
            Figure("throughput_1_node_pg_per_s", one, "interactions/s", reps=len(nd.get("1") or []) or None, note=note),
            Figure("throughput_2_nodes_pg_per_s", two, "interactions/s", reps=n_nodes, note=note),
            Figure("throughput_2_nodes_vs_1", median(pairs) if pairs else ratio(two, one), "×",
                   "throughput_1_node_pg_per_s", one, n_nodes, note),
        ]
        return F


def island_runs(raw: dict) -> list[dict]:
    """The island phase's runs (one dict in results from before `island_reps`)."""
    isl = raw.get("island")
    runs = isl if isinstance(isl, list) else [isl] if isl else []
    return [r for r in runs if r.get("p50_s") is not None]


def paired_ratios(nd: dict) -> list[float]:
    """Two nodes ÷ one node, turn by turn (the two runs of a turn follow each other)."""
    return [
        two["interactions_per_s"] / one["interactions_per_s"]
        for one, two in zip(nd.get("1") or [], nd.get("2") or [], strict=False)
        if one.get("interactions_per_s") and two.get("interactions_per_s")
    ]


def load_note(raw: dict, cfg: dict, phase: str) -> str:
    """What the machine was doing besides: the 1-min load measured as the phase began, and
    who else was at work (`--set PHASE_shared_with='"..."'`, said by whoever ran it)."""
    load = (raw.get("phase_load") or {}).get(phase)
    out = "" if load is None else f"; 1-min load {load:.1f} on {os.cpu_count()} cores as the phase began"
    shared = cfg.get(f"{phase}_shared_with")
    return out + (f" ({shared})" if shared else "")


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def changed_from_full(cfg: dict, quick: bool) -> dict:
    """The settings of a run that differ from `FULL` (--set), so no reader takes a reduced
    run for the full one."""
    return {} if quick else {k: v for k, v in cfg.items() if FULL.get(k) != v and not k.endswith("_shared_with")}


def rebuild(path: Path, out: Path) -> int:
    """Recompute the figures of a finished run from its raw measurements (no mail sent)."""
    doc = json.loads(path.read_text())
    meta = doc["meta"]
    bench = Bench.__new__(Bench)
    bench.cfg = meta["settings"]
    bench.raw = doc["details"]
    bench.errors = meta.get("errors", {})
    bench.phases = [p for p in PHASES if p in bench.raw or p in bench.errors]
    meta["changed_from_full"] = changed_from_full(bench.cfg, meta.get("quick", False))
    # Said again by report.write if it still holds.
    meta["notes"] = [n for n in meta.get("notes", []) if not n.startswith("No results.png")]
    figures = bench.figures()
    report.write(out, figures, meta, bench.raw)
    print(report.console_table(figures))
    return 0


# The settings a phase reads, by prefix, where they are not named after the phase: the
# stack phase measures the latency floor and the pattern ceiling too.
SETTINGS_OF = {"stack": ("stack_", "floor_", "pattern_")}


def add_to(path: Path, out: Path, phases: list[str], raw: dict, meta: dict) -> int:
    """Put the measurements of this run's phases into an earlier run's results (`path`),
    then rebuild every figure from the merged measurements, as `--from-json` does: a phase
    measured later replaces that phase's measurements only, and the notes say when."""
    doc = json.loads(path.read_text())
    for phase in phases:
        doc["details"].pop(phase, None)
        if phase in raw:
            doc["details"][phase] = raw[phase]
        if phase in (raw.get("phase_load") or {}):  # the figures' notes say the load they ran under
            doc["details"].setdefault("phase_load", {})[phase] = raw["phase_load"][phase]
    old = doc["meta"]
    # The counts of the phases run now (`failover_reps`, `nodes_n`...) replace the old ones.
    prefixes = tuple(p for phase in phases for p in SETTINGS_OF.get(phase, (phase,)))
    old["settings"] = {**old.get("settings", {}),
                       **{k: v for k, v in meta["settings"].items() if k.startswith(prefixes)}}
    old.setdefault("errors", {}).update(meta["errors"])
    old.setdefault("phase_seconds", {}).update(meta["phase_seconds"])
    old["notes"] = [*old.get("notes", []), f"Phases {', '.join(phases)} measured {meta['started']} on "
                    f"{meta['host']} ({meta['duration_s'] / 60:.1f} min) and added to this run's results "
                    f"(bench/run.py --only {','.join(phases)} --add-to)."]
    merged = out / ".merged.json"
    out.mkdir(parents=True, exist_ok=True)
    merged.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    try:
        return rebuild(merged, out)
    finally:
        merged.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run of the harness")
    p.add_argument("--only", default="", help=f"comma-separated phases of {','.join(PHASES)}")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases, configs)")
    p.add_argument("--out", type=Path, default=BENCH, help="where results.* go (default bench/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override one count or repetition of FULL/QUICK (kept in the results' settings)")
    p.add_argument("--base-port", type=int, default=BASE_PORT)
    p.add_argument("--pg-port", type=int, default=PG_PORT,
                   help="port of the throwaway PostgreSQL of the resume, failover and nodes phases")
    p.add_argument("--from-json", type=Path, help="only rebuild the figures and reports from a results.json")
    p.add_argument("--add-to", type=Path, help="merge this run's phases (or, with --from-json, that file's) into this results.json "
                   "and rebuild every figure from it into --out")
    args = p.parse_args(argv)
    if args.from_json and args.add_to:  # the phases of one run's results added to another's
        doc = json.loads(args.from_json.read_text())
        phases = [p for p in PHASES if p in doc["details"]]
        return add_to(args.add_to, args.out, phases, doc["details"], doc["meta"])
    if args.from_json:
        return rebuild(args.from_json, args.out)
    if os.geteuid() != 0:
        print("bench: the mail stack needs root (Postfix and Dovecot masters)", file=sys.stderr)
        return 2
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
