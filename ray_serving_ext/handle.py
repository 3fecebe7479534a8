"""DeploymentHandle and the responses it returns.

`handle.remote(...)` returns at once; routing (waiting for a replica with room,
or BackPressureError) happens on the process's router loop. A response is
awaitable from any event loop and has a blocking `.result()`; it may be passed
to another handle call, and the replica then receives its value.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Iterator, Optional

import ray

from ray_serving_ext._private.common import DeploymentID, RequestMetadata, new_request_id
from ray_serving_ext._private.event_loop import get_router_loop, in_loop
from ray_serving_ext._private.router import get_router_registry
from ray_serving_ext.exceptions import RequestCancelledError


@dataclass(frozen=True)
class _HandleOptions:
    method_name: str = "__call__"
    stream: bool = False
    multiplexed_model_id: str = ""


class _Unset:
    pass


_UNSET: Any = _Unset()


def _current_request_id() -> Optional[str]:
    from ray_serving_ext.context import _get_request_context

    ctx = _get_request_context()
    return ctx.request_id if ctx is not None else None


class DeploymentHandle:
    """Calls a deployment's replicas. Picklable: pass it to other deployments."""

    def __init__(self, deployment_name: str, app_name: str = "default", *, _options: Optional[_HandleOptions] = None) -> None:
        self._deployment_id = DeploymentID(deployment_name, app_name)
        self._options = _options or _HandleOptions()

    @property
    def deployment_name(self) -> str:
        return self._deployment_id.name

    @property
    def app_name(self) -> str:
        return self._deployment_id.app_name

    def options(
        self,
        *,
        method_name: Any = _UNSET,
        multiplexed_model_id: Any = _UNSET,
        stream: Any = _UNSET,
        use_new_handle_api: Any = _UNSET,
        _prefer_local_routing: Any = _UNSET,
    ) -> "DeploymentHandle":
        """A copy of this handle with the given call options."""
        changes = {}
        if method_name is not _UNSET:
            changes["method_name"] = method_name
        if multiplexed_model_id is not _UNSET:
            changes["multiplexed_model_id"] = multiplexed_model_id
        if stream is not _UNSET:
            changes["stream"] = bool(stream)
        return DeploymentHandle(self.deployment_name, self.app_name, _options=replace(self._options, **changes))

    def __getattr__(self, name: str) -> "DeploymentHandle":
        if name.startswith("_"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def __reduce__(self):
        return (DeploymentHandle, (self.deployment_name, self.app_name), {"_options": self._options})

    def __setstate__(self, state: dict) -> None:
        self._options = state["_options"]

    def __repr__(self) -> str:
        return f"DeploymentHandle(deployment='{self.deployment_name}', app='{self.app_name}')"

    def remote(self, *args: Any, **kwargs: Any) -> "DeploymentResponse | DeploymentResponseGenerator":
        """Send a request; returns a response at once (routing goes on in the background)."""
        loop = get_router_loop()
        metadata = RequestMetadata(
            request_id=_current_request_id() or new_request_id(),
            app_name=self.app_name,
            call_method=self._options.method_name,
            is_streaming=self._options.stream,
            multiplexed_model_id=self._options.multiplexed_model_id,
        )
        deployment_id = self._deployment_id

        async def assign() -> Any:
            router = get_router_registry().get(deployment_id, loop)
            result, _rid = await router.assign_request(metadata, args, kwargs)
            return result

        future = asyncio.run_coroutine_threadsafe(assign(), loop)
        if self._options.stream:
            return DeploymentResponseGenerator(future, metadata.request_id)
        return DeploymentResponse(future, metadata.request_id)


class _ResponseBase:
    def __init__(self, assign_future: concurrent.futures.Future, request_id: str) -> None:
        self._assign_future = assign_future
        self._request_id = request_id
        self._cancelled = False

    @property
    def request_id(self) -> str:
        return self._request_id

    def _check_not_router_loop(self) -> None:
        if in_loop(get_router_loop()):
            raise RuntimeError("Blocking calls on a response are not allowed on the router loop.")

    def _assigned_sync(self, timeout_s: Optional[float]) -> Any:
        self._check_not_router_loop()
        try:
            return self._assign_future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"Request {self._request_id} was not assigned to a replica within {timeout_s}s.")
        except concurrent.futures.CancelledError:
            raise RequestCancelledError(self._request_id)

    async def _assigned(self) -> Any:
        try:
            return await asyncio.wrap_future(self._assign_future)
        except asyncio.CancelledError:
            if self._cancelled or self._assign_future.cancelled():
                raise RequestCancelledError(self._request_id)
            raise

    def cancel(self) -> None:
        """Cancel the request: not sent if still queued, interrupted on the replica if running."""
        self._cancelled = True
        if not self._assign_future.cancel() and self._assign_future.done() and self._assign_future.exception() is None:
            try:
                ray.cancel(self._assign_future.result())
            except Exception:
                pass

    def cancelled(self) -> bool:
        return self._cancelled


class DeploymentResponse(_ResponseBase):
    """The future result of `handle.remote()`: await it, or call `.result()`."""

    def result(self, *, timeout_s: Optional[float] = None, _skip_asyncio_check: bool = False) -> Any:
        """Block until the result is ready; raises the replica's exception if it raised."""
        import time

        start = time.monotonic()
        ref = self._assigned_sync(timeout_s)
        remaining = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - start))
        try:
            return ray.get(ref, timeout=remaining)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"Request {self._request_id} did not finish within {timeout_s}s.")
        except ray.exceptions.TaskCancelledError:
            raise RequestCancelledError(self._request_id)

    async def _to_object_ref(self) -> ray.ObjectRef:
        return await self._assigned()

    def _to_object_ref_sync(self, timeout_s: Optional[float] = None) -> ray.ObjectRef:
        return self._assigned_sync(timeout_s)

    def __await__(self):
        return self._await_result().__await__()

    async def _await_result(self) -> Any:
        ref = await self._assigned()
        try:
            return await ref
        except ray.exceptions.TaskCancelledError:
            raise RequestCancelledError(self._request_id)


class DeploymentResponseGenerator(_ResponseBase):
    """The stream returned by `handle.options(stream=True).remote()`: iterate it, sync or async."""

    def __init__(self, assign_future: concurrent.futures.Future, request_id: str) -> None:
        super().__init__(assign_future, request_id)
        self._gen: Any = None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._gen is None:
            self._gen = self._assigned_sync(None)
        ref = next(self._gen)
        return ray.get(ref)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._gen is None:
            self._gen = await self._assigned()
        ref = await self._gen.__anext__()
        return await ref

    def cancel(self) -> None:
        self._cancelled = True
        if not self._assign_future.cancel() and self._assign_future.done() and self._assign_future.exception() is None:
            try:
                ray.cancel(self._assign_future.result())
            except Exception:
                pass


__all__ = ["DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator"]
