#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs LocalStack into a
# virtual environment (.test-env/), starts it, runs every unit and
# integration test against it, and stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-env.sh install
started_here=0
if [ -z "${SQSD_TEST_SQS_ENDPOINT:-}" ]; then
  env_lines=$(scripts/test-env.sh start)
  eval "$env_lines"
  started_here=1
fi
cleanup() { if [ "$started_here" = 1 ]; then scripts/test-env.sh stop; fi; }
trap cleanup EXIT

echo "SQS endpoint for the tests: $SQSD_TEST_SQS_ENDPOINT"
# Integration tests mostly wait on I/O; run many at once.
cargo test --locked --lib --bins --tests -- --test-threads "${SQSD_TEST_THREADS:-12}"
