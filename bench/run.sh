#!/usr/bin/env bash
# Runs the end-to-end benchmark (release build) against LocalStack, which it
# installs and starts like the test suite does. Pass SQSD_BENCH_MESSAGES and
# SQSD_BENCH_CONNECTIONS to change the load.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-env.sh install
started_here=0
if [ -z "${SQSD_TEST_SQS_ENDPOINT:-}" ]; then
  eval "$(scripts/test-env.sh start)"
  started_here=1
fi
trap '[ "$started_here" = 1 ] && scripts/test-env.sh stop' EXIT
cargo bench --locked --bench daemon
