"""The benchmarked applications, built against whichever Serve module is given.

The classes are defined inside the builder functions on purpose: Ray then
pickles them by value, so replicas never need to import `benchmarks`, and the
same definitions serve `ray.serve` and `ray_serving_ext` alike. Every
deployment has one replica (unless the no-op app is asked for more) and
`max_ongoing_requests=1000`, so the serving layer, not a concurrency cap, is
what gets measured.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

MAX_ONGOING = 1000
NOOP_REPLY = "ok"
COMPOSITION_REPLY = "ab"


def noop_app(serve: ModuleType, num_replicas: int = 1) -> Any:
    """`num_replicas` replicas whose async `__call__` returns a short string (HTTP or handle)."""

    @serve.deployment(num_replicas=num_replicas, max_ongoing_requests=MAX_ONGOING)
    class Noop:
        async def __call__(self, *args: Any) -> str:
            return NOOP_REPLY

    return Noop.bind()


def echo_app(serve: ModuleType) -> Any:
    """One replica that returns the HTTP request body as bytes."""

    @serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING)
    class Echo:
        async def __call__(self, request: Any) -> bytes:
            return await request.body()

    return Echo.bind()


def composition_app(serve: ModuleType) -> Any:
    """Ingress -> A, then B given A's response (unawaited, Serve's chaining idiom)."""

    @serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING)
    class A:
        async def __call__(self) -> str:
            return COMPOSITION_REPLY[0]

    @serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING)
    class B:
        async def __call__(self, value: str) -> str:
            return value + COMPOSITION_REPLY[1]

    @serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING)
    class Ingress:
        def __init__(self, a: Any, b: Any) -> None:
            self._a = a
            self._b = b

        async def __call__(self, request: Any) -> str:
            return await self._b.remote(self._a.remote())

    return Ingress.bind(A.bind(), B.bind())
