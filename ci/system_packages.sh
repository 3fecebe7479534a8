#!/usr/bin/env bash
# System packages some tests use, installed when missing; idempotent, and it
# never fails the CI run: whatever it cannot install, it warns about, and the
# tests that need it skip with a message saying so.
#
# - prometheus (Debian's package) for tests/e2e/test_prometheus.py, which
#   starts its own server on a free loopback port. The package's postinst may
#   start the system service on :9090; this script stops it again (and disables
#   it) when it was not running before, so nothing is left listening.
#
# It installs only as root with apt-get available; `apt-get update` is run only
# when a first install fails (stale or empty package lists). Every apt-get call
# is bounded by APT_TIMEOUT_S (default 300) seconds.
set -uo pipefail

APT_TIMEOUT_S="${APT_TIMEOUT_S:-300}"

warn() { echo "ci/system_packages.sh: WARNING: $*" >&2; }
info() { echo "ci/system_packages.sh: $*"; }

listening_9090() { command -v ss >/dev/null 2>&1 && ss -ltn 2>/dev/null | awk '{print $4}' | grep -qE '[:.]9090$'; }

apt_install() {
  DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT_S" \
    apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "$@" </dev/null
}

stop_prometheus_service() {
  # The postinst of Debian's prometheus enables and starts prometheus.service
  # (or the sysv script under a non-systemd init). Stop it: the test runs its own.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    timeout 30 systemctl stop prometheus.service >/dev/null 2>&1 || true
    timeout 30 systemctl disable prometheus.service >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/prometheus ]; then
    timeout 30 /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
  # Still listening? Only then look for the packaged daemon by its exact binary and user.
  if listening_9090 && command -v pgrep >/dev/null 2>&1; then
    for pid in $(pgrep -u prometheus -x prometheus 2>/dev/null); do
      kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 20); do listening_9090 || break; sleep 0.5; done
  fi
  if listening_9090; then
    warn "something still listens on :9090 after installing prometheus ($(ss -ltnp 2>/dev/null | grep -E '[:.]9090 ' | head -1))"
  fi
}

install_prometheus() {
  if [ -n "${PROMETHEUS_BIN:-}" ] && [ -x "${PROMETHEUS_BIN}" ]; then
    info "prometheus: using PROMETHEUS_BIN=${PROMETHEUS_BIN}"
    return 0
  fi
  if command -v prometheus >/dev/null 2>&1; then
    info "prometheus: already installed ($(command -v prometheus))"
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    warn "prometheus is missing and apt-get is not available; tests/e2e/test_prometheus.py will skip"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    warn "prometheus is missing and this is not root (run 'apt-get install prometheus'); tests/e2e/test_prometheus.py will skip"
    return 0
  fi
  local was_listening=0
  listening_9090 && was_listening=1
  info "prometheus: installing Debian's package"
  if ! apt_install prometheus; then
    info "prometheus: first install failed; running apt-get update and trying again"
    DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT_S" apt-get update -o Dpkg::Use-Pty=0 </dev/null \
      || warn "apt-get update failed"
    apt_install prometheus || warn "installing prometheus failed"
  fi
  if [ "$was_listening" -eq 0 ]; then
    stop_prometheus_service
  fi
  if command -v prometheus >/dev/null 2>&1; then
    info "prometheus: installed, $(prometheus --version 2>&1 | head -1)"
  else
    warn "prometheus is still missing; tests/e2e/test_prometheus.py will skip"
  fi
  return 0
}

install_prometheus
exit 0
