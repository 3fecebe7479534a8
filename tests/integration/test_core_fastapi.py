"""FastAPI ingress with `@serve.ingress(app)` (issue #2: item 5).

The app's own routes live under the application's route_prefix ("/api"), so
GET /api/items/3 reaches the route "/items/{item_id}"; FastAPI validation (422),
its docs and openapi.json work under the prefix; routes are methods that see
`self`, the replica's instance.

No `from __future__ import annotations` here on purpose: string annotations are
covered separately (see test_string_annotations_resolve_in_replica).
"""

import os
from typing import List, Optional

import pytest
import requests
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

import ray_serving_ext as serve

APP = "fastapi"
PREFIX = "/api"
TIMEOUT = 15

api = FastAPI(title="Inventory")


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: List[str] = []


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
@serve.ingress(api)
class Inventory:
    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.items: dict = {}

    @api.get("/items/{item_id}")
    def get_item(self, item_id: int, q: Optional[str] = None, limit: int = Query(default=10, le=100)) -> dict:
        return {"item_id": item_id, "q": q, "limit": limit, "currency": self.currency}

    @api.post("/items")
    async def create_item(self, item: Item) -> dict:
        self.items[item.name] = item
        return {"name": item.name, "price": item.price, "tags": item.tags, "currency": self.currency,
                "count": len(self.items)}

    @api.get("/stored/{name}")
    def stored(self, name: str) -> Item:
        if name not in self.items:
            raise HTTPException(status_code=404, detail=f"no item {name}")
        return self.items[name]

    @api.get("/pid", response_class=PlainTextResponse)
    def pid(self) -> str:
        return str(os.getpid())

    @api.get("/")
    def root(self) -> dict:
        return {"root": True}


def base_url(serve_session) -> str:
    """The session Serve instance's URL (the fixture gives the URL or an object with ensure())."""
    return serve_session if isinstance(serve_session, str) else serve_session.ensure()


@pytest.fixture(scope="module")
def url(serve_session):
    base = base_url(serve_session)
    serve.run(Inventory.bind("EUR"), name=APP, route_prefix=PREFIX)
    yield base + PREFIX
    serve.delete(APP)


def test_path_and_query_params(url):
    resp = requests.get(f"{url}/items/3", params={"q": "shoes", "limit": 5}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"item_id": 3, "q": "shoes", "limit": 5, "currency": "EUR"}
    assert resp.headers["x-request-id"]
    # Defaults apply.
    assert requests.get(f"{url}/items/7", timeout=TIMEOUT).json() == {
        "item_id": 7, "q": None, "limit": 10, "currency": "EUR"
    }


def test_validation_errors_are_422(url):
    resp = requests.get(f"{url}/items/not-a-number", timeout=TIMEOUT)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["path", "item_id"]
    assert requests.get(f"{url}/items/1", params={"limit": 1000}, timeout=TIMEOUT).status_code == 422


def test_pydantic_body(url):
    resp = requests.post(f"{url}/items", json={"name": "hat", "price": 9.5, "tags": ["red"]}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "hat" and body["price"] == 9.5 and body["tags"] == ["red"]
    assert body["currency"] == "EUR"
    # State lives in the replica's instance.
    stored = requests.get(f"{url}/stored/hat", timeout=TIMEOUT)
    assert stored.status_code == 200
    assert stored.json() == {"name": "hat", "price": 9.5, "tags": ["red"]}

    for bad in ({"name": "hat"}, {"name": "", "price": 1}, {"name": "x", "price": -1}, {"price": "free"}):
        resp = requests.post(f"{url}/items", json=bad, timeout=TIMEOUT)
        assert resp.status_code == 422, (bad, resp.status_code, resp.text)
        assert "detail" in resp.json()
    resp = requests.post(f"{url}/items", data=b"not json", headers={"content-type": "application/json"},
                         timeout=TIMEOUT)
    assert resp.status_code == 422


def test_http_exception_and_unknown_routes(url):
    resp = requests.get(f"{url}/stored/missing", timeout=TIMEOUT)
    assert resp.status_code == 404
    assert resp.json() == {"detail": "no item missing"}
    # A path under the prefix that the FastAPI app lacks: FastAPI's own 404.
    resp = requests.get(f"{url}/nope", timeout=TIMEOUT)
    assert resp.status_code == 404
    assert resp.json() == {"detail": "Not Found"}
    # Wrong method on an existing route.
    assert requests.delete(f"{url}/items/1", timeout=TIMEOUT).status_code == 405


def test_prefix_root_and_response_class(url):
    assert requests.get(f"{url}/", timeout=TIMEOUT).json() == {"root": True}
    resp = requests.get(f"{url}/pid", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert int(resp.text) > 0


def test_openapi_and_docs_under_prefix(url):
    resp = requests.get(f"{url}/openapi.json", timeout=TIMEOUT)
    assert resp.status_code == 200
    schema = resp.json()
    assert schema["info"]["title"] == "Inventory"
    assert "/items/{item_id}" in schema["paths"]
    assert "/items" in schema["paths"]
    params = {p["name"] for p in schema["paths"]["/items/{item_id}"]["get"]["parameters"]}
    assert params == {"item_id", "q", "limit"}  # `self` is not a parameter
    assert "Item" in schema["components"]["schemas"]

    docs = requests.get(f"{url}/docs", timeout=TIMEOUT)
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert "/api/openapi.json" in docs.text  # the docs page loads the schema under the prefix


# ---- string annotations -----------------------------------------------------------------

quoted_api = FastAPI()


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
@serve.ingress(quoted_api)
class Quoted:
    """Routes annotated with strings, as under `from __future__ import annotations`."""

    @quoted_api.get("/items/{item_id}")
    def get_item(self, item_id: "int", q: "Optional[str]" = None) -> "dict":
        return {"item_id": item_id, "q": q}

    @quoted_api.post("/items")
    def create_item(self, item: "Item") -> "dict":
        return {"name": item.name}


def test_string_annotations_resolve_in_replica(url):
    base = url[: -len(PREFIX)]
    serve.run(Quoted.bind(), name="quoted", route_prefix="/quoted")
    try:
        resp = requests.get(f"{base}/quoted/items/5", params={"q": "x"}, timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"item_id": 5, "q": "x"}
        resp = requests.post(f"{base}/quoted/items", json={"name": "cap", "price": 2}, timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"name": "cap"}
    finally:
        serve.delete("quoted")
