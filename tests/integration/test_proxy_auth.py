"""Bearer API keys on the proxy (issue 15, finding 3), with a real proxy on loopback.

The instance is started with `http_options.api_keys_file`. Without a key, or
with a wrong one, a request gets 401 with `WWW-Authenticate` and a JSON body;
with a key it is served (on the fast path and the ASGI path alike); the probes
stay open and the metrics endpoint does not; a WebSocket handshake without a
key is refused; rewriting the file rotates the keys without a restart.
"""

from __future__ import annotations

import pytest
import requests
from fastapi import FastAPI, WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import ray_serving_ext as serve
from tests.utils import wait_for_condition

ws_app = FastAPI()


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
@serve.ingress(ws_app)
class Guarded:
    @ws_app.get("/")
    def root(self) -> str:
        return "inside"

    @ws_app.websocket("/ws")
    async def echo(self, ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hi " + await ws.receive_text())
        await ws.close()


def _status(url: str, key: str = "", **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.request(kw.pop("method", "GET"), url, headers=headers, timeout=10, **kw)


@pytest.fixture(scope="module")
def guarded(serve_instance, tmp_path_factory):
    """One instance with auth for the module (the rotation test, last, changes its keys)."""
    keys = tmp_path_factory.mktemp("auth") / "keys.txt"
    keys.write_text("# the proxy's keys\nkey-one\n\nkey-spare\n")
    url = serve_instance.ensure(api_keys_file=str(keys))
    serve.run(Guarded.bind(), name="guarded", route_prefix="/g")
    yield url, keys
    serve.shutdown()
    serve_instance.options = None  # later tests get an instance without auth


def test_requests_need_a_valid_key(guarded):
    url, _ = guarded
    missing = _status(f"{url}/g/")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="ray_serving_ext"'
    assert missing.json()["error"] == "unauthorized" and missing.json()["request_id"] == missing.headers["x-request-id"]
    wrong = _status(f"{url}/g/", "key-two")
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert _status(f"{url}/g/", "key-one").json() == "inside"
    assert _status(f"{url}/g/", "key-spare", method="POST").status_code == 405  # the app's own answer
    big = _status(f"{url}/g/", "key-one", method="POST", data=b"x" * (3 * 1024 * 1024))  # a streamed body
    assert big.status_code == 405
    assert requests.get(f"{url}/g/", headers={"Authorization": "Basic a2V5LW9uZQ=="}, timeout=10).status_code == 401
    # Probes stay open; the metrics endpoint does not.
    assert _status(f"{url}/-/healthz").status_code == 200
    assert _status(f"{url}/-/routes").json() == {"/g": "guarded"}
    assert _status(f"{url}/-/metrics").status_code == 401
    assert _status(f"{url}/nowhere").status_code == 401  # no route is revealed without a key


def test_websocket_handshake_needs_a_key(guarded):
    url, _ = guarded
    ws_url = url.replace("http://", "ws://") + "/g/ws"
    with pytest.raises(InvalidStatus) as refused:
        with connect(ws_url, open_timeout=10):
            pass
    assert refused.value.response.status_code == 403
    with connect(ws_url, open_timeout=10, additional_headers={"Authorization": "Bearer key-one"}) as ws:
        ws.send("there")
        assert ws.recv(timeout=10) == "hi there"


def test_rewriting_the_keys_file_rotates_keys_without_a_restart(guarded):
    url, keys = guarded
    assert _status(f"{url}/g/", "key-one").status_code == 200
    keys.write_text("key-two\n")
    wait_for_condition(lambda: _status(f"{url}/g/", "key-two").status_code == 200, timeout=10,
                       message="the new key is accepted")
    assert _status(f"{url}/g/", "key-one").status_code == 401
