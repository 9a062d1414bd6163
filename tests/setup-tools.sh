#!/usr/bin/env bash
# What the tests need besides the Python venv: promtool and prometheus, from Debian's
# `prometheus` package, for the alert-rule and scrape tests (tests/observability). `make test`
# runs this first. As root with apt-get it installs the package when missing; otherwise it says
# in one line what to install, and the tests go on (only those that need the tools fail).
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tests/setup-tools.sh: installing Debian's prometheus package (promtool, prometheus) for tests/observability"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
else
    echo "tests/setup-tools.sh: promtool and prometheus not found; install them (Debian/Ubuntu: sudo apt-get install prometheus) or tests/observability will fail" >&2
fi
