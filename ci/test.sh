#!/usr/bin/env bash
# The README's test command, and what .ci/run calls: install the package with
# its test, bench, celery and tracing extras (bench brings ray[serve] 2.60,
# which the API-surface test compares against; celery, the task consumer
# tests' adapter; tracing, OpenTelemetry) under ci/constraints.txt (so pip
# never backtracks through the lockstep-released fsspec/s3fs/gcsfs or the
# botocore family), then run the whole test suite (tests/e2e and eleven integration
# modules beside unit and the rest of integration, as two pytest runs at once).
# Extra arguments go to one pytest run instead.
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
if [ "$#" -gt 0 ]; then  # a selection: one pytest run, as given
  python -m pytest -q -rs -p no:cacheprovider --durations=15 "$@"
  status=$?
else
  # The whole suite as two pytest runs at once: the e2e tests (their own
  # subprocess clusters) plus the integration modules that restart the shared
  # instance with other HTTP options or kill components (they get a local Ray
  # of their own there), beside unit + the rest of integration (one shared
  # local Ray). Most of the suite's time is waiting (drains, restarts, polls),
  # so on 2 cores the two overlap well; each half's output is printed whole.
  side=(test_https test_proxy_auth test_proxy_bind test_proxy_limits test_tracing test_timeouts test_direct_ingress
        test_rest_api test_failures test_gang_scheduling test_proxy_middlewares)
  side_paths=() ignores=()
  for m in "${side[@]}"; do
    side_paths+=("tests/integration/$m.py")
    ignores+=("--ignore=tests/integration/$m.py")
  done
  e2e_log="$(mktemp /tmp/ray_serving_ext_e2e.XXXXXX)"
  python -m pytest -q -rs -p no:cacheprovider --durations=10 tests/e2e "${side_paths[@]}" >"$e2e_log" 2>&1 &
  e2e_pid=$!
  python -m pytest -q -rs -p no:cacheprovider --durations=15 tests/unit tests/integration "${ignores[@]}"
  status=$?
  wait "$e2e_pid"
  e2e_status=$?
  echo "---------------- tests/e2e and ${#side[@]} integration modules (run alongside) ----------------"
  cat "$e2e_log"
  rm -f "$e2e_log"
  if [ "$status" -eq 0 ]; then status=$e2e_status; fi
fi
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
