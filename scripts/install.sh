#!/usr/bin/env bash
# Install what Postroom needs on a fresh Debian 12 machine (as root): the mail stack
# (Postfix + Dovecot), PostgreSQL, Chromium for the browser tests, and the Python venv.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_pkgs=()
for p in postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postgresql chromium openssl; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: missing Debian packages ${need_pkgs[*]} and not root" >&2; exit 1
  fi
  # Never let a package start a system-wide service: the image's policy-rc.d denies it.
  [ -f /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }
  # Postfix asks a debconf question on install and would hang without a TTY.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# Python packages: exactly the versions and files in requirements-dev.lock (hashes checked;
# regenerate with `make lock` after editing pyproject.toml), then Postroom itself.
stamp="$VENV/.installed-$(cat pyproject.toml requirements-dev.lock | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install -q --require-hashes -r requirements-dev.lock
  "$VENV/bin/pip" install -q --no-deps -e .
  touch "$stamp"
fi
