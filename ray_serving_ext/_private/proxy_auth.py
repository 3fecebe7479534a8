"""Bearer API keys on the proxy (`http_options.api_keys_file` / `api_keys_env`).

Ray Serve leaves authentication to the application or a proxy in front of
it; here the proxy can require `Authorization: Bearer <key>` itself. Keys are
compared in constant time against every configured key (so neither a key's
length nor its position in the list shows in the timing), the keys file is
read again within a second of changing (rotation without a restart), and the
probes `/-/healthz` and `/-/routes` stay open for load balancers and
Kubernetes. With auth configured but no key loadable, everything is refused:
the proxy fails closed.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from typing import Any, List, Optional, Tuple

from ray_serving_ext._private.constants import env_value

logger = logging.getLogger("ray_serving_ext.proxy")

OPEN_PATHS = frozenset({"/-/healthz", "/-/routes"})
RELOAD_CHECK_S = 1.0
MISSING, INVALID = "missing", "invalid"


class ApiKeys:
    """The proxy's keys; `check(header)` is None for an accepted request, else why not."""

    def __init__(self, keys_file: Optional[str], keys_env: Optional[str]) -> None:
        self.enabled = bool(keys_file or keys_env)
        self._file = keys_file
        self._env = keys_env
        self._keys: List[bytes] = []
        self._file_stamp: Optional[Tuple[float, int]] = None
        self._checked = 0.0
        if self.enabled:
            self._load()

    def _load(self) -> None:
        keys: List[str] = []
        if self._env:
            keys += [k.strip() for k in env_value(self._env).split(",") if k.strip()]
        if self._file:
            try:
                st = os.stat(self._file)
                with open(self._file, encoding="utf-8") as f:
                    lines = f.read().splitlines()
                self._file_stamp = (st.st_mtime, st.st_size)
                keys += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
            except OSError as exc:
                logger.error("Cannot read the API keys file %s (%s); keeping %d key(s) loaded before.",
                             self._file, exc, len(self._keys))
                if self._keys:
                    return
        if not keys:
            logger.error("HTTP auth is on but no API key is configured: every request is refused.")
        self._keys = [k.encode() for k in keys]

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self._file is None or now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        try:
            st = os.stat(self._file)
            stamp: Optional[Tuple[float, int]] = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._file_stamp:
            self._load()
            logger.info("API keys reloaded from %s (%d key(s)).", self._file, len(self._keys))

    def check(self, authorization: Optional[bytes]) -> Optional[str]:
        """None when `authorization` (the header's raw value) carries a configured key,
        else MISSING (no bearer credentials) or INVALID (a key that is not configured)."""
        self._maybe_reload()
        if not authorization:
            return MISSING
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return MISSING
        token = token.strip()
        found = False
        for key in self._keys:  # every key is compared: the time does not depend on which matched
            found |= hmac.compare_digest(key, token)
        return None if found else INVALID


def authorization_header(headers: Any, fallback: bytes = b"") -> Optional[bytes]:
    """The `Authorization` header's value, else (when given) the `fallback` header's."""
    found = None
    for name, value in headers:
        if name == b"authorization":
            return value
        if fallback and name == fallback and found is None:
            found = value
    return found


def unauthorized_messages(reason: str, request_id: str) -> List[dict]:
    """The ASGI messages of a 401: `WWW-Authenticate` (RFC 6750) and a JSON body."""
    challenge = b'Bearer realm="ray_serving_ext"'
    if reason == INVALID:
        challenge += b', error="invalid_token"'
    message = ("The API key is not valid." if reason == INVALID
               else "This endpoint needs an API key: send 'Authorization: Bearer <key>'.")
    body = json.dumps({"error": "unauthorized", "message": message, "request_id": request_id}).encode()
    return [
        {"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge), (b"x-request-id", request_id.encode()),
        ]},
        {"type": "http.response.body", "body": body, "more_body": False},
    ]
