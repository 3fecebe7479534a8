"""HTTPS on the proxy: `HTTPOptions(ssl_keyfile=..., ssl_certfile=...)` makes it
serve TLS only (Ray Serve 2.60's ssl_* HTTP options)."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
import requests

import ray_serving_ext as serve

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _self_signed(tmp_path, password: bytes) -> tuple:
    """A key (encrypted with *password*) and a self-signed certificate for 127.0.0.1."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    keyfile, certfile = tmp_path / "key.pem", tmp_path / "cert.pem"
    keyfile.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(password),
    ))
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(keyfile), str(certfile)


@serve.deployment
def hello(request=None) -> str:
    return "secure hello"


def test_proxy_serves_https_only(serve_instance, tmp_path):
    keyfile, certfile = _self_signed(tmp_path, b"s3cret")
    http_url = serve_instance.ensure(ssl_keyfile=keyfile, ssl_certfile=certfile, ssl_keyfile_password="s3cret")
    port = http_url.rsplit(":", 1)[1]
    try:
        serve.run(hello.bind(), name="tls", route_prefix="/")
        resp = requests.get(f"https://127.0.0.1:{port}/", verify=certfile, timeout=10)
        assert (resp.status_code, resp.text) == (200, "secure hello")
        with pytest.raises(requests.exceptions.SSLError):  # not trusted without the CA
            requests.get(f"https://127.0.0.1:{port}/", timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP gets no answer
            requests.get(f"http://127.0.0.1:{port}/", timeout=10)
    finally:
        serve.delete("tls")
