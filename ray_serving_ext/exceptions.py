"""Exceptions raised by ray_serving_ext, named, based and constructed as Ray Serve
2.60 names them (``ray.serve.exceptions``).

Every class pickles with its attributes intact, so an error raised in a replica
reaches the caller unchanged. ``TaskCancelledError`` is Ray's own class (as in
Ray Serve), and ``RequestCancelledError`` subclasses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ray.exceptions import TaskCancelledError

if TYPE_CHECKING:  # grpc is only needed by callers that set gRPC status codes
    import grpc


class RayServeException(Exception):
    """Base class of every error this package raises on purpose."""


class gRPCStatusError(RayServeException):
    """Wraps an exception raised by user code together with the gRPC status code
    (and details) the user set on the context before raising it.

    ``str()`` is the original exception's; ``original_exception``, ``grpc_code``
    and ``grpc_details`` return what was given.
    """

    def __init__(
        self,
        original_exception: BaseException,
        code: Optional["grpc.StatusCode"] = None,
        details: Optional[str] = None,
    ) -> None:
        self._original_exception = original_exception
        self._grpc_code = code
        self._grpc_details = details
        super().__init__(str(original_exception))

    @property
    def original_exception(self) -> BaseException:
        """The exception the user code raised."""
        return self._original_exception

    @property
    def grpc_code(self) -> Optional["grpc.StatusCode"]:
        """The gRPC status code the user set, if any."""
        return self._grpc_code

    @property
    def grpc_details(self) -> Optional[str]:
        """The gRPC status details the user set, if any."""
        return self._grpc_details

    def __str__(self) -> str:
        return str(self._original_exception)

    def __reduce__(self) -> Any:
        return (type(self), (self._original_exception, self._grpc_code, self._grpc_details))


class BackPressureError(RayServeException):
    """A caller's queue for a deployment is full (`max_queued_requests`).

    Raised at once by `DeploymentHandle.remote()` (surfaced when the response is
    awaited); the HTTP proxy answers with `status_code` (503 or 429, from the
    deployment's `backpressure_config`) and, when `retry_after_s` is set, a
    `Retry-After` header of that many seconds rounded up.
    """

    def __init__(
        self,
        num_queued_requests: int,
        max_queued_requests: int,
        status_code: int = 503,
        retry_after_s: Optional[float] = None,
    ) -> None:
        # Every argument goes to the base so `self.args` rebuilds the error when unpickled.
        super().__init__(num_queued_requests, max_queued_requests, status_code, retry_after_s)
        self.num_queued_requests = num_queued_requests
        self.max_queued_requests = max_queued_requests
        self._status_code = status_code
        self._retry_after_s = retry_after_s
        self._message = (
            f"Request dropped due to backpressure (num_queued_requests={num_queued_requests}, "
            f"max_queued_requests={max_queued_requests})."
        )

    def __str__(self) -> str:
        return self._message

    @property
    def message(self) -> str:
        return self._message

    @property
    def status_code(self) -> int:
        """The HTTP status code of this rejection (503 or 429)."""
        return self._status_code

    @property
    def retry_after_s(self) -> Optional[float]:
        """The `Retry-After` delay in seconds, or None for no header."""
        return self._retry_after_s


class DeploymentUnavailableError(RayServeException):
    """The deployment has no replica that can take requests (deleted, or failed to deploy)."""

    def __init__(self, deployment_id: object, reason: Optional[str] = None) -> None:
        self.deployment_id = deployment_id
        msg = f"{deployment_id} is unavailable"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)

    def __reduce__(self) -> Any:
        return (DeploymentUnavailableError, (self.deployment_id,))


class ReplicaUnavailableError(RayServeException):
    """The replica chosen for a request is no longer available (it died or
    cannot be reached). What a request to a dead replica raises is this class
    or a subclass of it."""

    def __init__(self, replica_id: str) -> None:
        self._replica_id = replica_id
        super().__init__(replica_id)

    @property
    def replica_id(self) -> str:
        return self._replica_id

    @property
    def message(self) -> str:
        return f"Replica {self._replica_id} is no longer available."

    def __str__(self) -> str:
        return self.message


class RequestCancelledError(RayServeException, TaskCancelledError):
    """The request was cancelled (by the caller, a client disconnect or a timeout).

    Also a Ray ``TaskCancelledError``, so code catching Ray's cancellation
    catches it too.
    """

    def __init__(self, request_id: Optional[str] = None) -> None:
        self._request_id = request_id
        self.task_id = None  # TaskCancelledError's attributes
        self.error_message = None
        super().__init__(self._describe())

    @property
    def request_id(self) -> Optional[str]:
        return self._request_id

    def _describe(self) -> str:
        return f"Request {self._request_id} was cancelled." if self._request_id else "Request was cancelled."

    def __str__(self) -> str:
        return self._describe()

    def __reduce__(self) -> Any:
        return (type(self), (self._request_id,))


class DeploymentIsBeingDeletedError(RayServeException):
    """An operation (e.g. an external scaler's) was asked of a deployment that is being deleted."""


class ExternalScalerDisabledError(RayServeException):
    """The external scaling API was used on an application without `external_scaler_enabled`."""


__all__ = [
    "RayServeException",
    "BackPressureError",
    "DeploymentUnavailableError",
    "ReplicaUnavailableError",
    "RequestCancelledError",
    "TaskCancelledError",
    "gRPCStatusError",
    "DeploymentIsBeingDeletedError",
    "ExternalScalerDisabledError",
]
