"""Model composition: three deployments wired together with DeploymentHandles.

    HTTP -> Pipeline --handle--> Tokenizer
                     --handle--> Scorer

`Tokenizer.bind()` and `Scorer.bind(...)` are passed to `Pipeline.bind(...)`;
each replica of Pipeline receives DeploymentHandles in their place. Pipeline
passes the tokenizer's DeploymentResponse straight into the scorer call, so
the tokens go from one replica to the other without a round trip through it.

Run it (serves on http://127.0.0.1:8000 until Ctrl-C):

    python examples/composed.py

then:

    curl -X POST "http://127.0.0.1:8000/" -d "Ray Serve is great, really great"
    # {"tokens":6,"score":2,"sentiment":"positive"}

From Python, the ingress handle works the same way without HTTP:

    import ray_serving_ext as serve
    from examples.composed import app
    handle = serve.run(app, name="composed", route_prefix="/composed")
    handle.analyze.remote("awful, bad and sad").result()
"""

from typing import Dict, List

from starlette.requests import Request

import ray_serving_ext as serve

POSITIVE = {"good", "great", "love", "excellent", "happy"}
NEGATIVE = {"bad", "awful", "hate", "terrible", "sad"}


@serve.deployment
class Tokenizer:
    def __call__(self, text: str) -> List[str]:
        return [word.strip(".,!?;:").lower() for word in text.split() if word.strip(".,!?;:")]


@serve.deployment
class Scorer:
    def __init__(self, positive: set, negative: set) -> None:
        self.positive, self.negative = set(positive), set(negative)

    def __call__(self, tokens: List[str]) -> Dict[str, int]:
        score = sum(t in self.positive for t in tokens) - sum(t in self.negative for t in tokens)
        return {"tokens": len(tokens), "score": score}


@serve.deployment
class Pipeline:
    def __init__(self, tokenizer, scorer) -> None:
        self.tokenizer = tokenizer
        self.scorer = scorer

    async def analyze(self, text: str) -> dict:
        tokens = self.tokenizer.remote(text)  # a DeploymentResponse, not yet a value
        result = await self.scorer.remote(tokens)  # passed on as an argument
        sentiment = "positive" if result["score"] > 0 else "negative" if result["score"] < 0 else "neutral"
        return {**result, "sentiment": sentiment}

    async def __call__(self, request: Request) -> dict:
        return await self.analyze((await request.body()).decode())


app = Pipeline.bind(Tokenizer.bind(), Scorer.bind(POSITIVE, NEGATIVE))


if __name__ == "__main__":
    serve.run(app, blocking=True)
