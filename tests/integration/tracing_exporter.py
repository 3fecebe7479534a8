"""A tracing exporter for the tracing tests: spans as JSON lines in files.

Spans are made in proxy and replica processes, so each process appends its
finished spans to `<ray session dir>/test_tracing_spans/<pid>.jsonl` (the
session directory is the same for every process of one Ray cluster, and
different for every cluster on the machine). Calling the exporter function
also leaves `setup-<pid>` there, so a test can tell whether tracing was set up.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence

import ray

EXPORTER_IMPORT_PATH = "tests.integration.tracing_exporter:file_exporter"


def spans_dir() -> str:
    """Where this Ray cluster's test spans go."""
    return os.path.join(ray._private.worker._global_node.get_session_dir_path(), "test_tracing_spans")


def _span_record(span: Any) -> Dict[str, Any]:
    context = span.get_span_context()
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "start": span.start_time,
        "end": span.end_time,
    }


def file_exporter() -> List[Any]:
    """The exporter function (no arguments, a list of SpanProcessors: Ray Serve's contract)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    directory = spans_dir()
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, f"setup-{os.getpid()}"), "w").close()
    path = os.path.join(directory, f"{os.getpid()}.jsonl")

    class JsonLinesExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> Any:
            with open(path, "a", encoding="utf-8") as out:
                for span in spans:
                    out.write(json.dumps(_span_record(span)) + "\n")
            return SpanExportResult.SUCCESS

    return [SimpleSpanProcessor(JsonLinesExporter())]


def read_spans() -> List[Dict[str, Any]]:
    """Every span exported so far by any process of this cluster."""
    directory = spans_dir()
    if not os.path.isdir(directory):
        return []
    spans = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".jsonl"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                spans += [json.loads(line) for line in f if line.endswith("\n")]
    return spans


def setup_markers() -> List[str]:
    """The `setup-<pid>` files: one per process that called the exporter function."""
    directory = spans_dir()
    return sorted(n for n in os.listdir(directory) if n.startswith("setup-")) if os.path.isdir(directory) else []
