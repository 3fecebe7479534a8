"""Dynamic configuration: change a running deployment's behaviour without restarting it.

`user_config` is handed to the class's `reconfigure()` method before the first
request, and again whenever the application is redeployed with a different
user_config. The replica keeps running (same process, same loaded state).

Run it (serves on http://127.0.0.1:8000 until Ctrl-C):

    python examples/user_config.py

then:

    curl "http://127.0.0.1:8000/?score=0.7"
    # {"score":0.7,"threshold":0.5,"label":"positive","version":1}

Change the threshold from Python while it serves:

    import ray_serving_ext as serve
    from examples.user_config import Classifier
    serve.run(Classifier.options(user_config={"threshold": 0.9}).bind())
    # now score=0.7 is labelled "negative", by the same replica
"""

from starlette.requests import Request

import ray_serving_ext as serve


@serve.deployment(user_config={"threshold": 0.5})
class Classifier:
    """Labels a score positive when it reaches the configured threshold."""

    def __init__(self) -> None:
        self.threshold = None  # set by reconfigure() before any request arrives
        self.version = 0

    def reconfigure(self, config: dict) -> None:
        self.threshold = float(config["threshold"])
        self.version += 1

    def classify(self, score: float) -> dict:
        label = "positive" if score >= self.threshold else "negative"
        return {"score": score, "threshold": self.threshold, "label": label, "version": self.version}

    async def __call__(self, request: Request) -> dict:
        return self.classify(float(request.query_params.get("score", "0")))


app = Classifier.bind()


if __name__ == "__main__":
    serve.run(app, blocking=True)
