"""Runs the user's deployment code inside a replica: constructor, methods, hooks.

Async user code runs on the replica's event loop; sync methods run in a
thread pool so a slow or blocking method never stalls health checks or other
requests. The constructor runs on the loop, as in Ray Serve. The request context (request id) follows the call into threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
from typing import Any, AsyncIterator, Callable, Dict, Tuple

from ray import cloudpickle

from ray_serving_ext._private.build import HandleMarker, map_nested
from ray_serving_ext._private.task_consumer import is_task_consumer, start_task_consumer, stop_task_consumer


def _replace_markers(value: Any) -> Any:
    """`value` with every HandleMarker replaced by a DeploymentHandle to it."""
    from ray_serving_ext.handle import DeploymentHandle

    def replace(v: Any) -> Any:
        return DeploymentHandle(v.deployment_name, v.app_name) if isinstance(v, HandleMarker) else v

    return map_nested(value, replace)


class UserCallable:
    """The user's function or class instance, and how to call into it."""

    def __init__(self, serialized_def: bytes, serialized_init_args: bytes, max_threads: int) -> None:
        self._def = cloudpickle.loads(serialized_def)
        args, kwargs = cloudpickle.loads(serialized_init_args)
        self._init_args = _replace_markers(args)
        self._init_kwargs = _replace_markers(kwargs)
        self.is_function = inspect.isfunction(self._def)
        self.instance: Any = None
        self.asgi_app: Any = getattr(self._def, "_serve_asgi_app", None)
        # The replica passes its max_ongoing_requests as max_threads: also a task consumer's concurrency.
        self._consumer_concurrency = max(1, max_threads)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, max_threads), thread_name_prefix="serve-user")
        self._control_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="serve-control")
        self._lifespan: Any = None
        self._destroyed = False
        self._takes_request: Dict[str, bool] = {}

    async def _run_sync(self, fn: Callable, *args: Any, control: bool = False, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        pool = self._control_pool if control else self._pool
        return await loop.run_in_executor(pool, lambda: ctx.run(fn, *args, **kwargs))

    async def call_maybe_async(self, fn: Callable, *args: Any, control: bool = False, **kwargs: Any) -> Any:
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
            return await fn(*args, **kwargs)
        result = await self._run_sync(fn, *args, control=control, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def initialize(self, user_config: Any, rank: Any = None) -> None:
        """Run the constructor (for classes) and the first reconfigure() (when there is
        a user_config, or `reconfigure` takes the replica's `rank`).

        As in Ray Serve, the constructor, sync or async, runs on the serving
        loop (the caller's running loop): `asyncio.get_running_loop()`,
        `asyncio.Event()` and `asyncio.create_task` work in `__init__`, and
        tasks it starts keep running on the loop that serves requests. Only
        the constructor itself holds the loop (deserialising the code and
        arguments happened before, off the loop). An ingress app given as a
        builder function (or `__serve_build_asgi_app__`) is built right after.
        A `@task_consumer` object then starts its consumer.
        """
        if not self.is_function:
            cls = self._def
            if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
                self.instance = cls.__new__(cls)
                await cls.__init__(self.instance, *self._init_args, **self._init_kwargs)
            else:
                self.instance = cls(*self._init_args, **self._init_kwargs)
            await self._build_asgi_app()
            if self.asgi_app is not None:
                await self._start_lifespan()
        if user_config is not None or self.reconfigure_takes_rank():
            await self.reconfigure(user_config, rank)
        # A task consumer starts consuming once fully set up (user_config applied); off the
        # loop, since connecting to the broker may block.
        if is_task_consumer(self.instance):
            await self._run_sync(start_task_consumer, self.instance, self._consumer_concurrency, control=True)

    async def _build_asgi_app(self) -> None:
        """Build the ingress app when the class was given a builder instead of an app."""
        if self.asgi_app is not None:
            return
        builder = getattr(self._def, "_serve_asgi_app_builder", None)
        if builder is not None:
            app = builder()
        elif hasattr(self.instance, "__serve_build_asgi_app__"):
            app = self.instance.__serve_build_asgi_app__()
        else:
            return
        if inspect.isawaitable(app):
            app = await app
        self.asgi_app = app

    def takes_request(self, method: str) -> bool:
        """Whether an HTTP call to `method` passes the request (Ray Serve: only if it has parameters)."""
        taken = self._takes_request.get(method)
        if taken is None:
            try:
                taken = len(inspect.signature(self.get_method(method)).parameters) > 0
            except (TypeError, ValueError):  # no signature to read: pass the request, as before
                taken = True
            self._takes_request[method] = taken
        return taken

    async def _start_lifespan(self) -> None:
        router = getattr(self.asgi_app, "router", None)
        lifespan_context = getattr(router, "lifespan_context", None)
        if lifespan_context is None:
            return
        self._lifespan = lifespan_context(self.asgi_app)
        await self._lifespan.__aenter__()

    def reconfigure_takes_rank(self) -> bool:
        """Whether the user's `reconfigure` has a `rank` parameter (then it hears rank changes)."""
        fn = getattr(self.instance, "reconfigure", None) if self.instance is not None else None
        try:
            return fn is not None and "rank" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return False

    async def reconfigure(self, user_config: Any, rank: Any = None) -> None:
        """Call the user's `reconfigure(user_config)`, adding `rank=` if it takes one."""
        fn = getattr(self.instance, "reconfigure", None) if self.instance is not None else None
        if fn is None:
            if user_config is not None and not self.is_function:
                raise ValueError("user_config was given but the deployment class has no reconfigure() method.")
            return
        kwargs = {"rank": rank} if self.reconfigure_takes_rank() else {}
        await self.call_maybe_async(fn, user_config, control=True, **kwargs)

    async def check_health(self) -> None:
        fn = getattr(self.instance, "check_health", None) if self.instance is not None else None
        if fn is not None:
            await self.call_maybe_async(fn, control=True)

    def get_method(self, name: str) -> Callable:
        if self.is_function:
            if name not in ("__call__", ""):
                raise AttributeError(f"Function deployments have no method '{name}'.")
            return self._def
        method = getattr(self.instance, name or "__call__", None)
        if method is None or not callable(method):
            raise AttributeError(
                f"Deployment '{type(self.instance).__name__}' has no method '{name}'."
            )
        return method

    async def call(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        fn = self.get_method(method)
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"Method '{method}' is a generator; call it through a handle with "
                "`handle.options(stream=True)`."
            )
        return await self.call_maybe_async(fn, *args, **kwargs)

    async def call_streaming(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> AsyncIterator[Any]:
        fn = self.get_method(method)
        if inspect.isasyncgenfunction(fn):
            async for item in fn(*args, **kwargs):
                yield item
            return
        result = await self.call_maybe_async(fn, *args, **kwargs)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        elif inspect.isgenerator(result) or hasattr(result, "__next__"):
            sentinel = object()
            while True:
                item = await self._run_sync(next, result, sentinel)
                if item is sentinel:
                    break
                yield item
        else:
            raise TypeError(
                f"Method '{method}' returned a {type(result).__name__}, not a generator; "
                "handles with stream=True need a generator method."
            )

    async def shutdown(self) -> None:
        """Stop a task consumer's consumer, run the ASGI lifespan shutdown and the user's __del__, once."""
        if is_task_consumer(self.instance) and not self._destroyed:
            await self._run_sync(stop_task_consumer, self.instance, control=True)
        if self._lifespan is not None:
            try:
                await self._lifespan.__aexit__(None, None, None)
            finally:
                self._lifespan = None
        if self.instance is not None and hasattr(type(self.instance), "__del__") and not self._destroyed:
            self._destroyed = True  # the process is killed next; never run __del__ twice
            await self.call_maybe_async(type(self.instance).__del__, self.instance, control=True)
        self._pool.shutdown(wait=False)
