"""Deployments restored from a checkpoint; imported by reference, so the cluster needs PYTHONPATH.

`greeter` answers with its user_config; `composed` calls a downstream `Adder`
whose user_config sets the increment; `doomed` is deployed then deleted.
"""

from __future__ import annotations

from typing import Any, Dict

from starlette.requests import Request

import ray_serving_ext as serve

FAST = {"graceful_shutdown_wait_loop_s": 0.1, "graceful_shutdown_timeout_s": 2}


@serve.deployment(user_config={"greeting": "hello"}, **FAST)
class Greeter:
    """Answers with the greeting from its user_config."""

    def __init__(self) -> None:
        self.greeting = None

    def reconfigure(self, config: Dict[str, Any]) -> None:
        self.greeting = config["greeting"]

    def __call__(self, request: Request) -> Dict[str, Any]:
        return {"app": "greeter", "greeting": self.greeting}


@serve.deployment(user_config={"increment": 1}, **FAST)
class Adder:
    """Adds the increment from its user_config."""

    def __init__(self) -> None:
        self.increment = 0

    def reconfigure(self, config: Dict[str, Any]) -> None:
        self.increment = int(config["increment"])

    def add(self, x: int) -> int:
        return x + self.increment


@serve.deployment(**FAST)
class Composed:
    """Ingress that asks Adder to add to ?x=."""

    def __init__(self, adder: Any) -> None:
        self.adder = adder

    async def __call__(self, request: Request) -> Dict[str, Any]:
        x = int(request.query_params.get("x", "0"))
        return {"app": "composed", "result": await self.adder.add.remote(x)}


@serve.deployment(**FAST)
def doomed(request: Request) -> str:
    return "doomed"


def greeter_app(greeting: str | None = None) -> serve.Application:
    dep = Greeter if greeting is None else Greeter.options(user_config={"greeting": greeting})
    return dep.bind()


def composed_app(increment: int | None = None) -> serve.Application:
    adder = Adder if increment is None else Adder.options(user_config={"increment": increment})
    return Composed.bind(adder.bind())


def doomed_app() -> serve.Application:
    return doomed.bind()
