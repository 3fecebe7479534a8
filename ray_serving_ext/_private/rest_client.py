"""The CLI's client for an instance given by an http(s):// address: Ray Serve's REST API.

With `--address http://host:port` (the controller's admin API, see
`admin_server.py`, or Ray Serve's dashboard) the CLI does not join the Ray
cluster: `deploy` PUTs the config, `status` and `config` read
`ServeInstanceDetails`, `shutdown` DELETEs, as Ray's own `serve` CLI does.

When the API requires keys, `RAY_SERVE_EXT_API_KEY` is sent as a Bearer token;
without it, and with Ray's token auth on (`RAY_AUTH_MODE=token`), Ray's token
(`RAY_AUTH_TOKEN`) is sent, as Ray's own clients do.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

from ray_serving_ext._private.constants import env_value
from ray_serving_ext.exceptions import RayServeException

APPLICATIONS_PATH = "/api/serve/applications/"
TIMEOUT_S = 30.0


def is_http_address(address: str) -> bool:
    return address.startswith(("http://", "https://"))


def bearer_key() -> str:
    """The key the CLI presents: RAY_SERVE_EXT_API_KEY, else Ray's token when token auth is on, else ""."""
    key = env_value("RAY_SERVE_EXT_API_KEY").strip()
    if not key and env_value("RAY_AUTH_MODE").lower() == "token":
        key = env_value("RAY_AUTH_TOKEN").strip()
    return key


class RestClient:
    """Calls on the REST API at `address`; errors are RayServeException with the server's answer."""

    def __init__(self, address: str) -> None:
        self.address = address.rstrip("/")

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        key = bearer_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.address + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise RayServeException(f"Could not reach the Serve REST API at '{self.address}': {exc}") from None

    def _ok(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> str:
        status, text = self._request(method, path, body)
        if status != 200:
            raise RayServeException(f"{method} {self.address}{path} answered {status}: {text.strip()}")
        return text

    def details(self) -> Dict[str, Any]:
        """The instance as `ServeInstanceDetails` (plain data)."""
        return json.loads(self._ok("GET", APPLICATIONS_PATH))

    def deploy(self, config: Dict[str, Any]) -> None:
        """Apply a whole config (a `ServeDeploySchema` as plain data), declaratively."""
        self._ok("PUT", APPLICATIONS_PATH, config)

    def shutdown(self) -> None:
        self._ok("DELETE", APPLICATIONS_PATH)
