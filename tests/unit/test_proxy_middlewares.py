"""proxy_middlewares.py without Ray: the two sources, their order, and what is refused."""

from __future__ import annotations

import pytest
from starlette.middleware import Middleware

from ray_serving_ext._private import proxy_middlewares as pm


class Wrap:
    def __init__(self, app, name: str = "") -> None:
        self.app, self.name = app, name


def callback():
    return [Middleware(Wrap, name="from-callback")]


def not_a_list():
    return Middleware(Wrap)


def test_configured_then_the_callbacks_and_the_last_is_outermost(monkeypatch):
    configured = [Middleware(Wrap, name="first"), Middleware(Wrap, name="second")]
    assert pm.proxy_middlewares(configured) == configured
    monkeypatch.setattr(pm, "HTTP_PROXY_CALLBACK_IMPORT_PATH", f"{__name__}:callback")
    found = pm.proxy_middlewares(configured)
    assert [m.kwargs["name"] for m in found] == ["first", "second", "from-callback"]

    def app(scope, receive, send):
        return None

    outer = pm.apply_middlewares(app, found)
    chain = []
    while isinstance(outer, Wrap):
        chain.append(outer.name)
        outer = outer.app
    assert chain == ["from-callback", "second", "first"] and outer is app


def test_a_callback_that_returns_something_else_is_refused(monkeypatch):
    monkeypatch.setattr(pm, "HTTP_PROXY_CALLBACK_IMPORT_PATH", f"{__name__}:not_a_list")
    with pytest.raises(ValueError, match="HTTP proxy callback .* must be a list"):
        pm.proxy_middlewares([])
    assert pm.check_middlewares(None, "x") == []
    with pytest.raises(ValueError, match="got a type"):
        pm.check_middlewares([Wrap], "http_options.middlewares")
