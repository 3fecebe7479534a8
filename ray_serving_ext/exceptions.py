"""Exceptions raised by ray_serving_ext, named as Ray Serve names them."""

from __future__ import annotations

from typing import Optional


class RayServeException(Exception):
    """Base class of every error this package raises on purpose."""


class BackPressureError(RayServeException):
    """A caller's queue for a deployment is full (`max_queued_requests`).

    Raised at once by `DeploymentHandle.remote()` (surfaced when the response is
    awaited); the HTTP proxy answers 503 with a `Retry-After` header.
    """

    def __init__(self, *, num_queued_requests: int, max_queued_requests: int) -> None:
        self.num_queued_requests = num_queued_requests
        self.max_queued_requests = max_queued_requests
        self.message = (
            f"Request dropped due to backpressure (num_queued_requests={num_queued_requests}, "
            f"max_queued_requests={max_queued_requests})."
        )
        super().__init__(self.message)

    def __reduce__(self):  # keyword-only __init__ needs help to pickle
        return (_make_backpressure, (self.num_queued_requests, self.max_queued_requests))


def _make_backpressure(queued: int, max_queued: int) -> BackPressureError:
    return BackPressureError(num_queued_requests=queued, max_queued_requests=max_queued)


class DeploymentUnavailableError(RayServeException):
    """The deployment has no replica that can take requests (deleted, or failed to deploy)."""

    def __init__(self, deployment_id: object, reason: Optional[str] = None) -> None:
        self.deployment_id = deployment_id
        msg = f"{deployment_id} is unavailable"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)

    def __reduce__(self):
        return (DeploymentUnavailableError, (self.deployment_id,))


class RequestCancelledError(RayServeException):
    """The request was cancelled (by the caller, a client disconnect or a timeout)."""

    def __init__(self, request_id: Optional[str] = None) -> None:
        self.request_id = request_id
        super().__init__(f"Request {request_id} was cancelled." if request_id else "Request was cancelled.")

    def __reduce__(self):
        return (RequestCancelledError, (self.request_id,))


__all__ = [
    "RayServeException",
    "BackPressureError",
    "DeploymentUnavailableError",
    "RequestCancelledError",
]
