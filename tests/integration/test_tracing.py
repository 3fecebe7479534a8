"""Tracing: `serve.start(tracing_config=TracingConfig(...))` makes proxies and
replicas export OpenTelemetry spans (Ray Serve 2.60's names, attributes and
parent links), the W3C trace context travels with each request, and
`serve.get_trace_context()` is the request's span inside a replica.

Each test starts its own instance (tracing is fixed when Serve starts) and
shuts it down, so the shared instance is started afresh by the next file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any, Dict, List

import pytest
import requests

import ray_serving_ext as serve
from tests.integration import tracing_exporter
from tests.utils import free_port, wait_for_condition

pytest.importorskip("opentelemetry.sdk.trace")


def _current_span_ids() -> Dict[str, Any]:
    """The ids of the span `serve.get_trace_context()` holds (None outside a trace)."""
    from opentelemetry import trace

    context = serve.get_trace_context()
    if context is None:
        return {"context": None}
    span_context = trace.get_current_span(context).get_span_context()
    return {"context": "set", "trace_id": format(span_context.trace_id, "032x"),
            "span_id": format(span_context.span_id, "016x")}


@serve.deployment
def traced_echo(request=None) -> Dict[str, Any]:
    return _current_span_ids()


@serve.deployment
class Inner:
    def __call__(self, value: str) -> Dict[str, Any]:
        from opentelemetry import trace

        # A user span started under the request's context lands in the same trace.
        with trace.get_tracer("test_tracing").start_as_current_span("user_work", context=serve.get_trace_context()):
            pass
        return {"value": value, **_current_span_ids()}


@serve.deployment
class Outer:
    def __init__(self, inner) -> None:
        self._inner = inner

    async def __call__(self, request) -> Dict[str, Any]:
        return {"outer": _current_span_ids(), "inner": await self._inner.remote("x")}


def _restart(serve_instance: Any, **tracing: Any) -> str:
    """Shut down whatever instance runs, clear the spans, start one with this TracingConfig."""
    serve.shutdown()
    serve_instance.options = None  # the shared instance is gone: the next `ensure()` starts it again
    shutil.rmtree(tracing_exporter.spans_dir(), ignore_errors=True)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, tracing_config=serve.TracingConfig(**tracing))
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def sampled_url(serve_instance):
    """One instance tracing every request, for the tests of what the spans say."""
    yield _restart(serve_instance, **_traced(sampling_ratio=1.0))
    serve.shutdown()
    serve_instance.options = None


@pytest.fixture
def app_name():
    """A name for the test's application, deleted when the test ends."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    yield name
    serve.delete(name)


@pytest.fixture
def start_traced(serve_instance):
    """Start a fresh instance with the given TracingConfig; returns its URL. It is
    shut down when the test ends."""
    yield lambda **tracing: _restart(serve_instance, **tracing)
    serve.shutdown()
    serve_instance.options = None


def _traced(**extra: Any) -> Dict[str, Any]:
    return {"enabled": True, "exporter_import_path": tracing_exporter.EXPORTER_IMPORT_PATH, **extra}


def _spans_of(request_id: str, names: List[str]) -> Dict[str, Dict[str, Any]]:
    """The request's spans by their name's first word, once every one in `names` is exported."""
    def found() -> Dict[str, Dict[str, Any]]:
        by_name = {s["name"].split(" ")[0]: s for s in tracing_exporter.read_spans()
                   if s["attributes"].get("request_id") == request_id}
        return by_name if set(names) <= set(by_name) else {}
    return wait_for_condition(found, timeout=20, message=f"spans {names} of request {request_id}")


def _get(url: str, **headers: str) -> requests.Response:
    request_id = uuid.uuid4().hex
    resp = requests.get(url, headers={"x-request-id": request_id, **headers}, timeout=30)
    assert resp.status_code == 200, resp.text
    resp.request_id = request_id  # type: ignore[attr-defined]
    return resp


CHAIN = ["proxy_http_request", "route_to_replica", "replica_handle_request"]


def test_http_request_traces_proxy_routing_and_replica(sampled_url, app_name):
    url = sampled_url
    serve.run(traced_echo.bind(), name=app_name, route_prefix="/echo")

    resp = _get(f"{url}/echo/a")
    spans = _spans_of(resp.request_id, CHAIN)
    proxy, route, replica = (spans[n] for n in CHAIN)
    assert len({proxy["trace_id"], route["trace_id"], replica["trace_id"]}) == 1
    assert proxy["parent_id"] is None  # no traceparent from the client: a new trace
    assert route["parent_id"] == proxy["span_id"] and replica["parent_id"] == route["span_id"]
    assert proxy["name"] == "proxy_http_request traced_echo GET /echo/a"
    assert replica["name"] == "replica_handle_request traced_echo __call__"
    assert proxy["kind"] == replica["kind"] == "SERVER"
    assert proxy["status"] == "OK"
    assert {"app": app_name, "deployment": "traced_echo", "request_type": "http", "request_method": "GET",
            "http.status_code": 200, "http.method": "GET"}.items() <= proxy["attributes"].items()
    assert {"app": app_name, "deployment": "traced_echo", "call_method": "__call__", "route": "/echo",
            "http.method": "GET", "http.status_code": 200}.items() <= replica["attributes"].items()
    assert replica["attributes"]["replica_id"]
    # Inside the replica, get_trace_context() is the replica span's context.
    assert resp.json() == {"context": "set", "trace_id": replica["trace_id"], "span_id": replica["span_id"]}


def test_incoming_traceparent_is_honoured(sampled_url, app_name):
    url = sampled_url
    serve.run(traced_echo.bind(), name=app_name, route_prefix="/")
    trace_id, parent_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]

    resp = _get(url, traceparent=f"00-{trace_id}-{parent_span}-01")
    spans = _spans_of(resp.request_id, CHAIN)
    assert {s["trace_id"] for s in spans.values()} == {trace_id}
    assert spans["proxy_http_request"]["parent_id"] == parent_span
    assert resp.json()["trace_id"] == trace_id


def test_composed_call_is_a_child_of_the_calling_replica(sampled_url, app_name):
    url = sampled_url
    serve.run(Outer.bind(Inner.bind()), name=app_name, route_prefix="/")

    resp = _get(url)
    body = resp.json()
    _spans_of(resp.request_id, ["proxy_http_request"])  # the proxy's span ends last
    by_id = {s["span_id"]: s for s in tracing_exporter.read_spans()}
    inner = by_id[body["inner"]["span_id"]]
    inner_route = by_id[inner["parent_id"]]
    outer = by_id[inner_route["parent_id"]]
    assert inner["name"] == "replica_handle_request Inner __call__"
    assert inner_route["name"] == "route_to_replica Inner __call__"
    # As Ray Serve's: the routing span covers choosing a replica and sending, not the call itself.
    assert inner_route["end"] <= inner["end"]
    assert {"rpc.method": "__call__", "rpc.service": "Inner"}.items() <= inner["attributes"].items()
    assert outer["span_id"] == body["outer"]["span_id"]
    assert outer["name"] == "replica_handle_request Outer __call__"
    assert by_id[by_id[outer["parent_id"]]["parent_id"]]["name"].startswith("proxy_http_request Outer")
    assert len({inner["trace_id"], outer["trace_id"], body["inner"]["trace_id"]}) == 1
    # The user's span nests under the inner replica's span.
    user = [s for s in by_id.values() if s["name"] == "user_work"]
    assert len(user) == 1 and user[0]["parent_id"] == inner["span_id"]
    # The handle call carries the HTTP request's id.
    assert inner["attributes"]["request_id"] == outer["attributes"]["request_id"] == resp.request_id


@serve.deployment
def failing(request=None) -> str:
    raise RuntimeError("broken on purpose")


def test_a_failed_request_is_an_error_span(sampled_url, app_name):
    serve.run(failing.bind(), name=app_name, route_prefix="/")
    request_id = uuid.uuid4().hex
    resp = requests.get(sampled_url, headers={"x-request-id": request_id}, timeout=30)
    assert resp.status_code == 500
    spans = _spans_of(request_id, CHAIN)
    proxy, replica = spans["proxy_http_request"], spans["replica_handle_request"]
    assert (proxy["status"], proxy["attributes"]["http.status_code"]) == ("ERROR", 500)
    assert replica["attributes"]["http.status_code"] == 500
    assert replica["events"] == ["exception"]  # the user's error, recorded on the replica's span


def test_sampling_ratio_zero_exports_only_sampled_parents(start_traced):
    url = start_traced(**_traced(sampling_ratio=0.0))
    serve.run(traced_echo.bind(), name="echo", route_prefix="/")
    unsampled = [_get(url).request_id for _ in range(3)]
    # Parent-based sampling: a client's sampled traceparent is still followed,
    # which shows the exporter works and has had time to see the requests above.
    trace_id = uuid.uuid4().hex
    sampled = _get(url, traceparent=f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01")
    _spans_of(sampled.request_id, CHAIN)
    exported = {s["attributes"].get("request_id") for s in tracing_exporter.read_spans()}
    assert not exported & set(unsampled)
    assert {s["trace_id"] for s in tracing_exporter.read_spans()} == {trace_id}


def test_tracing_disabled_sets_up_nothing(start_traced):
    url = start_traced(**_traced(enabled=False, sampling_ratio=1.0))
    serve.run(traced_echo.bind(), name="echo", route_prefix="/")
    resp = _get(url, traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01")
    assert resp.json() == {"context": None}
    # Tracing is set up before a proxy or replica serves its first request.
    assert tracing_exporter.setup_markers() == []
    assert tracing_exporter.read_spans() == []


def test_enabled_without_an_exporter_path_writes_json_spans_to_the_logs_dir(start_traced):
    from ray_serving_ext._private.logging_utils import serve_logs_dir

    url = start_traced(enabled=True, exporter_import_path="", sampling_ratio=1.0)
    serve.run(traced_echo.bind(), name="echo", route_prefix="/")
    request_id = _get(url).request_id
    spans_dir = os.path.join(serve_logs_dir(), "spans")

    def files_with_the_request() -> List[str]:
        names = sorted(os.listdir(spans_dir)) if os.path.isdir(spans_dir) else []
        found = []
        for name in names:
            with open(os.path.join(spans_dir, name), encoding="utf-8") as f:
                if request_id in f.read():
                    found.append(name)
        return found if len(found) == 2 else []

    files = wait_for_condition(files_with_the_request, timeout=20)
    # One file per process: the proxy's (proxy and routing spans) and the replica's.
    assert any(n.startswith("proxy_") for n in files) and any(n.startswith("replica_echo_traced_echo") for n in files)
    assert all(n.endswith("_tracing.json") for n in files)
