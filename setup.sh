#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine:
#   bash setup.sh run    set up, then run the appliance on embedded defaults (Ctrl-C stops it)
#   bash setup.sh test   set up, then run ruff, mypy and the whole test suite
# Idempotent: Debian packages are installed only when missing, the venv is reused.
set -euo pipefail
cd "$(dirname "$0")"

mode="${1:-}"
shift || true
case "$mode" in run|test) ;; *) echo "usage: bash setup.sh run|test [args...]" >&2; exit 2 ;; esac

# What the appliance needs at run time: Python, sox + espeak-ng (prompt audio), Graphviz (ivr graph).
packages=(python3 python3-venv python3-dev gcc sox libsox-fmt-all espeak-ng graphviz sqlite3 ca-certificates)
# What the tests add: real SIP peers and packet capture for the SIP/RTP work.
# dnsmasq: a DNS server for the SRV failover tests; nftables + iproute2: the NAT test's namespaces and masquerade;
# postgresql-15: the central store the collector writes to (tests/central); chromium: the dashboard in a real
# browser; prometheus: a real server scraping the daemon's /metrics (tests/integration/test_metrics_prometheus.py).
# systemd: systemd-analyze verifies the unit files in systemd/ and rates their hardening (tests/test_systemd_units.py).
if [ "$mode" = test ]; then packages+=(sip-tester tshark baresip openssl dnsmasq nftables iproute2 prometheus postgresql-15 chromium systemd); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
target="."; [ "$mode" = test ] && target=".[test]"
# Build-backend chatter (setuptools' generic editable-install notice) is dropped; failures still stop us.
.venv/bin/python -m pip install -q -e "$target" > .venv/pip.log 2>&1 \
  || { cat .venv/pip.log >&2; echo "installing edge-ivr into .venv failed" >&2; exit 1; }

if [ "$mode" = run ]; then
  exec .venv/bin/ivr run "$@"
fi
.venv/bin/ruff check ivr ivr_central tests bench
.venv/bin/mypy ivr ivr_central
# import-linter: the layer and no-circle contracts of pyproject.toml [tool.importlinter] (no cache dir left behind)
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
