"""The controller's admin HTTP API: what Ray Serve answers on the dashboard port.

- `GET /api/serve/applications/` returns `ServeInstanceDetails` (JSON), as
  Ray Serve's REST API does (`?api_type=imperative|declarative` filters).
- `POST /api/v1/applications/{app}/deployments/{deployment}/scale` with a
  `ScaleDeploymentRequest` body is the external scaler's endpoint, with Ray
  Serve's statuses: 200 accepted, 400 bad body, 404 unknown app or
  deployment, 412 when the app does not enable external scaling or the
  deployment is being deleted.

- `PUT /api/serve/applications/` with a `ServeDeploySchema` body applies it
  declaratively, as `serve-ext deploy` does (apps it does not name are
  deleted): 200 once the body is valid (the build and deploy follow in the
  background, `config_apply.py`), 400 with each field's dotted path when not.
- `DELETE /api/serve/applications/` shuts Serve down (Ray Serve's meaning):
  200, then every app is deleted and the controller exits.
- `GET /api/ray/version` answers the version check Ray's `serve` CLI and the
  KubeRay operator make first.

It starts with the instance and runs on the controller's own event loop, so a
request reads the live state without a Ray call. It binds
`RAY_SERVE_EXT_ADMIN_HOST` (default 127.0.0.1) and `RAY_SERVE_EXT_ADMIN_PORT`
(default 8266); port 0 serves nothing. A port that cannot be bound (another
instance on the machine may hold the default) is logged and the controller
carries on without the API.

API keys, as on the proxy: `RAY_SERVE_EXT_ADMIN_API_KEYS_FILE` (one key per
line, re-read within a second of changing) and `RAY_SERVE_EXT_ADMIN_API_KEYS_ENV`
(the name of a variable holding comma-separated keys). With either set, every
path needs `Authorization: Bearer <key>` (401 otherwise), and with none
loadable everything is refused. The key is read from `Authorization`, else from
`X-Ray-Authorization`, as Ray's dashboard reads its token: Ray's `serve` CLI sends
the first and the KubeRay operator the second when Ray's token auth is on, so
`RAY_SERVE_EXT_ADMIN_API_KEYS_ENV=RAY_AUTH_TOKEN` makes the cluster's token the key.
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
from pydantic import ValidationError
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ray_serving_ext._private.common import DeploymentID, new_request_id
from ray_serving_ext._private.proxy_auth import ApiKeys, authorization_header, unauthorized_messages
from ray_serving_ext.config import format_validation_error
from ray_serving_ext.config_file import ServeDeploySchema
from ray_serving_ext.exceptions import DeploymentIsBeingDeletedError, ExternalScalerDisabledError
from ray_serving_ext.schema import APIType, ScaleDeploymentRequest

logger = logging.getLogger("ray_serving_ext.controller")

API_VERSION = "0"  # the dashboard API's own version string, as Ray's job and serve SDKs read it
GetDetails = Callable[[Optional[str]], Awaitable[Dict[str, Any]]]
Scale = Callable[[DeploymentID, int], Awaitable[None]]


def build_app(get_details: GetDetails, scale: Scale, apply_config: Optional[Callable[[Any], None]] = None,
              shutdown: Optional[Callable[[], None]] = None) -> Starlette:
    """The admin API's routes over the controller's own methods."""

    async def applications(request: Request) -> Response:
        if request.method == "PUT":
            return await put_applications(request)
        if request.method == "DELETE":
            if shutdown is None:
                return JSONResponse({"error": "Not supported here."}, status_code=405)
            shutdown()
            return Response(status_code=200)
        api_type = request.query_params.get("api_type")
        if api_type is not None and api_type not in APIType.get_valid_user_values():
            return JSONResponse({"error": f"Invalid api_type {api_type!r}; expected one of "
                                          f"{APIType.get_valid_user_values()}."}, status_code=400)
        return JSONResponse(await get_details(api_type))

    async def put_applications(request: Request) -> Response:
        if apply_config is None:
            return JSONResponse({"error": "Not supported here."}, status_code=405)
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            return PlainTextResponse(f"The request body is not JSON: {exc}", status_code=400)
        try:
            schema = ServeDeploySchema.model_validate(body)
        except ValidationError as exc:
            return PlainTextResponse(f"Invalid Serve config:\n{format_validation_error(exc)}", status_code=400)
        apply_config(schema)
        return Response(status_code=200)

    async def version(request: Request) -> JSONResponse:
        import ray

        return JSONResponse({"version": API_VERSION, "ray_version": ray.__version__,
                             "ray_commit": getattr(ray, "__commit__", "")})

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
        Route("/api/serve/applications/", applications, methods=["GET", "PUT", "DELETE"]),
        Route("/api/serve/applications", applications, methods=["GET", "PUT", "DELETE"]),
        Route("/api/ray/version", version, methods=["GET"]),
        Route("/api/v1/applications/{application_name}/deployments/{deployment_name}/scale", scale_deployment,
              methods=["POST"]),
    ])


class RequireApiKey:
    """ASGI middleware: every HTTP request needs one of `keys` as a Bearer token, else a 401."""

    def __init__(self, app: Any, keys: ApiKeys) -> None:
        self._app = app
        self._keys = keys

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            # Authorization, else X-Ray-Authorization: Ray's dashboard reads the same two, in
            # that order, and the KubeRay operator sends the second.
            reason = self._keys.check(authorization_header(scope.get("headers", []), b"x-ray-authorization"))
            if reason is not None:
                for message in unauthorized_messages(reason, new_request_id()):
                    await send(message)
                return
        await self._app(scope, receive, send)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class AdminServer:
    """Serves `build_app(...)` on one port, on the current event loop (see the module docstring)."""

    def __init__(self, app: Starlette, host: str, port: int, api_keys: Optional[ApiKeys] = None) -> None:
        self._app: Any = app
        self.host = host
        self.port = port
        self._keys = api_keys if api_keys is not None and api_keys.enabled else None
        if self._keys is not None:
            self._app = RequireApiKey(app, self._keys)
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
            sock.listen(128)  # now, so that a second instance's bind of the same port fails here too
        except OSError as exc:
            sock.close()
            logger.warning("The admin API (Serve's REST API) is not served: cannot bind %s:%d (%s). Another "
                           "Serve instance on this machine may hold it: set RAY_SERVE_EXT_ADMIN_PORT in the "
                           "controller's environment (serve-ext start --admin-port) to another port, or 0.",
                           self.host, self.port, exc)
            return False
        # Bound here, not by uvicorn: uvicorn exits the process when it cannot bind.
        config = uvicorn.Config(self._app, lifespan="off", access_log=False, log_level="warning", log_config=None,
                                loop="none")
        self._server = uvicorn.Server(config)
        self._task = asyncio.get_event_loop().create_task(self._server.serve(sockets=[sock]))
        logger.info("Admin API on http://%s:%d%s", self.host, self.port, " (API keys required)" if self._keys else "")
        if self._keys is None and not _is_loopback(self.host):
            logger.warning("The admin API listens on %s without API keys: anyone who reaches port %d can deploy "
                           "code. Set RAY_SERVE_EXT_ADMIN_API_KEYS_FILE or RAY_SERVE_EXT_ADMIN_API_KEYS_ENV.",
                           self.host, self.port)
        return True

    @property
    def address(self) -> Optional[str]:
        """`http://host:port` while serving, else None."""
        if self._server is None:
            return None
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 5)
        except Exception:  # stopping is best effort: the actor is going away
            pass
