"""Summarise a py-spy raw (collapsed-stack) profile of the engine: where its time goes.

    python bench/profile_summary.py FILE.pyspy.txt [--top 25]

Idle threads are not in the samples (py-spy records without --idle), so shares are of the
time the engine's threads were running or waiting on a socket/database, per thread.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def parse(path: Path):
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        yield frames, int(count)


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m['func']} ({file})"


def summarise(path: Path, top: int = 25) -> str:
    threads: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    leaf: Counter[str] = Counter()
    total = 0
    for frames, n in parse(path):
        total += n
        thread = frames[0]
        threads[thread] += n
        seen = set()
        for f in frames[1:]:
            s = short(f)
            if s not in seen:
                inclusive[thread][s] += n
                seen.add(s)
        leaf[short(frames[-1])] += n
    out = [f"{path.name}: {total} samples"]
    for thread, n in threads.most_common():
        out.append(f"\n== {thread}: {n} samples ({100 * n / max(1, total):.0f}%)")
        rows = [(s, c) for s, c in inclusive[thread].most_common() if "postroom/" in s or "postroom " in s]
        for s, c in rows[:top]:
            out.append(f"  {100 * c / n:5.1f}%  {s}")
    out.append("\n== leaf functions (self time), all threads")
    for s, c in leaf.most_common(top):
        out.append(f"  {100 * c / max(1, total):5.1f}%  {s}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    print(summarise(args.file, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
