"""Starlette middlewares around a proxy's ASGI app, as Ray Serve's proxy applies them.

Two sources, in this order: `http_options.middlewares` (a list of
`starlette.middleware.Middleware`), then the list returned by the callable at
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` (Ray Serve's variable, called each
time a proxy, or a direct-ingress replica, builds its HTTP server). Each entry wraps what came before it, so the last one
is outermost, as in Ray Serve's `_apply_middlewares`.

A middleware must see every request, so with any configured the proxy's fast
path (which answers plain requests without the ASGI round) is off.
"""

from __future__ import annotations

from typing import Any, List

from starlette.middleware import Middleware

from ray_serving_ext._private.config_types import import_attr
from ray_serving_ext._private.constants import HTTP_PROXY_CALLBACK_IMPORT_PATH


def check_middlewares(middlewares: Any, source: str) -> List[Middleware]:
    """`middlewares` as a list of Starlette `Middleware`; None is an empty list. Raises ValueError naming
    `source` for anything else (Ray Serve's check of its proxy callback's return value)."""
    if middlewares is None:
        return []
    if not isinstance(middlewares, list):
        raise ValueError(f"{source} must be a list of starlette.middleware.Middleware, got "
                         f"{type(middlewares).__name__}.")
    for item in middlewares:
        if not isinstance(item, Middleware):
            raise ValueError(f"{source} must hold starlette.middleware.Middleware objects (e.g. "
                             f"Middleware(CORSMiddleware, allow_origins=['*'])), got a {type(item).__name__}.")
    return list(middlewares)


def proxy_middlewares(configured: List[Middleware]) -> List[Middleware]:
    """The middlewares a proxy applies: `configured`, then its callback's (if the variable names one)."""
    found = list(configured)
    if HTTP_PROXY_CALLBACK_IMPORT_PATH:
        callback = import_attr(HTTP_PROXY_CALLBACK_IMPORT_PATH)
        found += check_middlewares(callback(), f"The HTTP proxy callback {HTTP_PROXY_CALLBACK_IMPORT_PATH!r}")
    return found


def apply_middlewares(app: Any, middlewares: List[Middleware]) -> Any:
    """`app` wrapped by each of `middlewares` in turn (the last outermost)."""
    for middleware in middlewares:
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    return app
