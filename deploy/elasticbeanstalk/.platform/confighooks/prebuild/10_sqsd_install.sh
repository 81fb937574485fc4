#!/bin/bash
# Elastic Beanstalk, configuration deployments, prebuild: install the sqsd binary
# (its SHA-256 checked) and its unit, before anything is stopped.
set -euo pipefail
exec bash "$(dirname "$0")/../../sqsd/sqsd-eb.sh" install
