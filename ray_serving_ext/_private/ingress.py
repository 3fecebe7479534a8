"""`@serve.ingress(app)` support: FastAPI routes defined as methods of a deployment class.

Routes declared with `@app.get(...)` inside the class body take `self`. When
the class is decorated, in the process that defines it (where its module's
globals resolve every annotation, quoted or postponed), each such route is
re-created with `self` turned into a FastAPI dependency that yields the
replica's instance. FastAPI then sees the remaining parameters only (path
params, pydantic bodies, dependencies) and behaves exactly as it would; the
rebuilt app is what gets pickled and shipped to replicas.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from typing import Any, Callable, List


def current_servable() -> Any:
    """The instance of the deployment class in this replica (a FastAPI dependency)."""
    from ray_serving_ext.context import get_replica_context

    return get_replica_context().servable_object


def _is_method_of(endpoint: Callable, cls: type) -> bool:
    qualname = getattr(endpoint, "__qualname__", "")
    return qualname.startswith(cls.__qualname__ + ".") and qualname.count(".") == cls.__qualname__.count(".") + 1


def _with_self_dependency(fn: Callable) -> Callable:
    """fn with `self` made a dependency on current_servable and annotations resolved."""
    from fastapi import Depends

    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = {}
    params = list(sig.parameters.values())
    first = params[0].replace(default=Depends(current_servable), annotation=inspect.Parameter.empty,
                              kind=inspect.Parameter.KEYWORD_ONLY)
    rest = [
        p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
        for p in params[1:]
    ]
    ret = hints.get("return", sig.return_annotation)
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def endpoint(**kwargs: Any) -> Any:
            return await fn(**kwargs)

    else:

        @functools.wraps(fn)
        def endpoint(**kwargs: Any) -> Any:
            return fn(**kwargs)

    del endpoint.__wrapped__  # FastAPI must read our signature, not the original's
    endpoint.__signature__ = sig.replace(parameters=[first, *rest], return_annotation=ret)  # type: ignore[attr-defined]
    endpoint.__annotations__ = {p.name: p.annotation for p in rest if p.annotation is not inspect.Parameter.empty}
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


def bind_class_routes(app: Any, cls: type) -> int:
    """Re-create the app's routes that are methods of cls so they get the replica's instance."""
    routes: List[Any] = getattr(getattr(app, "router", None), "routes", [])
    count = 0
    for i, route in enumerate(list(routes)):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is None or not _is_method_of(endpoint, cls):
            continue
        routes[i] = _rebuild_route(route, _with_self_dependency(endpoint))
        count += 1
    if count:
        app.openapi_schema = None  # make FastAPI regenerate its docs without `self`
    return count
