#!/bin/bash
# Elastic Beanstalk, configuration deployments, predeploy: stop and mask EB's own
# daemon (sqsd.service), and stop sqsd-rs.service (it drains) before the
# application is replaced.
set -euo pipefail
exec bash "$(dirname "$0")/../../sqsd/sqsd-eb.sh" stop
