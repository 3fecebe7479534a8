"""The public exceptions: Ray Serve 2.60's names, bases and constructors, and
every one survives pickling with its attributes."""

from __future__ import annotations

import pickle

import pytest
import ray.exceptions

from ray_serving_ext import exceptions as exc
from ray_serving_ext._private import transport


def _roundtrip(e: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(e))


def test_ray_serve_public_names_exist() -> None:
    for name in ("RayServeException", "BackPressureError", "DeploymentUnavailableError",
                 "ReplicaUnavailableError", "RequestCancelledError", "TaskCancelledError", "gRPCStatusError"):
        assert name in exc.__all__ and hasattr(exc, name)
    assert exc.TaskCancelledError is ray.exceptions.TaskCancelledError


def test_request_cancelled_is_a_ray_task_cancelled_error() -> None:
    e = exc.RequestCancelledError("abc")
    assert isinstance(e, exc.RayServeException) and isinstance(e, ray.exceptions.TaskCancelledError)
    assert str(e) == "Request abc was cancelled."
    assert str(exc.RequestCancelledError()) == "Request was cancelled."
    back = _roundtrip(e)
    assert type(back) is exc.RequestCancelledError and back.request_id == "abc" and str(back) == str(e)


def test_backpressure_error_positional_defaults_and_pickling() -> None:
    e = exc.BackPressureError(3, 2)
    assert (e.num_queued_requests, e.max_queued_requests, e.status_code, e.retry_after_s) == (3, 2, 503, None)
    assert str(e) == e.message == "Request dropped due to backpressure (num_queued_requests=3, max_queued_requests=2)."
    back = _roundtrip(exc.BackPressureError(num_queued_requests=1, max_queued_requests=1, status_code=429,
                                            retry_after_s=7.0))
    assert (back.num_queued_requests, back.status_code, back.retry_after_s) == (1, 429, 7.0)
    assert "backpressure" in str(back)


def test_replica_unavailable_error() -> None:
    e = exc.ReplicaUnavailableError("r1")
    assert isinstance(e, exc.RayServeException)
    assert e.replica_id == "r1" and e.message == str(e) == "Replica r1 is no longer available."
    back = _roundtrip(e)
    assert type(back) is exc.ReplicaUnavailableError and back.message == e.message


def test_data_path_error_is_the_public_one() -> None:
    e = transport.ReplicaUnavailableError("Lost the connection to replica r2", started=True, replica_id="r2")
    assert isinstance(e, exc.ReplicaUnavailableError)
    assert (e.replica_id, e.started, str(e)) == ("r2", True, "Lost the connection to replica r2")
    back = _roundtrip(e)
    assert type(back) is transport.ReplicaUnavailableError
    assert (back.replica_id, back.started, str(back)) == ("r2", True, str(e))
    with pytest.raises(exc.ReplicaUnavailableError):
        raise e


def test_grpc_status_error_wraps_the_original() -> None:
    grpc = pytest.importorskip("grpc")
    original = ValueError("bad input")
    e = exc.gRPCStatusError(original, grpc.StatusCode.INVALID_ARGUMENT, "field x")
    assert isinstance(e, exc.RayServeException)
    assert e.original_exception is original and str(e) == "bad input"
    assert (e.grpc_code, e.grpc_details) == (grpc.StatusCode.INVALID_ARGUMENT, "field x")
    plain = exc.gRPCStatusError(original)
    assert (plain.grpc_code, plain.grpc_details) == (None, None)
    back = _roundtrip(e)
    assert isinstance(back.original_exception, ValueError) and str(back) == "bad input"
    assert (back.grpc_code, back.grpc_details) == (grpc.StatusCode.INVALID_ARGUMENT, "field x")


def test_deployment_unavailable_error_pickles() -> None:
    back = _roundtrip(exc.DeploymentUnavailableError("Deployment(name='d', app='a')"))
    assert isinstance(back, exc.RayServeException) and "unavailable" in str(back)


def test_backpressure_config_contract() -> None:
    from pydantic import ValidationError

    from ray_serving_ext.config import BackpressureConfig, DeploymentConfig

    assert (BackpressureConfig().status_code, BackpressureConfig().retry_after_s) == (503, None)
    assert DeploymentConfig().backpressure_config == BackpressureConfig()
    for bad in ({"status_code": 500}, {"retry_after_s": -1}, {"retry_after_s": float("inf")}, {"retry_after": 1}):
        with pytest.raises(ValidationError):
            BackpressureConfig(**bad)
    old = DeploymentConfig()
    new = DeploymentConfig(backpressure_config={"status_code": 429, "retry_after_s": 5})
    assert not old.needs_restart(new) and old.in_place_fields_changed(new) == {"backpressure_config"}


def test_retry_after_header_rounds_up() -> None:
    from ray_serving_ext._private.http_util import retry_after_headers

    assert retry_after_headers(None) == []
    assert retry_after_headers(0.2) == [("retry-after", "1")]
    assert retry_after_headers(7) == [("retry-after", "7")]
    assert retry_after_headers(0) == [("retry-after", "0")]


def test_https_options_pair_and_uvicorn_kwargs() -> None:
    from pydantic import ValidationError

    from ray_serving_ext._private.http_util import uvicorn_ssl_kwargs
    from ray_serving_ext.config import HTTPOptions
    from ray_serving_ext.config_file import HTTPOptionsSchema

    assert uvicorn_ssl_kwargs(HTTPOptions()) == {}
    for model in (HTTPOptions, HTTPOptionsSchema):
        for one in ({"ssl_keyfile": "k.pem"}, {"ssl_certfile": "c.pem"}):
            with pytest.raises(ValidationError, match="must be provided together"):
                model(**one)
    h = HTTPOptionsSchema(ssl_keyfile="k.pem", ssl_certfile="c.pem", ssl_ca_certs="ca.pem").to_http_options()
    assert uvicorn_ssl_kwargs(h) == {"ssl_keyfile": "k.pem", "ssl_certfile": "c.pem", "ssl_ca_certs": "ca.pem"}
