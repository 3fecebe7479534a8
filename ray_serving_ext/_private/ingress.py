"""`@serve.ingress(app)` support: FastAPI routes defined as methods of a deployment class.

Routes declared with `@app.get(...)` inside the class body take `self`; when a
replica has built its instance, each such route is re-created with `self`
bound to that instance, so FastAPI sees the remaining parameters only (path
params, pydantic bodies, dependencies) and behaves exactly as it would.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from typing import Any, Callable, List


def _is_method_of(endpoint: Callable, cls: type) -> bool:
    qualname = getattr(endpoint, "__qualname__", "")
    return qualname.startswith(cls.__qualname__ + ".") and qualname.count(".") == cls.__qualname__.count(".") + 1


def _bind_self(fn: Callable, instance: Any) -> Callable:
    """fn without its first parameter, `self` fixed to instance, annotations resolved."""
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = {}
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in list(sig.parameters.values())[1:]
    ]
    ret = hints.get("return", sig.return_annotation)
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def endpoint(*args: Any, **kwargs: Any) -> Any:
            return await fn(instance, *args, **kwargs)

    else:

        @functools.wraps(fn)
        def endpoint(*args: Any, **kwargs: Any) -> Any:
            return fn(instance, *args, **kwargs)

    del endpoint.__wrapped__  # FastAPI must read our signature, not the original's
    endpoint.__signature__ = sig.replace(parameters=params, return_annotation=ret)  # type: ignore[attr-defined]
    endpoint.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}
    if ret is not inspect.Signature.empty:
        endpoint.__annotations__["return"] = ret
    return endpoint


def _rebuild_route(route: Any, endpoint: Callable) -> Any:
    """A new route of the same class with the same options and a new endpoint."""
    route_cls = type(route)
    params = inspect.signature(route_cls.__init__).parameters
    kwargs = {}
    for name in params:
        if name in ("self", "path", "endpoint") or params[name].kind in (
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            continue
        if hasattr(route, name):
            kwargs[name] = getattr(route, name)
    return route_cls(route.path, endpoint, **kwargs)


def bind_class_routes(app: Any, cls: type, instance: Any) -> int:
    """Re-create the app's routes that are methods of cls with self bound; returns how many."""
    routes: List[Any] = getattr(getattr(app, "router", None), "routes", [])
    count = 0
    for i, route in enumerate(list(routes)):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is None or not _is_method_of(endpoint, cls):
            continue
        routes[i] = _rebuild_route(route, _bind_self(endpoint, instance))
        count += 1
    if count:
        app.openapi_schema = None  # make FastAPI regenerate its docs without `self`
    return count
