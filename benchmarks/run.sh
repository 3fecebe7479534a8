#!/usr/bin/env bash
# Install what the benchmark needs, then run it. Arguments go to benchmarks.run:
#   bash benchmarks/run.sh                 # full run: ours, Ray Serve in 3 modes, uvicorn (< 15 min)
#   bash benchmarks/run.sh --quick         # CI smoke mode (ours only, a few seconds of load)
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0

# wrk is the load generator; without it benchmarks.run falls back to a Python client.
if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[bench:run.sh] installing wrk" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
    || echo "[bench:run.sh] could not install wrk; the Python load generator will be used" >&2
fi

python -m pip install --quiet --disable-pip-version-check --progress-bar off -c ci/constraints.txt -e ".[bench]"
exec python -m benchmarks.run "$@"
