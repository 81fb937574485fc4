#!/usr/bin/env bash
# Runs the end-to-end benchmark (release build) against LocalStack, which it
# installs and starts like the test suite does. Pass SQSD_BENCH_MESSAGES and
# SQSD_BENCH_CONNECTIONS to change the load.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-env.sh install
started_here=0
if [ -z "${SQSD_TEST_SQS_ENDPOINT:-}" ]; then
  env_lines=$(scripts/test-env.sh start)
  eval "$env_lines"
  if grep -q '^# started' <<<"$env_lines"; then started_here=1; fi
fi
trap '[ "$started_here" = 1 ] && scripts/test-env.sh stop' EXIT
cargo bench --locked --bench daemon
