#!/usr/bin/env bash
# The README's test command, and what .ci/run calls: install the package with
# its test, bench, celery and tracing extras (bench brings ray[serve] 2.60,
# which the API-surface test compares against; celery, the task consumer
# tests' adapter; tracing, OpenTelemetry) under ci/constraints.txt (so pip
# never backtracks through the lockstep-released fsspec/s3fs/gcsfs or the
# botocore family), then run the whole test suite. Extra arguments go to pytest.
#
# INSTALL_TIMEOUT_S (default 0: none) fails the run when the install takes
# longer than that many seconds; .ci/run sets it so that a resolver that
# starts backtracking fails loudly instead of eating CI's time.
set -euo pipefail
cd "$(dirname "$0")/.."

install_timeout="${INSTALL_TIMEOUT_S:-0}"
install=(python -m pip install --quiet --disable-pip-version-check --progress-bar off
         -c ci/constraints.txt -e ".[test,bench,celery,tracing]")
started=$(date +%s)
if [ "$install_timeout" -gt 0 ]; then
  if ! timeout "$install_timeout" "${install[@]}"; then
    echo "ci/test.sh: installing the test extra failed or took over ${install_timeout}s" >&2
    exit 1
  fi
else
  "${install[@]}"
fi
echo "ci/test.sh: installed in $(( $(date +%s) - started ))s with $(python -m pip --version | cut -d' ' -f1-2)"

set +e
python -m pytest -q -p no:cacheprovider --durations=15 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
