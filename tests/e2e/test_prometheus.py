"""A real Prometheus server scrapes a proxy's `/-/metrics`; PromQL sees exact counts.

The Prometheus binary is Debian's `prometheus` package (`apt-get install
prometheus`; ci/system_packages.sh installs it in CI), found on PATH or at
$PROMETHEUS_BIN (which takes precedence). Without it the test is skipped.

The test deploys a two-replica app into the module's private cluster, starts
its own Prometheus on a free loopback port (storage in tmp_path, one scrape job
with a 1 s interval), waits until the target is up and a warm-up request has
been scraped (so the latency series exist before the measured traffic and
`rate()` sees it), sends N successful and M failing requests, then polls the
query API until the counters, the latency quantiles and the replica gauge match
what the client did.
"""

from __future__ import annotations

import bisect
import math
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import requests

from ray_serving_ext._private.metrics import LATENCY_BUCKETS_MS
from tests.e2e.conftest import REPO_ROOT, _stop
from tests.utils import free_port, wait_for_condition

pytestmark = pytest.mark.e2e

APP = "prom"
ROUTE = "/prom"
DEPLOYMENT = "Counted"
N_OK = 200
N_FAIL = 20
WARMUP = 3


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    """The Prometheus binary ($PROMETHEUS_BIN first, then PATH), or skip.

    Module-scoped and requested before `ray_cluster`, so a skip costs no cluster start.
    """
    override = os.environ.get("PROMETHEUS_BIN")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            pytest.skip(f"PROMETHEUS_BIN={override} is not an executable file; install Debian's "
                        "prometheus package (`apt-get install prometheus`) or point PROMETHEUS_BIN at one")
        return override
    found = shutil.which("prometheus")
    if not found:
        pytest.skip("no `prometheus` binary on PATH: install Debian's prometheus package "
                    "(`apt-get install prometheus`, or run ci/system_packages.sh as root) or set PROMETHEUS_BIN")
    return found


class Prometheus:
    """A Prometheus server of our own on 127.0.0.1:port."""

    def __init__(self, binary: str, workdir: Path, scrape_target: str) -> None:
        self.binary = binary
        self.scrape_target = scrape_target
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        self.config.write_text(textwrap.dedent(f"""\
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: ray_serving_ext
                metrics_path: /-/metrics
                scrape_interval: 1s
                static_configs:
                  - targets: ["{scrape_target}"]
            """))
        self.log_path = workdir / "prometheus.log"
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""
        self.launches = 0

    def launch(self) -> None:
        """Start on a free port (not waiting for it: see wait_ready)."""
        self.launches += 1
        port = free_port()
        while f":{port}" in self.scrape_target:  # not the (not yet bound) port it is to scrape
            port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / f'data{self.launches}'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Until `/-/ready` answers; if the server exited (its port was taken meanwhile), launch again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                if self.launches >= attempts:
                    break
                self.launch()
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not become ready; log:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait (its own process group only)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            _stop(proc, timeout=10.0)

    def api(self, path: str, **params: str) -> Any:
        resp = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        resp.raise_for_status()
        body = resp.json()
        assert body["status"] == "success", body
        return body["data"]

    def scalar(self, promql: str) -> Optional[float]:
        """The single value of an instant query, or None when it has no result (yet)."""
        result = self.api("query", query=promql)["result"]
        if not result:
            return None
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])

    def target_up(self) -> bool:
        targets = self.api("targets", state="active")["activeTargets"]
        return any(t["health"] == "up" for t in targets)


def _deploy(cluster, port: int) -> None:
    script = textwrap.dedent(f"""
        import ray
        import ray_serving_ext as serve
        from tests.e2e.apps.metrics_app import app
        ray.init(address="{cluster.address}")
        serve.start(detached=True, http_options={{"host": "127.0.0.1", "port": {port}}})
        serve.run(app, name="{APP}", route_prefix="{ROUTE}")
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=cluster.env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def _bucket_upper(ms: float) -> float:
    """The upper bound of the latency bucket `ms` falls in (what histogram_quantile can return at most)."""
    i = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)
    return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else math.inf


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def test_prometheus_scrapes_exact_counts_latency_and_replicas(prometheus_bin, ray_cluster, tmp_path):
    t0 = time.monotonic()
    phases: Dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - t0 - sum(phases.values()), 1)

    http_port = free_port()
    # Prometheus starts (a few seconds: TSDB, WAL) while the app deploys; its target is down till then.
    prom = Prometheus(prometheus_bin, tmp_path, f"127.0.0.1:{http_port}")
    prom.launch()
    session = requests.Session()
    try:
        _deploy(ray_cluster, http_port)
        base = f"http://127.0.0.1:{http_port}{ROUTE}"
        wait_for_condition(lambda: session.get(base, timeout=5).text == "ok", timeout=30,
                           message="the app answers over HTTP")
        warmup = 1  # the request just above
        phase("deploy")
        prom.wait_ready()
        wait_for_condition(prom.target_up, timeout=20, interval=0.3, message="the scrape target is up")
        phase("prometheus_up")

        app_sel = f'application="{APP}",route="{ROUTE}"'
        dep_sel = f'application="{APP}",deployment="{DEPLOYMENT}"'
        total_q = f"sum(ray_serve_num_http_requests_total{{{app_sel}}})"

        # Warm-up: the series must exist in Prometheus before the measured traffic, or rate()
        # over a series whose first sample already holds every request would be 0.
        for _ in range(WARMUP):
            assert session.get(base, timeout=5).status_code == 200
        warmup += WARMUP
        wait_for_condition(lambda: prom.scalar(total_q) == warmup, timeout=20, interval=0.3,
                           message=f"Prometheus sees the {warmup} warm-up requests")
        phase("warmup_scraped")

        plan = [False] * N_OK + [True] * N_FAIL
        random.Random(16).shuffle(plan)
        latencies_ms: List[float] = []
        for fail in plan:
            started = time.perf_counter()
            resp = session.get(base, params={"fail": "1"} if fail else None, timeout=10)
            latencies_ms.append((time.perf_counter() - started) * 1000)
            assert resp.status_code == (500 if fail else 200), (resp.status_code, resp.text[:300])
        expected_total = warmup + N_OK + N_FAIL
        phase("traffic")

        queries = {
            "http_total": total_q,
            "http_200": f'sum(ray_serve_num_http_requests_total{{{app_sel},method="GET",status_code="200"}})',
            "http_500": f'sum(ray_serve_num_http_requests_total{{{app_sel},method="GET",status_code="500"}})',
            "http_errors": f'sum(ray_serve_num_http_error_requests_total{{{app_sel},error_code="500"}})',
            "deployment_requests": f"sum(ray_serve_deployment_request_counter_total{{{dep_sel},route=\"{ROUTE}\"}})",
            "deployment_errors": f"sum(ray_serve_deployment_error_counter_total{{{dep_sel},route=\"{ROUTE}\"}})",
            "latency_count": f"sum(ray_serve_http_request_latency_ms_count{{{app_sel}}})",
        }
        expected = {
            "http_total": expected_total, "http_200": warmup + N_OK, "http_500": N_FAIL,
            "http_errors": N_FAIL, "deployment_requests": expected_total, "deployment_errors": N_FAIL,
            "latency_count": expected_total,
        }
        seen: Dict[str, Optional[float]] = {}

        def counts_match() -> bool:
            seen.update({name: prom.scalar(q) for name, q in queries.items()})
            return seen == expected

        try:
            wait_for_condition(counts_match, timeout=30, interval=0.5)
        except AssertionError:
            raise AssertionError(f"counters never matched: expected {expected}, last seen {seen}") from None
        phase("counts_settled")

        # Both replicas served (the per-replica series sum to the total above).
        per_replica = prom.api("query", query=f"ray_serve_deployment_request_counter_total{{{dep_sel}}}")["result"]
        assert len({r["metric"]["replica"] for r in per_replica}) == 2, per_replica

        # Latency: the rate() quantiles over the measured traffic (the warm-up is in the window's
        # first sample already). The proxy's latency of each request is within the client's, so
        # its median's bucket bounds Prometheus's p50 (twice that: rate() extrapolates per series).
        rate_q = f"sum by (le) (rate(ray_serve_http_request_latency_ms_bucket{{{app_sel}}}[1m]))"
        p50 = prom.scalar(f"histogram_quantile(0.5, {rate_q})")
        p99 = prom.scalar(f"histogram_quantile(0.99, {rate_q})")
        client_p50, client_p99 = _percentile(latencies_ms, 0.5), _percentile(latencies_ms, 0.99)
        figures = dict(p50=p50, p99=p99, client_p50=client_p50, client_p99=client_p99, client_max=max(latencies_ms))
        assert p50 is not None and p99 is not None, figures
        assert math.isfinite(p50) and math.isfinite(p99), figures
        assert 0 < p50 < 1000, figures
        assert p50 <= p99, figures
        assert p50 <= 2 * _bucket_upper(client_p50), figures
        assert p99 <= 2 * _bucket_upper(max(latencies_ms)), figures

        # Replicas: two RUNNING, none in any other state; both healthy.
        replicas = {state: prom.scalar(f'sum(ray_serve_deployment_num_replicas{{{dep_sel}{state}}})')
                    for state in (',state="RUNNING"', "")}
        assert replicas == {',state="RUNNING"': 2, "": 2}, replicas
        healthy = prom.scalar(f"sum(ray_serve_deployment_replica_healthy{{{dep_sel}}})")
        assert healthy == 2, healthy

        split = sorted(float(r["value"][1]) for r in per_replica)
        print(f"\nPrometheus figures: {seen}; per replica {split}; latency {figures} (ms); "
              f"replicas {replicas}, healthy {healthy}; phases (s) {phases}")
    finally:
        prom.stop()
        session.close()
        ray_cluster.cli("shutdown", "-y")
