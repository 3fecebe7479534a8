"""Every example's `app` deploys on the shared Serve instance and answers correctly."""

from __future__ import annotations

import importlib

import pytest
import requests

import ray_serving_ext as serve

TIMEOUT = 15
EXAMPLES = ["hello", "user_config", "fastapi_app", "composed"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_documented_and_builds_an_app(name):
    module = importlib.import_module(f"examples.{name}")
    assert isinstance(module.app, serve.Application)
    doc = module.__doc__ or ""
    assert f"python examples/{name}.py" in doc, "the docstring must say how to run it"
    assert "http://127.0.0.1:8000" in doc


def test_hello(serve_url):
    from examples.hello import app

    serve.run(app, name="ex_hello", route_prefix="/hello")
    resp = requests.get(f"{serve_url}/hello", params={"name": "Ray"}, timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.text == "Hello, Ray!"
    assert resp.headers["content-type"].startswith("text/plain")
    assert requests.get(f"{serve_url}/hello", timeout=TIMEOUT).text == "Hello, world!"


def test_user_config(serve_url):
    from examples.user_config import Classifier, app

    serve.run(app, name="ex_config", route_prefix="/classify")
    first = requests.get(f"{serve_url}/classify", params={"score": 0.7}, timeout=TIMEOUT).json()
    assert first == {"score": 0.7, "threshold": 0.5, "label": "positive", "version": 1}

    # As the docstring says: a new user_config changes behaviour on the same replica.
    serve.run(Classifier.options(user_config={"threshold": 0.9}).bind(), name="ex_config", route_prefix="/classify")
    second = requests.get(f"{serve_url}/classify", params={"score": 0.7}, timeout=TIMEOUT).json()
    assert second == {"score": 0.7, "threshold": 0.9, "label": "negative", "version": 2}


def test_fastapi_app(serve_url):
    from examples.fastapi_app import app

    serve.run(app, name="ex_fastapi", route_prefix="/api")
    resp = requests.get(f"{serve_url}/api/hello/Ada", params={"times": 2}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"message": "Hello, Ada! Hello, Ada!"}

    resp = requests.post(f"{serve_url}/api/greet", json={"name": "Grace", "excited": True}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"message": "Hello, Grace!", "greeted": 1}
    resp = requests.post(f"{serve_url}/api/greet", json={"name": "Linus"}, timeout=TIMEOUT)
    assert resp.json() == {"message": "Hello, Linus.", "greeted": 2}

    assert requests.post(f"{serve_url}/api/greet", json={"name": ""}, timeout=TIMEOUT).status_code == 422
    assert requests.get(f"{serve_url}/api/hello/Ada", params={"times": "x"}, timeout=TIMEOUT).status_code == 422

    schema = requests.get(f"{serve_url}/api/openapi.json", timeout=TIMEOUT).json()
    assert schema["info"]["title"] == "Greeting service"
    assert {"/hello/{name}", "/greet"} <= set(schema["paths"])
    assert requests.get(f"{serve_url}/api/docs", timeout=TIMEOUT).status_code == 200


def test_composed(serve_url):
    from examples.composed import app

    handle = serve.run(app, name="ex_composed", route_prefix="/composed")
    status = serve.status().applications["ex_composed"]
    assert set(status.deployments) == {"Pipeline", "Tokenizer", "Scorer"}
    assert all(d.status == "HEALTHY" for d in status.deployments.values())

    resp = requests.post(f"{serve_url}/composed", data="Ray Serve is great, really great", timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"tokens": 6, "score": 2, "sentiment": "positive"}

    assert handle.analyze.remote("awful, bad and sad").result(timeout_s=TIMEOUT) == {
        "tokens": 4, "score": -3, "sentiment": "negative"
    }
    assert handle.analyze.remote("").result(timeout_s=TIMEOUT) == {"tokens": 0, "score": 0, "sentiment": "neutral"}
