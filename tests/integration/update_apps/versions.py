"""Two versions of one deployment, and a version whose constructor raises."""

import asyncio
import os

import ray_serving_ext as serve


@serve.deployment(name="Model", num_replicas=2, max_ongoing_requests=20, graceful_shutdown_wait_loop_s=0.5,
                  user_config={"greeting": "hello"})
class ModelV1:
    def reconfigure(self, config: dict) -> None:
        self.greeting = config["greeting"]

    async def __call__(self, request=None) -> str:
        await asyncio.sleep(0.01)
        return f"v1 {self.greeting} {os.getpid()}"


@serve.deployment(name="Model", num_replicas=2, max_ongoing_requests=20, graceful_shutdown_wait_loop_s=0.5,
                  user_config={"greeting": "hello"})
class ModelV2:
    def reconfigure(self, config: dict) -> None:
        self.greeting = config["greeting"]

    async def __call__(self, request=None) -> str:
        await asyncio.sleep(0.01)
        return f"v2 {self.greeting} {os.getpid()}"


@serve.deployment(name="Model", num_replicas=2, graceful_shutdown_wait_loop_s=0.5)
class ModelBroken:
    def __init__(self) -> None:
        raise RuntimeError("new weights are corrupt")

    def __call__(self, request=None) -> str:
        return "never"


v1 = ModelV1.bind()
