"""In-place and rolling updates: user_config keeps replicas; new code rolls with no failed request;
broken code (constructor or import) reports DEPLOY_FAILED while the old version keeps serving."""

from __future__ import annotations

import threading
import time

import requests

import ray_serving_ext as serve
from ray_serving_ext._private.config_deploy import AppBuildError, deploy_config
from ray_serving_ext.config_file import ServeDeploySchema
from tests.integration.update_apps.versions import ModelBroken, ModelV1, ModelV2
from tests.utils import wait_for_condition


def _pids(url: str, n: int = 30) -> set:
    with requests.Session() as s:
        return {s.get(url, timeout=10).text.split()[-1] for _ in range(n)}


def test_user_config_change_is_in_place(serve_url):
    url = f"{serve_url}/model"
    serve.run(ModelV1.bind(), name="model", route_prefix="/model")
    before = _pids(url)
    assert len(before) == 2
    serve.run(ModelV1.options(user_config={"greeting": "bonjour"}).bind(), name="model", route_prefix="/model")
    texts = [requests.get(url, timeout=10).text for _ in range(20)]
    assert all(t.startswith("v1 bonjour ") for t in texts), texts
    assert {t.split()[-1] for t in texts} <= before, "same replicas, reconfigured in place"


def _load(url: str, stop: threading.Event, results: list, deadline: float) -> None:
    with requests.Session() as s:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                resp = s.get(url, timeout=10)
                results.append((resp.status_code, resp.text))
            except requests.RequestException as exc:
                results.append((-1, repr(exc)))


def test_code_change_rolls_with_zero_failed_requests(serve_url):
    url = f"{serve_url}/model"
    serve.run(ModelV1.bind(), name="model", route_prefix="/model")
    old_pids = _pids(url)
    stop, results = threading.Event(), []
    deadline = time.monotonic() + 60
    threads = [threading.Thread(target=_load, args=(url, stop, results, deadline), daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        serve.run(ModelV2.bind(), name="model", route_prefix="/model")  # returns when RUNNING
        wait_for_condition(lambda: all(text.startswith("v2") for _, text in results[-20:]), timeout=30)
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    failed = [r for r in results if r[0] != 200]
    print(f"\nrolling update: {len(results)} requests, {len(failed)} failed")
    assert not failed, failed[:5]
    assert any(text.startswith("v1") for _, text in results)
    new_pids = _pids(url)
    assert len(new_pids) == 2 and not (new_pids & old_pids), "every replica was replaced"
    assert all(requests.get(url, timeout=10).text.startswith("v2") for _ in range(5))


def test_broken_constructor_keeps_old_version_serving(serve_url):
    url = f"{serve_url}/model"
    serve.run(ModelV1.bind(), name="model", route_prefix="/model")
    try:
        serve.run(ModelBroken.bind(), name="model", route_prefix="/model")
        raise AssertionError("serve.run must raise for a constructor that keeps failing")
    except RuntimeError as exc:
        assert "new weights are corrupt" in str(exc)
    status = serve.status().applications["model"]
    assert str(status.status) == "DEPLOY_FAILED"
    assert "new weights are corrupt" in status.message
    assert all(requests.get(url, timeout=10).text.startswith("v1") for _ in range(10))


def test_broken_import_keeps_old_version_serving(serve_url):
    url = f"{serve_url}/model"
    client = serve.api._get_client()
    good = {"applications": [{"name": "model", "route_prefix": "/model",
                              "import_path": "tests.integration.update_apps.versions:v1"}]}
    deploy_config(client, ServeDeploySchema.model_validate(good))
    wait_for_condition(lambda: str(serve.status().applications["model"].status) == "RUNNING", timeout=60)
    bad = {"applications": [{"name": "model", "route_prefix": "/model",
                             "import_path": "tests.e2e.detached_apps.broken_module:app"}]}
    try:
        deploy_config(client, ServeDeploySchema.model_validate(bad))
        raise AssertionError("a broken import must fail the deploy")
    except AppBuildError as exc:
        assert "broken on purpose" in str(exc)
    status = serve.status().applications["model"]
    assert str(status.status) == "DEPLOY_FAILED"
    assert "broken on purpose" in status.message
    assert all(requests.get(url, timeout=10).text.startswith("v1") for _ in range(10))
