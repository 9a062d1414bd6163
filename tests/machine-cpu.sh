#!/usr/bin/env bash
# Run a command; then print its wall time and the CPU the whole machine used meanwhile (from
# /proc/stat), for docs/testing.md's figures. `/usr/bin/time` would miss the processes the fork
# server started (tests/prefork.py): they are not the test processes' children.
# Usage: tests/machine-cpu.sh bash -c 'make lint && make test'
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
before=$(busy)
started=$(date +%s.%N)
"$@"
rc=$?
ended=$(date +%s.%N)
after=$(busy)
hz=$(getconf CLK_TCK)
awk -v s="$started" -v e="$ended" -v c="$((after - before))" -v hz="$hz" -v rc="$rc" \
    'BEGIN { printf "wall %.1f s, machine CPU %.1f s, exit %d\n", e - s, c / hz, rc }' >&2
exit "$rc"
