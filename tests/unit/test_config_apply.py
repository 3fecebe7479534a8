"""The REST API's PUT path (ConfigApplier) against a stand-in controller: no Ray, no cluster."""

from __future__ import annotations

import asyncio
import logging
import threading
from types import SimpleNamespace
from typing import Any, List

import pytest

from ray_serving_ext._private import config_deploy
from ray_serving_ext._private.config_apply import ConfigApplier
from ray_serving_ext.config import HTTPOptions
from ray_serving_ext.config_file import ServeDeploySchema
from ray_serving_ext.schema import ServeStatus


class _Controller:
    """The controller methods ConfigApplier calls, recording what it deploys."""

    def __init__(self, http_options: HTTPOptions) -> None:
        self.http_options = http_options
        self.deployed: List[Any] = []
        self.done = threading.Event()

    async def get_http_options(self) -> HTTPOptions:
        return self.http_options

    async def get_serve_status(self) -> ServeStatus:
        return ServeStatus()

    async def deploy_applications(self, built: Any, configs: Any, delete_missing: bool, target_capacity: Any) -> None:
        self.deployed.append(([b.name for b in built], delete_missing))
        self.done.set()

    async def record_build_failures(self, failures: Any) -> None:
        self.done.set()


def _apply(controller: _Controller, config: dict) -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    applier = ConfigApplier(controller, loop)
    try:
        applier.submit(ServeDeploySchema.model_validate(config))
        assert controller.done.wait(60), "the config was never applied"
    finally:
        applier.stop()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)


APP = {"name": "hello", "route_prefix": "/hello", "import_path": "examples.hello:app"}


@pytest.fixture(autouse=True)
def _built_without_ray(monkeypatch):
    # Building imports each app in a Ray task; here each app is "built" as its name only.
    monkeypatch.setattr(config_deploy, "build_apps",
                        lambda apps, logging_config=None: [SimpleNamespace(name=app.name) for app in apps])


def test_a_put_deploys_declaratively_and_warns_about_http_options_it_cannot_change(caplog):
    controller = _Controller(HTTPOptions(host="127.0.0.1", port=8123, request_timeout_s=30))
    with caplog.at_level(logging.WARNING, logger="ray_serving_ext.controller"):
        _apply(controller, {"http_options": {"host": "0.0.0.0", "port": 8123}, "applications": [APP]})
    assert controller.deployed == [(["hello"], True)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "['host']" in warnings[0], warnings  # port matches; timeout not given


def test_matching_or_absent_http_options_warn_nothing(caplog):
    controller = _Controller(HTTPOptions(host="127.0.0.1", port=8123, request_timeout_s=30))
    with caplog.at_level(logging.WARNING, logger="ray_serving_ext.controller"):
        _apply(controller, {"http_options": {"host": "127.0.0.1", "request_timeout_s": 30}, "applications": [APP]})
        controller.done.clear()
        _apply(controller, {"applications": [APP]})
    assert len(controller.deployed) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
