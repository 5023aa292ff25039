#!/usr/bin/env bash
# Set up (if needed) and run `faceset demo`: the whole pipeline on a local demo website.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/faceset demo "$@"
