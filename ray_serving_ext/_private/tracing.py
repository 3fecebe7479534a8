"""OpenTelemetry tracing of requests through proxies, handle calls and replicas.

Ray Serve 2.60's contract. Each proxy and replica process that finds tracing
enabled (its `TracingConfig`, or the RAY_SERVE_TRACING_* variables when it has
none) calls the exporter function once and installs a tracer provider whose
sampler is `ParentBasedTraceIdRatio(sampling_ratio)`. A request then yields

    proxy_http_request <deployment> <method> <path>      (proxy, SERVER)
      route_to_replica <deployment> <method>             (the caller's routing)
        replica_handle_request <deployment> <method>     (replica, SERVER)
          route_to_replica ...                           (a handle call it makes)
            replica_handle_request ...

An incoming W3C `traceparent` (and `tracestate`) header makes the proxy span a
child of the client's span. The context crosses processes in
`RequestMetadata.tracing_context` (W3C headers as a dict), set by the routing
span and read by the replica. While a replica runs user code its span is the
current OpenTelemetry context, so `get_trace_context()` returns it and user
spans nest under it.

OpenTelemetry is imported only once tracing is on in a process: until then
`enabled` is False and that one module attribute is all a request pays for.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Tuple

from ray_serving_ext._private.config_types import parse_import_path
from ray_serving_ext._private.constants import TRACING_EXPORTER_IMPORT_PATH, TRACING_SAMPLING_RATIO
from ray_serving_ext.config import TracingConfig

logger = logging.getLogger("ray_serving_ext.tracing")

# Whether this process records spans. Read on every request: keep it a plain bool.
enabled = False
_provider: Any = None
_tracer: Any = None

# The exporter used when tracing is enabled with an empty import path.
DEFAULT_EXPORTER_IMPORT_PATH = "ray_serving_ext._private.tracing:default_tracing_exporter"

# W3C trace-context headers (https://www.w3.org/TR/trace-context/), lower-case as ASGI has them.
TRACE_HEADERS = ("traceparent", "tracestate")

_MISSING_OTEL = (
    "You must `pip install opentelemetry-api` and `pip install opentelemetry-sdk` to enable tracing on "
    "Ray Serve (or install ray_serving_ext[tracing])."
)


def require_opentelemetry() -> None:
    """Raise ImportError saying what to install when the OpenTelemetry SDK is missing."""
    try:
        for module in ("opentelemetry.sdk.trace", "opentelemetry.trace.propagation.tracecontext"):
            importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(_MISSING_OTEL) from exc


def resolve_settings(config: Optional[TracingConfig]) -> Optional[Tuple[str, float]]:
    """(exporter import path, sampling ratio) when `config` turns tracing on, else None.

    With no config the RAY_SERVE_TRACING_* variables of this process decide (a
    set exporter path turns tracing on); an enabled config with an empty path
    means the built-in file exporter.
    """
    if config is None:
        if not TRACING_EXPORTER_IMPORT_PATH:
            return None
        return TRACING_EXPORTER_IMPORT_PATH, TRACING_SAMPLING_RATIO
    if not config.enabled:
        return None
    return config.exporter_import_path or DEFAULT_EXPORTER_IMPORT_PATH, config.sampling_ratio


def setup_tracing(component: str, component_id: str, config: Optional[TracingConfig]) -> bool:
    """Turn tracing on in this process if `config` says so; True when it is on.

    Calls the exporter function (validated as Ray Serve does: a function of no
    arguments returning a list of SpanProcessors; the built-in one gets this
    component's spans file name) and installs the tracer provider globally, so
    spans user code starts with `opentelemetry.trace.get_tracer()` are
    exported too. Raises ImportError without OpenTelemetry, TypeError for an
    exporter that breaks the contract.
    """
    global enabled, _provider, _tracer
    settings = resolve_settings(config)
    if settings is None:
        enabled = False
        return False
    require_opentelemetry()
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    path, ratio = settings
    processors = load_span_processors(path, spans_file_name(component, component_id))
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(ratio))
    for processor in processors:
        provider.add_span_processor(processor)
    # Global so user spans reach the exporter; OpenTelemetry allows this once per
    # process, and a replica or proxy is one process, so it is ours to set.
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer("ray_serving_ext")
    enabled = True
    logger.info("Tracing enabled (exporter %s, sampling ratio %s).", path, ratio)
    return True


def flush() -> None:
    """Export the spans processors still buffer (before a proxy or replica exits)."""
    if _provider is not None:
        _provider.force_flush()


def disable_tracing() -> None:
    """Flush, then stop recording spans in this process."""
    global enabled, _provider, _tracer
    flush()
    enabled, _provider, _tracer = False, None, None


def spans_file_name(component: str, component_id: str) -> str:
    """`<component>_<id>_tracing.json`, unsafe characters made underscores (as Serve log files)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{component}_{component_id}") + "_tracing.json"


def load_span_processors(import_path: str, file_name: str) -> List[Any]:
    """The span processors the exporter function at `import_path` returns.

    The built-in exporter is called with `file_name`; any other must be a
    function of no arguments returning a list of SpanProcessors (TypeError
    otherwise, with Ray Serve's messages).
    """
    module_name, attr = parse_import_path(import_path)
    exporter: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        exporter = getattr(exporter, part)
    if import_path == DEFAULT_EXPORTER_IMPORT_PATH:
        return exporter(file_name)
    if not inspect.isfunction(exporter):
        raise TypeError("Tracing exporter must be a function.")
    if inspect.signature(exporter).parameters:
        raise TypeError("Tracing exporter cannot take any arguments.")
    processors = exporter()
    check_span_processors(processors)
    return processors


def check_span_processors(processors: Any) -> None:
    """TypeError unless `processors` is a list of OpenTelemetry SpanProcessors."""
    from opentelemetry.sdk.trace import SpanProcessor

    if not isinstance(processors, list):
        raise TypeError(
            "Output of tracing exporter needs to be of type List[SpanProcessor], "
            f"but received type {type(processors)}."
        )
    for processor in processors:
        if not isinstance(processor, SpanProcessor):
            raise TypeError(
                "Output of tracing exporter needs to be of type List[SpanProcessor], "
                f"but received type {type(processor)}."
            )


def default_tracing_exporter(file_name: str) -> List[Any]:
    """The built-in exporter: each span as JSON, appended to `<serve logs>/spans/<file_name>`."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    from ray_serving_ext._private.logging_utils import serve_logs_dir

    directory = os.path.join(serve_logs_dir(), "spans")
    os.makedirs(directory, exist_ok=True)
    # Open for the process's life: the exporter appends every span, and closes it at shutdown.
    out = open(os.path.join(directory, file_name), "a", encoding="utf-8")  # noqa: SIM115

    class _FileSpanExporter(ConsoleSpanExporter):
        def shutdown(self) -> None:
            if not out.closed:
                out.close()

    return [SimpleSpanProcessor(_FileSpanExporter(out=out))]


# ---- propagation ---------------------------------------------------------------------------
def header_carrier(headers: Iterable[Tuple[bytes, bytes]]) -> Optional[Dict[str, str]]:
    """The W3C trace-context headers among ASGI `headers`, as a carrier dict; None if there are none."""
    carrier: Optional[Dict[str, str]] = None
    for key, value in headers:
        name = key.decode("latin-1").lower()
        if name in TRACE_HEADERS:
            if carrier is None:
                carrier = {}
            carrier[name] = value.decode("latin-1")
    return carrier


def inject(context: Any = None) -> Dict[str, str]:
    """`context` (default: the current one) as W3C headers; empty when it holds no valid span."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: Dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=context)
    return carrier


def extract(carrier: Optional[Dict[str, str]]) -> Any:
    """The OpenTelemetry context W3C headers describe: a fresh root context when they
    are missing or malformed (so a request never inherits an unrelated span)."""
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not carrier:
        return Context()
    return TraceContextTextMapPropagator().extract(carrier=carrier, context=Context())


def current_context() -> Any:
    """The current OpenTelemetry context, captured where a handle call is made."""
    from opentelemetry.context import get_current

    return get_current()


def get_trace_context() -> Optional[Any]:
    """The current OpenTelemetry context, or None when it is empty (no span, no baggage).

    OpenTelemetry is not imported for this: when nothing in the process has
    imported it, no context can have been set.
    """
    if "opentelemetry.context" not in sys.modules:
        return None
    from opentelemetry.context import get_current

    context = get_current()
    return context if context else None


# ---- spans ---------------------------------------------------------------------------------
class ServeSpan:
    """One Serve span, current (attached) from creation until `end()`, which must run
    in the same task or thread context that created it."""

    __slots__ = ("_token", "span")

    def __init__(self, name: str, parent: Any, attributes: Dict[str, Any]) -> None:
        from opentelemetry.context import attach
        from opentelemetry.trace import SpanKind, set_span_in_context

        attrs = {k: v for k, v in attributes.items() if v is not None}
        attrs["resource.name"] = name  # what Datadog shows as the operation, as Ray Serve sets it
        self.span = _tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attrs)
        # The span is made current even when it is not sampled, so its children
        # inherit the decision instead of sampling on their own.
        self._token = attach(set_span_in_context(self.span, parent))

    def set_attributes(self, attributes: Dict[str, Any]) -> None:
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def end(self, exc: Optional[BaseException] = None, is_error: Optional[bool] = None, escaped: bool = True) -> None:
        """Record `exc`, set the status (ERROR/OK when `is_error` is given), end and detach."""
        from opentelemetry.context import detach
        from opentelemetry.trace import Status, StatusCode

        try:
            if exc is not None:
                self.span.record_exception(exc, escaped=escaped)
            if is_error is not None:
                status = Status(StatusCode.ERROR, str(exc) if exc is not None else None) if is_error \
                    else Status(StatusCode.OK)
                self.span.set_status(status)
            self.span.end()
        finally:
            detach(self._token)


async def trace_proxy_request(
    scope: Dict[str, Any], request_id: str, app_name: str, deployment: str, route_path: str,
    send: Callable[[Dict[str, Any]], Awaitable[None]],
    serve: Callable[[Callable[[Dict[str, Any]], Awaitable[None]]], Awaitable[None]],
) -> None:
    """Run `serve(send)` (the proxy forwarding one matched HTTP request) inside its
    `proxy_http_request` span: a child of the client's `traceparent`, if it sent one,
    ending with the response status (4xx/5xx, or 499 for no answer, is an error)."""
    method = scope.get("method", "")
    parent = extract(header_carrier(scope.get("headers", ())))
    span = ServeSpan(f"proxy_http_request {deployment} {method} {route_path}", parent, {
        "request_id": request_id, "deployment": deployment, "app": app_name, "request_type": "http",
        "request_method": method, "request_route_path": route_path,
    })
    status = [0]

    async def traced_send(message: Dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        await send(message)

    exc: Optional[BaseException] = None
    try:
        await serve(traced_send)
    except BaseException as e:
        exc = e
        raise
    finally:
        code = status[0] or 499
        span.set_attributes({"http.method": method, "http.status_code": code, "http.route": route_path})
        span.end(exc, is_error=code >= 400)


def traced_routing(assign: Callable[[Any], Awaitable[Any]], deployment: str, app_name: str,
                   parent: Any = None) -> Callable[[Any], Awaitable[Any]]:
    """`assign` (a router's routing call, taking a Request) wrapped in a `route_to_replica`
    span, a child of `parent` (default: the current context), whose context goes to
    the replica in the request's metadata."""

    async def assign_traced(request: Any) -> Any:
        meta = request.metadata
        span = ServeSpan(f"route_to_replica {deployment} {meta.call_method}",
                         current_context() if parent is None else parent, {
            "request_id": meta.request_id, "deployment": deployment, "app": app_name,
            "call_method": meta.call_method, "route": meta.route,
            "multiplexed_model_id": meta.multiplexed_model_id, "is_streaming": meta.is_streaming,
            "is_http_request": meta.is_http_request, "is_grpc_request": False,
        })
        meta.tracing_context = inject()
        exc: Optional[BaseException] = None
        try:
            return await assign(request)
        except BaseException as e:
            exc = e
            raise
        finally:
            span.set_attributes(_protocol_attributes(meta, deployment, None))
            span.end(exc)

    return assign_traced


def start_replica_span(meta: Any, deployment: str, app_name: str, replica_id: str) -> ServeSpan:
    """The `replica_handle_request` span of one request, a child of the caller's
    routing span (from `meta.tracing_context`), current until `end_replica_span`."""
    return ServeSpan(f"replica_handle_request {deployment} {meta.call_method}", extract(meta.tracing_context), {
        "request_id": meta.request_id, "replica_id": replica_id, "deployment": deployment, "app": app_name,
        "call_method": meta.call_method, "route": meta.route,
        "multiplexed_model_id": meta.multiplexed_model_id, "is_streaming": meta.is_streaming,
    })


def end_replica_span(span: ServeSpan, meta: Any, deployment: str, status: str, http_status: Any) -> None:
    """End a replica span with the request's outcome: `status` is "ERROR" when the
    request raised, and the exception being raised (the user's) is then recorded,
    as not escaping Serve (Ray Serve's choice); `http_status` is an HTTP request's code."""
    exc = sys.exc_info()[1] if status == "ERROR" else None
    span.set_attributes(_protocol_attributes(meta, deployment, http_status))
    span.end(exc if isinstance(exc, Exception) else None, escaped=False)


def record_exception(exc: BaseException) -> None:
    """Record the user's `exc` on the current (replica) span, as not escaping Serve."""
    from opentelemetry import trace

    trace.get_current_span().record_exception(exc, escaped=False)


def _protocol_attributes(meta: Any, deployment: str, status: Any) -> Dict[str, Any]:
    """OpenTelemetry's http.* attributes for HTTP requests, rpc.* for handle calls."""
    if meta.is_http_request:
        return {"http.method": meta.http_method or None, "http.status_code": status if isinstance(status, int) else None,
                "http.route": meta.route}
    return {"rpc.system": "UNDEFINED", "rpc.method": meta.call_method, "rpc.service": deployment}
