"""Hello world: one function deployment served over HTTP.

Run it (serves on http://127.0.0.1:8000 until Ctrl-C):

    python examples/hello.py

then, from another shell:

    curl "http://127.0.0.1:8000/?name=Ray"        # Hello, Ray!
    curl "http://127.0.0.1:8000/"                 # Hello, world!

Or deploy it from Python next to other applications:

    import ray_serving_ext as serve
    from examples.hello import app
    serve.run(app, name="hello", route_prefix="/hello")
"""

from starlette.requests import Request

import ray_serving_ext as serve


@serve.deployment
def hello(request: Request) -> str:
    """Greets the `name` query parameter; a str becomes a text/plain response."""
    name = request.query_params.get("name", "world")
    return f"Hello, {name}!"


app = hello.bind()


if __name__ == "__main__":
    serve.run(app, blocking=True)
