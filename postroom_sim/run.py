"""Run the simulator against a mail stack until Ctrl-C (or SIGTERM).

    python -m postroom_sim.run --host 127.0.0.1 --base-port 21000 \\
        --customers a@customer.test:pw,b@customer.test:pw \\
        --agents alice@example.test:pw:thunderbird,bob@example.test:pw:outlook \\
        --to support@example.test,sales@example.test --every 8 --cafile PATH

Ports follow the dev stack's layout from the base port B: IMAP B+0, SMTP (MX) B+4,
submission B+5. Customers send to the MX without authentication, so their passwords
are accepted but not used.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from postroom_sim.agents import STYLES, AgentClient
from postroom_sim.customers import CustomerSimulator

log = logging.getLogger("postroom_sim")


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_agent(spec: str) -> tuple[str, str, str]:
    """``addr:password[:style]`` -> (addr, password, style). The password may contain ':'."""
    parts = spec.split(":")
    if len(parts) < 2:
        raise argparse.ArgumentTypeError(f"agent {spec!r}: expected ADDRESS:PASSWORD[:STYLE]")
    style = "thunderbird"
    if len(parts) >= 3 and parts[-1] in STYLES:
        style = parts.pop()
    return parts[0], ":".join(parts[1:]), style


def parse_customer(spec: str) -> str:
    """``addr[:password]`` -> addr."""
    return spec.split(":", 1)[0]


def _reply_after(value: str) -> tuple[float, float]:
    try:
        lo, _, hi = value.partition(",")
        return float(lo), float(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--reply-after {value!r}: expected MIN,MAX") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m postroom_sim.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--base-port",
        type=int,
        default=21000,
        help="dev stack base port B: IMAP B+0, SMTP B+4, submission B+5",
    )
    p.add_argument("--imap-port", type=int, help="override B+0")
    p.add_argument("--smtp-port", type=int, help="override B+4 (MX, where customers send)")
    p.add_argument("--submission-port", type=int, help="override B+5 (agents send here)")
    p.add_argument(
        "--customers", default="", help="comma-separated ADDRESS[:PASSWORD] of customers"
    )
    p.add_argument(
        "--agents",
        default="",
        help=f"comma-separated ADDRESS:PASSWORD[:STYLE], STYLE one of {', '.join(STYLES)}",
    )
    p.add_argument(
        "--to",
        default="support@example.test",
        help="comma-separated company addresses customers write to",
    )
    p.add_argument(
        "--every", type=float, default=8.0, help="seconds between customer mails (jittered)"
    )
    p.add_argument("--jitter", type=float, default=0.3, help="fraction of --every, 0..1")
    p.add_argument(
        "--reply-after",
        type=_reply_after,
        default=(3.0, 12.0),
        metavar="MIN,MAX",
        help="seconds an agent waits before replying",
    )
    p.add_argument("--cafile", help="CA certificate to verify the stack's TLS with")
    p.add_argument("--seed", type=int, help="random seed, for a repeatable demo")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    imap_port = args.imap_port or args.base_port
    smtp_port = args.smtp_port or args.base_port + 4
    submission_port = args.submission_port or args.base_port + 5

    customers = [parse_customer(c) for c in _split_list(args.customers)]
    try:
        agents_specs = [parse_agent(a) for a in _split_list(args.agents)]
    except argparse.ArgumentTypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    recipients = _split_list(args.to)
    if not customers and not agents_specs:
        print("error: nothing to simulate: give --customers and/or --agents", file=sys.stderr)
        return 2

    sim = None
    if customers:
        sim = CustomerSimulator(
            args.host,
            smtp_port,
            customers=customers,
            recipients=recipients,
            every=args.every,
            jitter=args.jitter,
            seed=args.seed,
        )
    agents = [
        AgentClient(
            args.host,
            imap_port,
            submission_port,
            addr,
            pw,
            cafile=args.cafile,
            style=style,
            reply_after=args.reply_after,  # type: ignore[arg-type]
            seed=None if args.seed is None else args.seed + i,
        )
        for i, (addr, pw, style) in enumerate(agents_specs)
    ]

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_signal) if in_main else None
    for agent in agents:
        agent.start()
    if sim is not None:
        sim.start()
    log.info(
        "simulator running: %d customer(s) -> %s, %d agent(s); Ctrl-C to stop",
        len(customers),
        ", ".join(recipients),
        len(agents),
    )
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if sim is not None:
            sim.stop()
        for agent in agents:
            agent.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    log.info(
        "simulator stopped: %d customer mail(s) sent, %d reply(ies) sent",
        sim.sent if sim is not None else 0,
        sum(a.replied for a in agents),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
