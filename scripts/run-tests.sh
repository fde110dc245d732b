#!/usr/bin/env bash
# Run pytest tier by tier and print one summary; exits non-zero if any tier failed.
#
#   scripts/run-tests.sh [TIER...]      # TIER: default slow postgres browser (default: all four),
#                                       # or gpu (a CUDA device: bench/gpu.sh runs it)
#   PYTEST_ARGS="-x -k inputs" scripts/run-tests.sh default
#
# Each test runs in exactly one tier (a slow postgres test runs in the postgres tier).
# A tier that collects no tests (pytest exit 5) counts as passed, except under CI=true, where it
# fails: a marker typo or a broken conftest must not pass as an empty tier. The postgres tier uses
# MODELMILL_TEST_POSTGRES_URL when set, else starts a throwaway server with scripts/postgres.sh.
# A tier this machine cannot run (no PostgreSQL, no Chromium) is skipped with a note, except under
# CI=true, where it fails: CI runs every tier.
# Writes test-artifacts/junit-TIER.xml and test-artifacts/summary.txt (MODELMILL_TEST_ARTIFACTS
# names another folder).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${MODELMILL_TEST_PYTHON:-.venv/bin/python}
artifacts=${MODELMILL_TEST_ARTIFACTS:-test-artifacts}
chromium=${MODELMILL_CHROMIUM:-/usr/bin/chromium}
tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=(default slow postgres browser)
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
mkdir -p "$artifacts"

marker_expression() {
  case "$1" in
    default) echo "not slow and not postgres and not browser and not gpu" ;;
    slow) echo "slow and not postgres and not browser and not gpu" ;;
    postgres) echo "postgres and not gpu" ;;
    browser) echo "browser and not postgres and not gpu" ;;
    gpu) echo "gpu" ;;
    *) echo "unknown tier '$1' (default, slow, postgres, browser, gpu)" >&2; return 1 ;;
  esac
}

started_postgres=""
cleanup() { [ -z "$started_postgres" ] || scripts/postgres.sh stop || true; }
trap cleanup EXIT

# Readies what a tier needs; sets `reason` to why it cannot run here, or to "" when it can.
prepare() {
  reason=""
  case "$1" in
    postgres)
      [ -n "${MODELMILL_TEST_POSTGRES_URL:-}" ] && return 0
      local url
      # A port (and so a cluster folder) of its own: another run on this machine keeps its own.
      export MODELMILL_PG_PORT=${MODELMILL_PG_PORT:-$(scripts/postgres.sh free-port)}
      if url=$(scripts/postgres.sh start); then
        started_postgres=1
        export MODELMILL_TEST_POSTGRES_URL=$url
      else
        reason="no PostgreSQL: install Debian's 'postgresql' or set MODELMILL_TEST_POSTGRES_URL"
      fi ;;
    browser)
      [ -x "$chromium" ] || reason="no Chromium at $chromium: install Debian's 'chromium'" ;;
  esac
}

# "passed failed skipped" from a JUnit file (zeros when pytest wrote none).
counts() {
  "$python" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 0, 0)
    raise SystemExit
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
failed = total["failures"] + total["errors"]
print(total["tests"] - failed - total["skipped"], failed, total["skipped"])
EOF
}

summary=()
failed_tiers=()
all_passed=0 all_failed=0 all_skipped=0
for tier in "${tiers[@]}"; do
  expression=$(marker_expression "$tier")
  prepare "$tier"
  if [ -n "$reason" ]; then
    if [ "${CI:-}" = true ]; then
      summary+=("$(printf '%-9s FAILED   cannot run: %s' "$tier" "$reason")")
      failed_tiers+=("$tier")
    else
      summary+=("$(printf '%-9s SKIPPED  %s' "$tier" "$reason")")
    fi
    echo "== tier $tier: ${summary[-1]#* }"
    continue
  fi
  echo "== tier $tier: pytest -m '$expression'"
  junit="$artifacts/junit-$tier.xml"
  rm -f "$junit"
  start=$SECONDS
  rc=0
  "$python" -m pytest -m "$expression" --junitxml="$junit" "${pytest_args[@]}" || rc=$?
  read -r passed failed skipped <<<"$(counts "$junit")"
  all_passed=$((all_passed + passed)) all_failed=$((all_failed + failed))
  all_skipped=$((all_skipped + skipped))
  case $rc in
    0) verdict=ok ;;
    5)
      if [ "${CI:-}" = true ]; then
        verdict="FAILED (no tests collected)"; failed_tiers+=("$tier")
      else
        verdict="ok (no tests)"
      fi ;;
    *) verdict="FAILED (pytest exit $rc)"; failed_tiers+=("$tier") ;;
  esac
  summary+=("$(printf '%-9s %-24s %4d passed %3d failed %3d skipped %5ds' \
    "$tier" "$verdict" "$passed" "$failed" "$skipped" $((SECONDS - start)))")
done

{
  echo "Test tiers:"
  printf '  %s\n' "${summary[@]}"
  # The plain closing line CI reads: totals over every tier.
  echo "total: $all_passed passed, $all_failed failed, $all_skipped skipped"
} | tee "$artifacts/summary.txt"
[ ${#failed_tiers[@]} -eq 0 ]
