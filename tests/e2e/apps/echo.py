"""An app whose replies show the replica's PID and its user_config, and a builder.

`app` answers {"pid": ..., "message": ...}; `message` comes from user_config,
so a redeploy that only changes user_config keeps the PID and changes the body.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from pydantic import BaseModel

import ray_serving_ext as serve
from ray_serving_ext import Application


@serve.deployment(user_config={"message": "hello"}, max_ongoing_requests=10)
class Echo:
    def __init__(self) -> None:
        self.message = ""

    def reconfigure(self, config: Dict[str, Any]) -> None:
        self.message = str(config.get("message", ""))

    def __call__(self, request: Any) -> Dict[str, Any]:
        return {"pid": os.getpid(), "message": self.message}


app = Echo.bind()


@serve.deployment
class Greeter:
    def __init__(self, greeting: str, name: str) -> None:
        self.text = f"{greeting}, {name}!"

    def __call__(self, request: Any) -> str:
        return self.text


class GreeterArgs(BaseModel):
    name: str
    greeting: str = "Hello"


def greeter(args: GreeterArgs) -> Application:
    """An application builder whose args are validated into GreeterArgs."""
    return Greeter.bind(args.greeting, args.name)


def plain_builder(args: Dict[str, Any]) -> Application:
    """A builder taking the raw args dict."""
    return Greeter.bind(args.get("greeting", "Hi"), args.get("name", "there"))


def bad_builder(args: Dict[str, Any]) -> int:
    return 42


not_an_app = 42
