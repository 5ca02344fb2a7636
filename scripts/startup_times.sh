#!/usr/bin/env bash
# Start-up times of the one-file program (docs/BENCHMARKS.md "One-file program"): `ballast
# version` (no server) with a fresh unpack directory, then with the unpacked one, then from
# source. Usage: bash scripts/startup_times.sh [FILE]  (default dist/ballast: `deno task compile` first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Each line: kind of start and milliseconds.
B=${1:-dist/ballast}
t() { s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $(( ($(date +%s%N)-s)/1000000 )); }
for i in 1 2 3; do c=$(mktemp -d); echo "first $(BALLAST_CACHE_DIR=$c t $B version --api http://127.0.0.1:1)"; rm -rf $c; done
c=$(mktemp -d); BALLAST_CACHE_DIR=$c $B version --api http://127.0.0.1:1 >/dev/null 2>&1
for i in 1 2 3 4 5; do echo "later $(BALLAST_CACHE_DIR=$c t $B version --api http://127.0.0.1:1)"; done
for i in 1 2 3; do echo "source $(t deno run -A main.ts version --api http://127.0.0.1:1)"; done
rm -rf $c
