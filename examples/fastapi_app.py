"""A FastAPI app served by a deployment class with `@serve.ingress`.

Routes are methods: they see `self`, the replica's instance, and FastAPI does
the rest (path and query parameters, pydantic request bodies, 422 on invalid
input, /docs and /openapi.json).

Run it (serves on http://127.0.0.1:8000/api until Ctrl-C):

    python examples/fastapi_app.py

then:

    curl "http://127.0.0.1:8000/api/hello/Ada?times=2"
    # {"message":"Hello, Ada! Hello, Ada!"}
    curl -X POST "http://127.0.0.1:8000/api/greet" \\
         -H 'content-type: application/json' -d '{"name": "Grace", "excited": true}'
    # {"message":"Hello, Grace!","greeted":1}
    curl -X POST "http://127.0.0.1:8000/api/greet" \\
         -H 'content-type: application/json' -d '{"name": ""}'      # 422
    open http://127.0.0.1:8000/api/docs

Note: annotations must be real types here, not strings, so this module does
not use `from __future__ import annotations`.
"""

from fastapi import FastAPI
from pydantic import BaseModel, Field

import ray_serving_ext as serve

api = FastAPI(title="Greeting service")


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    excited: bool = False


@serve.deployment
@serve.ingress(api)
class GreetingService:
    def __init__(self, greeting: str = "Hello") -> None:
        self.greeting = greeting
        self.greeted = 0

    @api.get("/hello/{name}")
    def hello(self, name: str, times: int = 1) -> dict:
        return {"message": " ".join([f"{self.greeting}, {name}!"] * times)}

    @api.post("/greet")
    def greet(self, body: Greeting) -> dict:
        self.greeted += 1
        punctuation = "!" if body.excited else "."
        return {"message": f"{self.greeting}, {body.name}{punctuation}", "greeted": self.greeted}


app = GreetingService.bind("Hello")


if __name__ == "__main__":
    serve.run(app, route_prefix="/api", blocking=True)
