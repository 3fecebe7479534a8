import requests

import ray_serving_ext as serve


@serve.deployment
def hello(request) -> str:
    return "hello"


def test_hello_over_http(serve_url):
    serve.run(hello.bind(), name="hello", route_prefix="/hello")
    resp = requests.get(f"{serve_url}/hello", timeout=10)
    assert resp.status_code == 200
    assert resp.text == "hello"
    assert resp.headers["x-request-id"]
