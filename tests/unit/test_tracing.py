"""Tracing without Ray: TracingConfig's defaults and validation, the W3C
propagation helpers, the exporter contract, and the span chain one process
builds (routing span -> metadata -> replica span -> get_trace_context)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, List

import pytest
from pydantic import ValidationError

import ray_serving_ext as serve
from ray_serving_ext._private import tracing
from ray_serving_ext._private.common import Request, RequestMetadata
from ray_serving_ext.api import _tracing_config_model
from ray_serving_ext.config_file import ServeDeploySchema
from ray_serving_ext.schema import TracingConfig

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MEMORY = InMemorySpanExporter()


def memory_exporter() -> List[Any]:
    return [SimpleSpanProcessor(MEMORY)]


def takes_an_argument(x: Any) -> List[Any]:
    return []


def returns_a_processor() -> Any:
    return SimpleSpanProcessor(MEMORY)


def returns_no_processors() -> List[Any]:
    return ["not a processor"]


# ---- TracingConfig ---------------------------------------------------------------------------
def test_tracing_config_defaults_follow_the_environment_constants():
    config = TracingConfig()
    assert config.enabled is (tracing.TRACING_EXPORTER_IMPORT_PATH != "")
    assert config.exporter_import_path == tracing.TRACING_EXPORTER_IMPORT_PATH
    assert config.sampling_ratio == tracing.TRACING_SAMPLING_RATIO
    assert serve.TracingConfig is TracingConfig


@pytest.mark.parametrize("ratio", [-0.01, 1.01])
def test_sampling_ratio_outside_the_unit_interval_is_refused(ratio):
    with pytest.raises(ValidationError, match="sampling_ratio must be between 0.0 and 1.0"):
        TracingConfig(sampling_ratio=ratio)


def test_tracing_config_accepts_the_bounds_and_rejects_unknown_keys():
    assert TracingConfig(sampling_ratio=0).sampling_ratio == 0.0
    assert TracingConfig(sampling_ratio=1).sampling_ratio == 1.0
    with pytest.raises(ValidationError):
        TracingConfig(exporter="x")


def test_config_file_takes_a_tracing_config():
    schema = ServeDeploySchema.model_validate({
        "applications": [{"import_path": "a.b:c"}],
        "tracing_config": {"enabled": True, "sampling_ratio": 0.5},
    })
    assert schema.tracing_config == TracingConfig(enabled=True, exporter_import_path="", sampling_ratio=0.5)
    assert ServeDeploySchema(applications=[]).tracing_config is None
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate({"applications": [], "tracing_config": {"sampling_ratio": 2}})


def test_start_validates_the_tracing_config():
    assert _tracing_config_model(None) is None
    assert _tracing_config_model({"enabled": True}).enabled is True
    with pytest.raises(TypeError, match="tracing_config must be a dict or TracingConfig"):
        _tracing_config_model("on")


def test_resolve_settings(monkeypatch):
    off = TracingConfig(enabled=False, exporter_import_path="m:f")
    assert tracing.resolve_settings(off) is None
    assert tracing.resolve_settings(TracingConfig(enabled=True, exporter_import_path="", sampling_ratio=0.2)) == (
        tracing.DEFAULT_EXPORTER_IMPORT_PATH, 0.2)
    monkeypatch.setattr(tracing, "TRACING_EXPORTER_IMPORT_PATH", "")
    assert tracing.resolve_settings(None) is None
    monkeypatch.setattr(tracing, "TRACING_EXPORTER_IMPORT_PATH", "m:f")
    monkeypatch.setattr(tracing, "TRACING_SAMPLING_RATIO", 0.3)
    assert tracing.resolve_settings(None) == ("m:f", 0.3)


# ---- propagation -----------------------------------------------------------------------------
def test_header_carrier_keeps_only_the_trace_context_headers():
    headers = [(b"Traceparent", b"00-abc-def-01"), (b"x-request-id", b"r"), (b"tracestate", b"k=v")]
    assert tracing.header_carrier(headers) == {"traceparent": "00-abc-def-01", "tracestate": "k=v"}
    assert tracing.header_carrier([(b"host", b"x")]) is None


def test_inject_and_extract_round_trip():
    from opentelemetry import trace

    span = TracerProvider().get_tracer("t").start_span("s")
    carrier = tracing.inject(trace.set_span_in_context(span))
    context = span.get_span_context()
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
    extracted = trace.get_current_span(tracing.extract(carrier)).get_span_context()
    assert (extracted.trace_id, extracted.span_id, extracted.is_remote) == (context.trace_id, context.span_id, True)


@pytest.mark.parametrize("carrier", [None, {}, {"traceparent": "garbage"}])
def test_extract_without_a_valid_traceparent_is_a_fresh_root(carrier):
    from opentelemetry import trace

    assert not trace.get_current_span(tracing.extract(carrier)).get_span_context().is_valid


# ---- the exporter contract ------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("MEMORY", "Tracing exporter must be a function."),
    ("takes_an_argument", "Tracing exporter cannot take any arguments."),
    ("returns_a_processor", "needs to be of type List\\[SpanProcessor\\]"),
    ("returns_no_processors", "needs to be of type List\\[SpanProcessor\\]"),
])
def test_exporters_breaking_the_contract_are_refused(name, message):
    with pytest.raises(TypeError, match=message):
        tracing.load_span_processors(f"{__name__}:{name}", "unused.json")


def test_default_exporter_appends_json_spans_under_the_logs_dir(monkeypatch, tmp_path):
    import ray_serving_ext._private.logging_utils as logging_utils

    monkeypatch.setattr(logging_utils, "serve_logs_dir", lambda: str(tmp_path))
    processors = tracing.load_span_processors(tracing.DEFAULT_EXPORTER_IMPORT_PATH,
                                              tracing.spans_file_name("replica", "app/dep 1"))
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("written").end()
    path = tmp_path / "spans" / "replica_app_dep_1_tracing.json"
    assert json.loads(path.read_text())["name"] == "written"


# ---- spans in one process --------------------------------------------------------------------
@pytest.fixture
def traced():
    MEMORY.clear()
    assert tracing.setup_tracing("test", "unit", TracingConfig(
        enabled=True, exporter_import_path=f"{__name__}:memory_exporter", sampling_ratio=1.0))
    yield MEMORY
    tracing.disable_tracing()
    MEMORY.clear()


def test_setup_is_off_for_a_disabled_config():
    assert tracing.setup_tracing("test", "unit", TracingConfig(enabled=False)) is False
    assert tracing.enabled is False


def test_routing_span_parents_the_replica_span(traced):
    """What the proxy or a handle (routing) and a replica (serving) do, in one process."""
    seen = {}

    async def assign(request: Request) -> str:  # stands for the router: the replica gets the metadata
        seen["carrier"] = dict(request.metadata.tracing_context)
        meta = RequestMetadata(request_id=request.metadata.request_id, app_name="app", call_method="ping")
        meta.tracing_context = seen["carrier"]
        span = tracing.start_replica_span(meta, "Dep", "app", "r1")
        seen["context"] = serve.get_trace_context()
        tracing.end_replica_span(span, meta, "Dep", "OK", None)
        return "done"

    meta = RequestMetadata(request_id="req-1", app_name="app", call_method="ping")
    routed = tracing.traced_routing(assign, "Dep", "app", tracing.extract(None))
    assert asyncio.run(routed(Request("unary", meta))) == "done"

    spans = {s.name: s for s in traced.get_finished_spans()}
    route, replica = spans["route_to_replica Dep ping"], spans["replica_handle_request Dep ping"]
    assert route.parent is None and replica.parent.span_id == route.context.span_id
    assert replica.context.trace_id == route.context.trace_id
    assert {"request_id": "req-1", "replica_id": "r1", "deployment": "Dep", "app": "app", "call_method": "ping",
            "rpc.method": "ping", "rpc.service": "Dep"}.items() <= dict(replica.attributes).items()
    from opentelemetry import trace

    assert trace.get_current_span(seen["context"]).get_span_context().span_id == replica.context.span_id
    assert serve.get_trace_context() is None  # nothing is current once both spans ended


def test_replica_span_records_the_raised_exception(traced):
    meta = RequestMetadata(request_id="req-2", app_name="app")
    span = tracing.start_replica_span(meta, "Dep", "app", "r1")
    try:
        raise ValueError("boom")
    except ValueError:
        tracing.end_replica_span(span, meta, "Dep", "ERROR", None)
    (finished,) = traced.get_finished_spans()
    assert [e.name for e in finished.events] == ["exception"]
    assert finished.events[0].attributes["exception.escaped"] == "False"


def test_metadata_does_not_pickle_an_unset_tracing_context():
    import pickle

    meta = RequestMetadata(request_id="r", app_name="a")
    assert "tracing_context" not in pickle.loads(pickle.dumps(meta)).__dict__
    meta.tracing_context = {"traceparent": "x"}
    assert pickle.loads(pickle.dumps(meta)).tracing_context == {"traceparent": "x"}


def test_the_package_imports_without_opentelemetry_being_loaded():
    import subprocess
    import sys

    code = "import sys, ray_serving_ext; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == "False"


def test_a_config_files_tracing_config_starts_serve_with_it(monkeypatch):
    from ray_serving_ext import api, cli

    started, clients = {}, iter([None, "client"])
    monkeypatch.setattr(cli, "_client", lambda: next(clients))
    monkeypatch.setattr(api, "start", lambda **kwargs: started.update(kwargs))
    schema = ServeDeploySchema.model_validate({
        "applications": [], "tracing_config": {"enabled": True, "sampling_ratio": 0.5}})
    assert cli._serve_for(schema, is_file=True) == "client"
    assert started["tracing_config"] == TracingConfig(enabled=True, exporter_import_path="", sampling_ratio=0.5)


def test_a_running_instance_takes_the_files_tracing_config_for_new_replicas(monkeypatch):
    from ray_serving_ext import cli

    class Client:
        def __init__(self) -> None:
            self.tracing: Any = None

        def set_tracing_config(self, config: TracingConfig) -> None:
            self.tracing = config

    client = Client()
    monkeypatch.setattr(cli, "_client", lambda: client)
    schema = ServeDeploySchema.model_validate({"applications": [], "tracing_config": {"enabled": False}})
    assert cli._serve_for(schema, is_file=True) is client
    assert client.tracing == TracingConfig(enabled=False)


def test_enabling_tracing_without_opentelemetry_says_what_to_install(monkeypatch):
    def missing(name: str) -> Any:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(tracing.importlib, "import_module", missing)
    with pytest.raises(ImportError, match="pip install opentelemetry-api.*ray_serving_ext\\[tracing\\]"):
        _tracing_config_model({"enabled": True})
    assert _tracing_config_model({"enabled": False}).enabled is False  # nothing to import when off
