"""The controller's admin HTTP API: instance details and the external scaler's endpoint (Ray Serve's statuses)."""

from __future__ import annotations

import pytest
import requests

import ray_serving_ext as serve
from tests.integration.policy_apps import Fixed
from tests.utils import wait_for_condition

TIMEOUT = 60


@pytest.fixture
def admin_url(serve_url, serve_instance):
    """The shared instance's admin API (the conftest starts its instances with one)."""
    if not serve_instance.admin_url:  # another module started the instance without it
        serve.shutdown()
        serve_instance.options = None
        serve_instance.ensure()
    url = serve_instance.admin_url
    wait_for_condition(lambda: requests.get(f"{url}/api/serve/applications/", timeout=5).ok, timeout=TIMEOUT)
    return url


def _scale(url: str, app: str, deployment: str, body) -> requests.Response:
    return requests.post(f"{url}/api/v1/applications/{app}/deployments/{deployment}/scale", json=body, timeout=10)


def _running(app: str) -> int:
    states = serve.status().applications[app].deployments["Fixed"].replica_states
    return {str(k): v for k, v in states.items()}.get("RUNNING", 0)


def test_get_applications_returns_instance_details(admin_url):
    serve.run(Fixed.bind(), name="listed", route_prefix="/listed")
    body = requests.get(f"{admin_url}/api/serve/applications/", timeout=10).json()
    assert body["applications"]["listed"]["status"] == "RUNNING"
    assert body["applications"]["listed"]["deployments"]["Fixed"]["target_num_replicas"] == 1
    assert body["controller_info"]["actor_name"] == "SERVE_CONTROLLER_ACTOR"
    only = requests.get(f"{admin_url}/api/serve/applications/?api_type=declarative", timeout=10).json()
    assert only["applications"] == {}
    bad = requests.get(f"{admin_url}/api/serve/applications/?api_type=nope", timeout=10)
    assert bad.status_code == 400


def test_scale_endpoint_with_ray_serves_statuses(admin_url):
    serve.run(Fixed.bind(), name="scaled", route_prefix=None, external_scaler_enabled=True)
    serve.run(Fixed.bind(), name="fixed", route_prefix=None)
    accepted = _scale(admin_url, "scaled", "Fixed", {"target_num_replicas": 2})
    assert accepted.status_code == 200 and "asynchronously" in accepted.json()["message"]
    wait_for_condition(lambda: _running("scaled") == 2, timeout=TIMEOUT, message="scaled to 2 over HTTP")
    assert _scale(admin_url, "fixed", "Fixed", {"target_num_replicas": 2}).status_code == 412
    assert _scale(admin_url, "nope", "Fixed", {"target_num_replicas": 2}).status_code == 404
    assert _scale(admin_url, "scaled", "Nope", {"target_num_replicas": 2}).status_code == 404
    bad = _scale(admin_url, "scaled", "Fixed", {"target_num_replicas": -1})
    assert bad.status_code == 400 and "Invalid request body" in bad.json()["error"]
    assert _running("fixed") == 1
