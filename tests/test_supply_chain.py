"""The supply chain: hashed lock files that match pyproject.toml, installed as locked, and
audited for known vulnerabilities.

pip-audit needs an advisory database: PyPI's JSON API (pypi.org/pypi/NAME/VERSION/json,
which lists each release's known vulnerabilities) or OSV (api.osv.dev). Where neither
answers (a machine that reaches only the package index's files), the audit is skipped
with that reason, visibly, rather than passing on an audit of nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCKS = [ROOT / "requirements.lock", ROOT / "requirements-dev.lock"]
BIN = Path(sys.executable).parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)==([^\s;\\]+)", re.M)


def _pins(lock: Path) -> dict[str, str]:
    return {
        re.sub(r"\[.*\]", "", name).lower().replace("_", "-"): version
        for name, version in PIN.findall(lock.read_text())
    }


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_locked_requirement_is_pinned_with_hashes(lock):
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().split("\n", 2)[2].strip())
    assert len(entries) > 10
    for entry in entries:
        assert PIN.match(entry), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_the_locks_match_pyproject(tmp_path):
    uv = BIN / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed (.[dev])")
    for lock, extra in ((LOCKS[0], []), (LOCKS[1], ["--extra", "dev"])):
        fresh = tmp_path / lock.name
        shutil.copy(lock, fresh)  # uv keeps the pins it finds in the output file
        done = subprocess.run(
            [str(uv), "pip", "compile", "pyproject.toml", *extra, "--universal",
             "--python-version", "3.11", "--generate-hashes", "--quiet", "-o", str(fresh)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0 and "network" in done.stderr.lower():
            pytest.skip(f"the package index is unreachable: {done.stderr.strip()[:200]}")
        assert done.returncode == 0, done.stderr
        assert _pins(fresh) == _pins(lock), f"{lock.name} is stale: run `make lock`"


def test_the_environment_is_installed_from_the_lock():
    locked = _pins(LOCKS[1])
    for name in ("django", "waitress", "django-axes", "django-ninja", "psycopg"):
        assert metadata.version(name) == locked[name], name


def test_floors_are_at_the_security_releases():
    locked = _pins(LOCKS[0])
    django = tuple(int(x) for x in locked["django"].split(".")[:3])
    waitress = tuple(int(x) for x in locked["waitress"].split(".")[:3])
    assert django >= (5, 2, 19) and waitress >= (3, 0, 2)


def test_no_locked_package_has_a_known_vulnerability(tmp_path):
    audit = BIN / "pip-audit"
    if not audit.exists():
        pytest.skip("pip-audit is not installed (.[dev])")
    report = tmp_path / "audit.json"
    done = subprocess.run(
        [str(audit), "-r", str(LOCKS[1]), "--disable-pip", "--require-hashes",
         "--vulnerability-service", "pypi", "--format", "json", "--output", str(report),
         "--progress-spinner", "off", "--timeout", "20"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if not report.exists():
        pytest.skip(f"pip-audit could not run: {done.stderr.strip()[-300:]}")
    dependencies = json.loads(report.read_text())["dependencies"]
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        pytest.skip(
            "advisory database unreachable: PyPI's JSON API answers no release here "
            f"({dependencies[0].get('skip_reason', '?')}) and api.osv.dev does not resolve; "
            "pip-audit needs one of them"
        )
    vulnerable = {d["name"]: [v["id"] for v in d["vulns"]] for d in audited if d.get("vulns")}
    assert not vulnerable, vulnerable
