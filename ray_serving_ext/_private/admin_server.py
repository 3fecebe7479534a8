"""The controller's admin HTTP API: what Ray Serve answers on the dashboard port.

- `GET /api/serve/applications/` returns `ServeInstanceDetails` (JSON), as
  Ray Serve's REST API does (`?api_type=imperative|declarative` filters).
- `POST /api/v1/applications/{app}/deployments/{deployment}/scale` with a
  `ScaleDeploymentRequest` body is the external scaler's endpoint, with Ray
  Serve's statuses: 200 accepted, 400 bad body, 404 unknown app or
  deployment, 412 when the app does not enable external scaling or the
  deployment is being deleted.

It runs on the controller's own event loop, so a request reads the live state
without a Ray call. It binds `RAY_SERVE_EXT_ADMIN_HOST` (loopback by default)
and `RAY_SERVE_EXT_ADMIN_PORT`; port 0 serves nothing. A port that cannot be
bound is logged and the controller carries on without the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any, Awaitable, Callable, Dict, Optional

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ray_serving_ext._private.common import DeploymentID
from ray_serving_ext.exceptions import DeploymentIsBeingDeletedError, ExternalScalerDisabledError
from ray_serving_ext.schema import APIType, ScaleDeploymentRequest

logger = logging.getLogger("ray_serving_ext.controller")

GetDetails = Callable[[Optional[str]], Awaitable[Dict[str, Any]]]
Scale = Callable[[DeploymentID, int], Awaitable[None]]


def build_app(get_details: GetDetails, scale: Scale) -> Starlette:
    """The admin API's routes over the controller's own methods."""

    async def applications(request: Request) -> JSONResponse:
        api_type = request.query_params.get("api_type")
        if api_type is not None and api_type not in APIType.get_valid_user_values():
            return JSONResponse({"error": f"Invalid api_type {api_type!r}; expected one of "
                                          f"{APIType.get_valid_user_values()}."}, status_code=400)
        return JSONResponse(await get_details(api_type))

    async def scale_deployment(request: Request) -> JSONResponse:
        app_name, name = request.path_params["application_name"], request.path_params["deployment_name"]
        try:
            body = ScaleDeploymentRequest.model_validate(json.loads(await request.body() or b"null"))
        except Exception as exc:
            return JSONResponse({"error": f"Invalid request body: {exc}"}, status_code=400)
        try:
            await scale(DeploymentID(name, app_name), body.target_num_replicas)
        except DeploymentIsBeingDeletedError:
            return JSONResponse({"error": "Deployment is deleted"}, status_code=412)
        except ExternalScalerDisabledError as exc:
            return JSONResponse({"error": str(exc)}, status_code=412)
        except ValueError as exc:
            if "not found" in str(exc):
                return JSONResponse({"error": "Application or Deployment not found"}, status_code=404)
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"message": "Scaling request received. Deployment will get scaled asynchronously."})

    return Starlette(routes=[
        Route("/api/serve/applications/", applications, methods=["GET"]),
        Route("/api/serve/applications", applications, methods=["GET"]),
        Route("/api/v1/applications/{application_name}/deployments/{deployment_name}/scale", scale_deployment,
              methods=["POST"]),
    ])


class AdminServer:
    """Serves `build_app(...)` on one port, on the current event loop (see the module docstring)."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self._app = app
        self.host = host
        self.port = port
        self._server: Optional[uvicorn.Server] = None
        self._task: Optional[asyncio.Task] = None

    def start(self) -> bool:
        """Bind and start serving; False (logged) when the port is 0 or cannot be bound."""
        if not self.port:
            return False
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            logger.error("The admin API is not served: cannot bind %s:%d (%s).", self.host, self.port, exc)
            return False
        # Bound here, not by uvicorn: uvicorn exits the process when it cannot bind.
        config = uvicorn.Config(self._app, lifespan="off", access_log=False, log_level="warning", log_config=None,
                                loop="none")
        self._server = uvicorn.Server(config)
        self._task = asyncio.get_event_loop().create_task(self._server.serve(sockets=[sock]))
        logger.info("Admin API on http://%s:%d", self.host, self.port)
        return True

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 5)
        except Exception:  # stopping is best effort: the actor is going away
            pass
