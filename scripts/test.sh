#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs LocalStack and moto
# into virtual environments (.test-env/), starts them, runs every unit and
# integration test against it, then runs the integration tests again
# against sqsd's own embedded SQS endpoint, and stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${SQSD_TEST_THREADS:-12}

scripts/test-env.sh install
export SQSD_TEST_PYTHON_JSON=${SQSD_TEST_PYTHON_JSON:-$PWD/.test-env/venv/bin/python}
export SQSD_TEST_PYTHON_QUERY=${SQSD_TEST_PYTHON_QUERY:-$PWD/.test-env/query-venv/bin/python}
export SQSD_TEST_TOOLS=${SQSD_TEST_TOOLS:-$PWD/.test-env/tools-venv/bin}
if [ -z "${SQSD_TEST_FAKETIME_LIB:-}" ]; then
  SQSD_TEST_FAKETIME_LIB=$(find "$PWD/.test-env/tools-venv" -name 'libfaketime.so.1' -path '*libfaketime/vendor*' | head -n 1)
  export SQSD_TEST_FAKETIME_LIB
fi
started_here=0
embedded_pid=
if [ -z "${SQSD_TEST_SQS_ENDPOINT:-}" ] || [ -z "${SQSD_TEST_DYNAMODB_ENDPOINT:-}" ]; then
  env_lines=$(scripts/test-env.sh start)
  eval "$env_lines"
  # Stop it afterwards only if this run started it.
  if grep -q '^# started' <<<"$env_lines"; then started_here=1; fi
fi
cleanup() {
  if [ -n "$embedded_pid" ]; then kill "$embedded_pid" 2>/dev/null || true; fi
  if [ "$started_here" = 1 ]; then scripts/test-env.sh stop; fi
}
trap cleanup EXIT

echo "== against LocalStack: $SQSD_TEST_SQS_ENDPOINT"
SQSD_TEST_SQS_KIND=${SQSD_TEST_SQS_KIND:-localstack} cargo test --locked --lib --bins --tests -- --test-threads "$threads"

# The same integration suite against the embedded endpoint.
log=$(mktemp)
target/debug/sqsd sqs-server --sqs-listen 127.0.0.1:0 2>"$log" &
embedded_pid=$!
embedded=
for _ in $(seq 100); do
  embedded=$(sed -n 's/.*endpoint at \(http:[^ ]*\).*/\1/p' "$log")
  [ -n "$embedded" ] && break
  sleep 0.1
done
if [ -z "$embedded" ]; then
  echo "the embedded SQS endpoint did not start:" >&2
  cat "$log" >&2
  exit 1
fi
echo "== against the embedded SQS endpoint: $embedded"
SQSD_TEST_SQS_KIND=embedded SQSD_TEST_SQS_ENDPOINT=$embedded cargo test --locked --tests -- --test-threads "$threads"

# The container image's build step (Dockerfile) is this same command.
echo "== the release build"
cargo build --locked --release
