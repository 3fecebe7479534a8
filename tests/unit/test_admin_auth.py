"""API keys on the admin (REST) API, without Ray: the real AdminServer on a loopback port."""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

import httpx
import pytest

from ray_serving_ext._private import admin_server
from ray_serving_ext._private.admin_server import AdminServer
from ray_serving_ext._private.proxy_auth import ApiKeys
from tests.utils import free_port

CONFIG = {"applications": [{"name": "hello", "route_prefix": "/hello", "import_path": "examples.hello:app"}]}


async def _serve(keys: Optional[ApiKeys]) -> tuple:
    applied: List[Any] = []

    async def details(api_type: Optional[str]) -> dict:
        return {"applications": {}, "api_type": api_type}

    async def scale(deployment_id: Any, n: int) -> None:
        return None

    server = AdminServer(admin_server.build_app(details, scale, applied.append, None), "127.0.0.1", free_port(), keys)
    assert server.start()
    return server, applied, f"http://127.0.0.1:{server.port}"


async def _get(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    for _ in range(50):  # the server task starts listening on the loop's next turns
        try:
            return await client.get(url, **kwargs)
        except httpx.ConnectError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


@pytest.mark.asyncio
async def test_every_path_needs_a_key_and_a_rotated_key_works(tmp_path):
    keys_file = tmp_path / "admin_keys"
    keys_file.write_text("first-key\n")
    server, applied, url = await _serve(ApiKeys(str(keys_file), None))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            missing = await _get(client, f"{url}/api/serve/applications/")
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="ray_serving_ext"'
            assert missing.json()["error"] == "unauthorized" and missing.json()["request_id"]
            wrong = await _get(client, f"{url}/api/ray/version", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
            put = await client.put(f"{url}/api/serve/applications/", json=CONFIG)
            assert put.status_code == 401 and applied == []  # refused before the body is read

            good = {"Authorization": "Bearer first-key"}
            assert (await _get(client, f"{url}/api/ray/version", headers=good)).status_code == 200
            # The KubeRay operator sends its token in X-Ray-Authorization (Ray's dashboard reads both).
            kuberay = await _get(client, f"{url}/api/serve/applications/",
                                 headers={"X-Ray-Authorization": "Bearer first-key"})
            assert kuberay.status_code == 200, kuberay.text
            wrong_kuberay = await _get(client, f"{url}/api/serve/applications/",
                                       headers={"X-Ray-Authorization": "Bearer nope"})
            assert wrong_kuberay.status_code == 401
            # Authorization comes first, as in Ray: a wrong one is not rescued by the other header.
            both = await _get(client, f"{url}/api/ray/version",
                              headers={"Authorization": "Bearer nope", "X-Ray-Authorization": "Bearer first-key"})
            assert both.status_code == 401
            got = await _get(client, f"{url}/api/serve/applications/?api_type=declarative", headers=good)
            assert got.status_code == 200 and got.json()["api_type"] == "declarative"
            put = await client.put(f"{url}/api/serve/applications/", json=CONFIG, headers=good)
            assert put.status_code == 200 and [s.applications[0].name for s in applied] == ["hello"]

            keys_file.write_text("second-key\n")  # rotation: re-read within a second, no restart
            second = {"Authorization": "Bearer second-key"}
            for _ in range(40):
                if (await _get(client, f"{url}/api/ray/version", headers=second)).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await _get(client, f"{url}/api/ray/version", headers=second)).status_code == 200
            assert (await _get(client, f"{url}/api/ray/version", headers=good)).status_code == 401
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_keys_from_a_named_variable_and_failing_closed(monkeypatch):
    monkeypatch.setenv("TEST_ADMIN_KEYS", "k1,k2")
    server, _, url = await _serve(ApiKeys(None, "TEST_ADMIN_KEYS"))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for key in ("k1", "k2"):
                resp = await _get(client, f"{url}/api/ray/version", headers={"Authorization": f"Bearer {key}"})
                assert resp.status_code == 200, key
    finally:
        await server.stop()
    monkeypatch.delenv("TEST_ADMIN_KEYS")
    server, _, url = await _serve(ApiKeys(None, "TEST_ADMIN_KEYS"))  # the variable names no key: refuse all
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await _get(client, f"{url}/api/ray/version", headers={"Authorization": "Bearer k1"})
            assert resp.status_code == 401
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_without_keys_the_api_is_open():
    server, _, url = await _serve(ApiKeys(None, None))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await _get(client, f"{url}/api/serve/applications/")).status_code == 200
    finally:
        await server.stop()
