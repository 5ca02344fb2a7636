#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need, runs
# `deno task test` (extra arguments are passed on, e.g. --filter NAME), keeps
# the output in a log (.ballast/test.log, or $BALLAST_TEST_OUTPUT; not
# BALLAST_TEST_LOG, which is the tests' own server log level), and ends with the plain line CI reads:
#
#   N passed, M failed[, K skipped]
#
# counted from deno test's summary line(s) ("ok | 12 passed (3 steps) | 0 failed
# | 2 ignored"): tests, not steps; "ignored" counts as skipped. Exits non-zero
# when any test failed or deno test itself failed; if deno test fails without
# a summary (crash, type error) the line is "0 passed, 1 failed".
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

LOG="${BALLAST_TEST_OUTPUT:-.ballast/test.log}"
mkdir -p "$(dirname "$LOG")"

if ! bash scripts/setup.sh; then
  echo "test.sh: scripts/setup.sh failed; tests not run"
  echo "0 passed, 1 failed"
  exit 1
fi

deno task test "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}

# Strip ANSI colours, keep only deno test summary lines, add them up (a task
# may run deno test more than once).
summaries="$(sed -E 's/\x1b\[[0-9;]*[A-Za-z]//g' "$LOG" |
  grep -E '^(ok|FAILED) \| [0-9]+ passed' || true)"

passed=0
failed=0
skipped=0
if [[ -n "$summaries" ]]; then
  while IFS= read -r line; do
    # The first "N passed" / "N failed" / "N ignored" are test counts; step
    # counts appear only inside parentheses as "(N steps)".
    p="$(grep -oE '[0-9]+ passed' <<<"$line" | head -n1 | cut -d' ' -f1)"
    f="$(grep -oE '[0-9]+ failed' <<<"$line" | head -n1 | cut -d' ' -f1)"
    i="$(grep -oE '[0-9]+ ignored' <<<"$line" | head -n1 | cut -d' ' -f1)"
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    skipped=$((skipped + ${i:-0}))
  done <<<"$summaries"
fi

if [[ -z "$summaries" ]]; then
  echo "test.sh: deno test printed no summary (exit status $rc); see $LOG"
  passed=0
  failed=1
  skipped=0
elif [[ $rc -ne 0 && $failed -eq 0 ]]; then
  echo "test.sh: deno test exited with status $rc although no test failed; counting 1 failure"
  failed=1
fi

# The last line is always exactly "N passed, M failed" (CI reads it).
if [[ $skipped -gt 0 ]]; then
  echo "($skipped tests skipped; the reasons are printed above)"
fi
echo "$passed passed, $failed failed"

if [[ $failed -gt 0 || $rc -ne 0 ]]; then
  exit 1
fi
exit 0
