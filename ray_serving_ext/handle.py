"""DeploymentHandle and the responses it returns.

`handle.remote(...)` returns at once; routing (waiting for a replica with room,
or BackPressureError) happens on the process's router loop. A response is
awaitable from any event loop and has a blocking `.result()`; it may be passed
to another handle call, and the replica then receives its value.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import warnings
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Tuple

import ray
from ray import ObjectRefGenerator  # re-exported, as Ray Serve's handle module does

from ray_serving_ext._private import tracing
from ray_serving_ext._private.common import STREAM, UNARY, DeploymentID, Request, RequestMetadata, new_request_id
from ray_serving_ext._private.event_loop import get_router_loop, in_loop
from ray_serving_ext._private.router import get_router_registry
from ray_serving_ext.context import _get_request_context
from ray_serving_ext.exceptions import RayServeException, RequestCancelledError


@dataclass(frozen=True)
class _HandleOptions:
    """A handle's call options, with Ray Serve 2.60's names and defaults.

    `method_name`, `stream` and `multiplexed_model_id` change how a call is
    made. The others are kept (and copied with the handle) but change nothing
    here: `session_id` (Ray Serve's default router ignores it too; only a
    session-aware request router uses it), `_by_reference` and the two
    serializations (they select Ray Serve's gRPC data path; ours is always the
    TCP transport, pickling with cloudpickle), `_prefer_local_routing`.
    """

    method_name: str = "__call__"
    stream: bool = False
    multiplexed_model_id: str = ""
    session_id: str = ""
    _by_reference: bool = True
    request_serialization: str = "cloudpickle"
    response_serialization: str = "cloudpickle"
    _prefer_local_routing: bool = False


# Ray Serve 2.60's RPC serialization methods (`handle.options(request_serialization=...)`).
SERIALIZATION_METHODS = ("cloudpickle", "pickle", "msgpack", "orjson", "noop")


def _check_serialization(which: str, method: Any) -> str:
    """`method` lower-cased, or ValueError with Ray Serve's message if it is not one it knows."""
    if not isinstance(method, str) or method.lower() not in SERIALIZATION_METHODS:
        raise ValueError(
            f"Unsupported {which} serialization method: {method}. Valid options: {set(SERIALIZATION_METHODS)}"
        )
    return method.lower()


def _option_changes(options: Dict[str, Any]) -> Dict[str, Any]:
    """The given (not _UNSET) `options()` keywords, validated: the changes to apply."""
    given = {k: v for k, v in options.items() if v is not _UNSET}
    changes: Dict[str, Any] = {}
    for key in ("method_name", "multiplexed_model_id", "session_id"):
        if key in given:
            changes[key] = given[key]
    for key in ("stream", "_by_reference", "_prefer_local_routing"):
        if key in given:
            changes[key] = bool(given[key])
    for key, which in (("request_serialization", "request"), ("response_serialization", "response")):
        if key in given:
            changes[key] = _check_serialization(which, given[key])
    return changes


class _Unset:
    pass


_UNSET: Any = _Unset()


def _current_request_id() -> Optional[str]:
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
        session_id: Any = _UNSET,
        stream: Any = _UNSET,
        use_new_handle_api: Any = _UNSET,
        _prefer_local_routing: Any = _UNSET,
        _by_reference: Any = _UNSET,
        request_serialization: Any = _UNSET,
        response_serialization: Any = _UNSET,
    ) -> "DeploymentHandle":
        """A copy of this handle with the given call options (the others unchanged).

        Takes Ray Serve 2.60's keywords; which of them change behaviour here is
        told in `_HandleOptions`. A serialization not among Ray Serve's
        (cloudpickle, pickle, msgpack, orjson, noop, any case) raises
        ValueError with Ray Serve's message (Ray Serve checks it on first use).
        """
        if _prefer_local_routing is not _UNSET:
            warnings.warn("Modifying `_prefer_local_routing` with `options()` is deprecated. Please use `init()` instead.")
        changes = _option_changes({
            "method_name": method_name, "multiplexed_model_id": multiplexed_model_id, "session_id": session_id,
            "stream": stream, "_prefer_local_routing": _prefer_local_routing, "_by_reference": _by_reference,
            "request_serialization": request_serialization, "response_serialization": response_serialization,
        })
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
            session_id=self._options.session_id or "",
        )
        deployment_id = self._deployment_id
        stream = self._options.stream
        # The caller's span (a replica's request) is the parent of this call's routing span.
        trace_parent = tracing.current_context() if tracing.enabled else None

        async def run() -> Any:
            # On the router loop: awaiting argument responses blocks no caller thread.
            call_args, call_kwargs = await _resolve_responses(args, kwargs)
            request = Request(STREAM if stream else UNARY, metadata, call_args, call_kwargs)
            router = get_router_registry().get(deployment_id, loop)
            if trace_parent is not None:
                # Each routing (each attempt of a unary call) in a span under the caller's.
                assign = tracing.traced_routing(router.assign_request, deployment_id.name, deployment_id.app_name,
                                                trace_parent)
                return await (assign(request) if stream else router.call_unary(request, assign))
            if stream:
                return await router.assign_request(request)
            return await router.call_unary(request)

        if in_loop(loop):  # called from code running on the router loop (e.g. inside a replica)
            pending: Any = loop.create_task(run())
        else:
            pending = asyncio.run_coroutine_threadsafe(run(), loop)
        if stream:
            return DeploymentResponseGenerator(pending, metadata.request_id, loop)
        return DeploymentResponse(pending, metadata.request_id, loop)


    def broadcast(self, method_name: str, *args: Any, **kwargs: Any) -> "DeploymentBroadcastResponse":
        """Call `method_name` on every running replica of the deployment at once.

        For infrequent control-plane calls (cache resets, config reloads):
        max_queued_requests does not apply and no request waits for room.
        Only replicas running when it is called are included.
        """
        loop = get_router_loop()
        metadata = RequestMetadata(
            request_id=_current_request_id() or new_request_id(), app_name=self.app_name,
            call_method=method_name, is_streaming=False,
            multiplexed_model_id=self._options.multiplexed_model_id, session_id=self._options.session_id or "",
        )
        deployment_id = self._deployment_id

        async def run() -> List[Any]:
            call_args, call_kwargs = await _resolve_responses(args, kwargs)
            router = get_router_registry().get(deployment_id, loop)
            calls = await router.broadcast(Request(UNARY, metadata, call_args, call_kwargs))
            return list(await asyncio.gather(*[c.result() for c in calls], return_exceptions=True))

        pending = loop.create_task(run()) if in_loop(loop) else asyncio.run_coroutine_threadsafe(run(), loop)
        return DeploymentBroadcastResponse(pending, metadata.request_id, loop)


class _ResponseBase:
    def __init__(self, pending: Any, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
        # An asyncio.Task on the router loop, or a concurrent Future when sent from elsewhere.
        self._pending = pending
        self._request_id = request_id
        self._loop = loop
        self._cancelled = False

    @property
    def request_id(self) -> str:
        return self._request_id

    def _wait_sync(self, timeout_s: Optional[float], use_instead: str = "", skip_check: bool = False) -> Any:
        if use_instead and not skip_check:
            _refuse_in_running_loop(use_instead)
        if isinstance(self._pending, asyncio.Task) or in_loop(self._loop):
            raise RuntimeError(
                "Sync methods should not be called from within the event loop that serves requests. "
                "Use `await response` instead."
            )
        try:
            return self._pending.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"Request {self._request_id} did not finish within {timeout_s}s.") from None
        except concurrent.futures.CancelledError:
            raise RequestCancelledError(self._request_id) from None

    async def _wait(self) -> Any:
        try:
            if isinstance(self._pending, asyncio.Task) and in_loop(self._loop):
                return await self._pending
            if isinstance(self._pending, asyncio.Task):
                future = asyncio.run_coroutine_threadsafe(_await_task(self._pending), self._loop)
                return await asyncio.wrap_future(future)
            return await asyncio.wrap_future(self._pending)
        except asyncio.CancelledError:
            if self._cancelled:
                raise RequestCancelledError(self._request_id) from None
            raise

    def cancel(self) -> None:
        """Cancel the request: never sent if still queued, interrupted on the replica if running."""
        self._cancelled = True
        if isinstance(self._pending, asyncio.Task):
            self._loop.call_soon_threadsafe(self._pending.cancel)
        else:
            self._pending.cancel()

    def cancelled(self) -> bool:
        return self._cancelled


async def _await_task(task: asyncio.Task) -> Any:
    return await task


class DeploymentResponse(_ResponseBase):
    """The future result of `handle.remote()`: await it, or call `.result()`."""

    def result(self, *, timeout_s: Optional[float] = None, _skip_asyncio_check: bool = False) -> Any:
        """Block until the result is ready; raises the replica's exception if it raised.
        RuntimeError when called inside a running event loop (await the response there)."""
        return self._wait_sync(timeout_s, "`await response`", _skip_asyncio_check)

    def __await__(self):
        return self._wait().__await__()

    async def _to_object_ref(self) -> ray.ObjectRef:
        """The result as a Ray object (to pass to Ray tasks)."""
        return ray.put(await self._wait())

    def _to_object_ref_sync(self, _timeout_s: Optional[float] = None,
                            _allow_running_in_asyncio_loop: bool = False) -> ray.ObjectRef:
        return ray.put(self._wait_sync(_timeout_s, "`await response._to_object_ref()`",
                                       _allow_running_in_asyncio_loop))


class DeploymentBroadcastResponse(_ResponseBase):
    """The results of `handle.broadcast()`: one per replica, in no particular order."""

    def results(self, *, timeout_s: Optional[float] = None, return_exceptions: bool = False) -> List[Any]:
        """Block until every replica answered; raise the first replica error unless
        `return_exceptions`, which puts errors in the list. TimeoutError past `timeout_s`."""
        if timeout_s is not None and timeout_s < 0:
            raise ValueError("timeout_s must be None or non-negative.")
        try:
            values = self._wait_sync(timeout_s, "`await response.results_async()`")
        except TimeoutError:
            raise TimeoutError("Timed out waiting for broadcast results.") from None
        return _pick(values, return_exceptions)

    async def results_async(self, *, timeout_s: Optional[float] = None, return_exceptions: bool = False) -> List[Any]:
        """`results()` for async callers."""
        if timeout_s is not None and timeout_s < 0:
            raise ValueError("timeout_s must be None or non-negative.")
        try:
            values = await asyncio.wait_for(self._wait(), timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError("Timed out waiting for broadcast results.") from None
        return _pick(values, return_exceptions)

    def __repr__(self) -> str:
        return "DeploymentBroadcastResponse()"


def _refuse_in_running_loop(use_instead: str) -> None:
    """RuntimeError (Ray Serve's) when a loop runs in this thread: blocking here would stall
    every other coroutine of that loop (in a replica, every other request) until the answer."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("Sync methods should not be called from within an `asyncio` event loop. "
                       f"Use {use_instead} instead.")


def _pick(values: List[Any], return_exceptions: bool) -> List[Any]:
    if not return_exceptions:
        for value in values:
            if isinstance(value, BaseException):
                raise value
    return values


class DeploymentResponseGenerator(_ResponseBase):
    """The stream returned by `handle.options(stream=True).remote()`: iterate it, sync or async."""

    def __init__(self, pending: Any, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(pending, request_id, loop)
        self._call: Any = None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        _refuse_in_running_loop("`async for` or `await response.__anext__()`")
        if self._call is None:
            self._call = self._wait_sync(None)
        item = asyncio.run_coroutine_threadsafe(_next_item(self._call), self._loop).result()
        if item is _DONE:
            raise StopIteration
        return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._call is None:
            self._call = await self._wait()
        if in_loop(self._loop):
            return await self._call.__anext__()
        item = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_next_item(self._call), self._loop))
        if item is _DONE:
            raise StopAsyncIteration
        return item

    def cancel(self) -> None:
        super().cancel()
        if self._call is not None:
            self._loop.call_soon_threadsafe(self._call.cancel)


_DONE = object()


async def _resolve_responses(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Replace DeploymentResponse arguments by their results (as Ray Serve passes values).

    Raises TypeError for a DeploymentResponseGenerator argument: a stream has no one value.
    Returns `args` and `kwargs` themselves when no argument is a response.
    """
    values = list(kwargs.values())
    if any(isinstance(a, DeploymentResponseGenerator) for a in args) or any(
        isinstance(v, DeploymentResponseGenerator) for v in values
    ):
        raise TypeError("A streaming DeploymentResponseGenerator cannot be passed to another handle call.")
    if not any(isinstance(a, DeploymentResponse) for a in args) and not any(
        isinstance(v, DeploymentResponse) for v in values
    ):
        return args, kwargs
    new_args: List[Any] = [await a if isinstance(a, DeploymentResponse) else a for a in args]
    new_kwargs = {k: await v if isinstance(v, DeploymentResponse) else v for k, v in kwargs.items()}
    return tuple(new_args), new_kwargs


async def _next_item(call: Any) -> Any:
    try:
        return await call.__anext__()
    except StopAsyncIteration:
        return _DONE


__all__ = ["DeploymentBroadcastResponse", "DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator",
           "ObjectRefGenerator", "RayServeException"]
