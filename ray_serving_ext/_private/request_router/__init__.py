"""Request routers: the `RequestRouter` base class, its mixins and Serve's default router."""

from ray_serving_ext._private.request_router.pow_2_router import (
    PowerOfTwoChoicesRequestRouter,
)

__all__ = ["PowerOfTwoChoicesRequestRouter"]
