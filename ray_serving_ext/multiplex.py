"""`@serve.multiplexed`: many models per deployment, loaded on demand, kept LRU per replica.

    @serve.deployment
    class ModelServer:
        @serve.multiplexed(max_num_models_per_replica=3)
        async def get_model(self, model_id: str):
            return await load(model_id)

        async def __call__(self, request):
            model = await self.get_model(serve.get_multiplexed_model_id())
            return model(await request.body())

A request names its model with the `serve_multiplexed_model_id` HTTP header
or `handle.options(multiplexed_model_id=...)`. Each replica keeps at most
`max_num_models_per_replica` models, evicting the least recently used (its
`__del__` runs, awaited if async). Replicas report which models they hold, and
callers send a request to a replica that already has its model when one has room.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

# Called with the model ids a replica holds whenever that set changes (set by the replica).
_on_models_changed: Optional[Callable[[List[str]], None]] = None


def _set_models_listener(fn: Optional[Callable[[List[str]], None]]) -> None:
    global _on_models_changed
    _on_models_changed = fn


class _ModelCache:
    """The LRU of loaded models of one replica (one per decorated function and instance)."""

    def __init__(self, loader: Callable[[str], Any], capacity: int) -> None:
        self._loader = loader
        self._capacity = capacity
        self._models: "OrderedDict[str, Any]" = OrderedDict()
        self._loading: Dict[str, asyncio.Future] = {}

    async def get(self, model_id: str) -> Any:
        if model_id in self._models:
            self._models.move_to_end(model_id)
            return self._models[model_id]
        pending = self._loading.get(model_id)
        if pending is not None:  # someone is loading it already: share the result
            return await asyncio.shield(pending)
        pending = asyncio.get_running_loop().create_future()
        self._loading[model_id] = pending
        try:
            while len(self._models) >= self._capacity:
                await self._evict()
            model = await self._loader(model_id)
            self._models[model_id] = model
            pending.set_result(model)
            _notify(list(self._models))
            return model
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._loading.pop(model_id, None)

    async def _evict(self) -> None:
        _, model = self._models.popitem(last=False)
        _notify(list(self._models))
        destructor = getattr(type(model), "__del__", None)
        if destructor is not None:
            result = destructor(model)
            if inspect.isawaitable(result):
                await result

    def model_ids(self) -> List[str]:
        return list(self._models)


def _notify(model_ids: List[str]) -> None:
    if _on_models_changed is not None:
        _on_models_changed(model_ids)


def multiplexed(_func: Optional[Callable[..., Any]] = None, *, max_num_models_per_replica: int = 3) -> Any:
    """Cache what an async `(self, model_id)` loader returns, up to N models per replica (LRU)."""
    if not isinstance(max_num_models_per_replica, int) or max_num_models_per_replica < 1:
        raise ValueError("max_num_models_per_replica must be an integer >= 1.")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(func):
            raise TypeError("@serve.multiplexed must decorate an async function taking a model id.")
        params = list(inspect.signature(func).parameters)
        is_method = bool(params) and params[0] == "self"
        if len(params) != (2 if is_method else 1):
            raise TypeError("@serve.multiplexed functions take exactly one argument: the model id.")
        caches: Dict[int, _ModelCache] = {}

        @functools.wraps(func)
        async def wrapper(*args: Any) -> Any:
            owner = args[0] if is_method else None
            model_id = args[-1]
            if not isinstance(model_id, str) or not model_id:
                raise ValueError("The model id must be a non-empty string.")
            cache = caches.get(id(owner))
            if cache is None:
                loader = functools.partial(func, owner) if is_method else func
                cache = caches[id(owner)] = _ModelCache(loader, max_num_models_per_replica)
            return await cache.get(model_id)

        return wrapper

    return decorator(_func) if _func is not None else decorator
