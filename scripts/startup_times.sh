#!/usr/bin/env bash
# Start-up times of the one-file program (docs/BENCHMARKS.md "One-file program"): `ballast
# version --client` (no server) with a fresh unpack directory, then with the unpacked one, then from
# source. Usage: bash scripts/startup_times.sh [FILE]  (default dist/ballast: `deno task compile` first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Each line: kind of start and milliseconds.
B=${1:-dist/ballast}
t() { s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $(( ($(date +%s%N)-s)/1000000 )); }
for i in 1 2 3; do c=$(mktemp -d); echo "first $(BALLAST_CACHE_DIR=$c t $B version --client)"; rm -rf $c; done
c=$(mktemp -d); BALLAST_CACHE_DIR=$c $B version --client >/dev/null 2>&1
for i in 1 2 3 4 5; do echo "later $(BALLAST_CACHE_DIR=$c t $B version --client)"; done
for i in 1 2 3; do echo "source $(t deno run -A main.ts version --client)"; done
rm -rf $c
