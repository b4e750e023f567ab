#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian 12 machine (run as root, or with sudo):
# the servers the tests use (ZooKeeper, etcd, Open vSwitch), a virtualenv in .venv, and the
# project installed in it with its extras. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(default-jre-headless zookeeper etcd-server etcd-client openvswitch-switch
              netcat-openbsd python3-venv python3-dev iproute2 util-linux
              chromium chromium-driver)  # chromium: the web view's browser tests
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-test,etcd,os-ken,ryu,web}

need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: Python 3.11+ is required, $PYTHON is $("$PYTHON" -V)"; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $("$PYTHON" -V)"
  "$PYTHON" -m venv "$VENV"
fi
# Ryu 4.34 builds only with setuptools<68, which pip applies to its isolated build through
# --build-constraint (pip >= 25.3; PIP_CONSTRAINT no longer reaches the build environment).
if ! "$VENV/bin/pip" install --help 2>/dev/null | grep -q -- --build-constraint; then
  "$VENV/bin/pip" install -q --upgrade "pip>=25.3"
fi
echo "setup: installing the project into $VENV with extras [$EXTRAS]"
"$VENV/bin/pip" install -q --build-constraint constraints/ryu-build.txt -e ".[$EXTRAS]"
"$VENV/bin/pip" check >/dev/null || { "$VENV/bin/pip" check; exit 1; }
echo "setup: done"
