#!/bin/bash
# Elastic Beanstalk, configuration deployments, postdeploy: enable and (re)start
# sqsd-rs.service with the daemon configuration EB has just written.
set -euo pipefail
exec bash "$(dirname "$0")/../../sqsd/sqsd-eb.sh" start
