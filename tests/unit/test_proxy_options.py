"""The proxy's API keys and request limits without Ray: sources, parsing, reloading, failing closed, the 401, defaults."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ray_serving_ext._private import proxy_auth
from ray_serving_ext._private.proxy_auth import INVALID, MISSING, ApiKeys, unauthorized_messages
from ray_serving_ext.config import HTTPOptions
from ray_serving_ext.config_file import HTTPOptionsSchema


def test_keys_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SERVE_KEYS", " alpha , beta,,")
    path = tmp_path / "keys"
    path.write_text("# comment\n\ngamma\n")
    keys = ApiKeys(str(path), "TEST_SERVE_KEYS")
    assert keys.enabled
    for key in (b"alpha", b"beta", b"gamma"):
        assert keys.check(b"Bearer " + key) is None
        assert keys.check(b"bearer  " + key + b" ") is None  # scheme case and spaces
    assert keys.check(None) == MISSING and keys.check(b"") == MISSING and keys.check(b"Bearer ") == MISSING
    assert keys.check(b"Basic alpha") == MISSING
    assert keys.check(b"Bearer alph") == INVALID and keys.check(b"Bearer # comment") == INVALID


def test_disabled_without_a_source():
    assert not ApiKeys(None, None).enabled


def test_fails_closed_without_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_SERVE_NO_KEYS", raising=False)
    assert ApiKeys(None, "TEST_SERVE_NO_KEYS").check(b"Bearer anything") == INVALID
    assert ApiKeys(str(tmp_path / "absent"), None).check(b"Bearer anything") == INVALID


def test_file_changes_are_picked_up_and_a_vanished_file_keeps_the_old_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(proxy_auth, "RELOAD_CHECK_S", 0.0)
    path = tmp_path / "keys"
    path.write_text("one\n")
    keys = ApiKeys(str(path), None)
    assert keys.check(b"Bearer one") is None
    path.write_text("two\nthree\n")  # a different size: seen even within the mtime's resolution
    assert keys.check(b"Bearer one") == INVALID and keys.check(b"Bearer three") is None
    path.unlink()
    assert keys.check(b"Bearer three") is None  # unreadable: the keys loaded before stay


def test_unauthorized_response_shape():
    start, body = unauthorized_messages(INVALID, "rid-1")
    headers = dict(start["headers"])
    assert start["status"] == 401
    assert headers[b"www-authenticate"] == b'Bearer realm="ray_serving_ext", error="invalid_token"'
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert json.loads(body["body"]) == {"error": "unauthorized", "message": "The API key is not valid.",
                                        "request_id": "rid-1"}
    start, _ = unauthorized_messages(MISSING, "rid-2")
    assert dict(start["headers"])[b"www-authenticate"] == b'Bearer realm="ray_serving_ext"'


def test_options_in_http_options_and_the_config_file():
    options = HTTPOptions(api_keys_file="/etc/serve/keys", api_keys_env="SERVE_KEYS")
    assert (options.api_keys_file, options.api_keys_env) == ("/etc/serve/keys", "SERVE_KEYS")
    schema = HTTPOptionsSchema(api_keys_file="/etc/serve/keys")
    assert schema.to_http_options().api_keys_file == "/etc/serve/keys"
    with pytest.raises(ValidationError):
        HTTPOptions(api_keys_env="  ")
    assert HTTPOptions().api_keys_file is None and HTTPOptions().api_keys_env is None


def test_limit_defaults_and_nulls():
    from ray_serving_ext._private.http_limits import Limits

    limits = Limits(HTTPOptions())
    assert (limits.max_body, limits.max_header, limits.header_timeout_s, limits.body_timeout_s,
            limits.max_connections) == (1024 ** 3, 64 * 1024, 30.0, 60.0, 10_000)
    off = Limits(HTTPOptions(max_request_body_bytes=None, max_header_bytes=None, header_timeout_s=None,
                             body_timeout_s=None, max_connections=None))
    assert (off.max_body, off.max_header, off.header_timeout_s, off.body_timeout_s, off.max_connections) == (None,) * 5
    with pytest.raises(ValidationError):
        HTTPOptions(max_header_bytes=0)
    assert HTTPOptionsSchema(metrics_endpoint=False, max_connections=5).to_http_options().max_connections == 5
