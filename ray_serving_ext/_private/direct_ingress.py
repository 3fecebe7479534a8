"""A replica's own HTTP ingress (`http_options.direct_ingress`).

An application's ingress replica on a node with a proxy takes the proxy's
listening sockets (ingress_share) and serves the node's HTTP connections in its
own process with the proxy's own stack: the same protocol, limits, API keys,
fast path, readiness probes, route table, timeouts, request ids, metrics and
access lines (the latter in a proxy log file of their own). A request is routed
as the proxy routes it, by power of two choices over the deployment's replicas
(so requests are spread per request, not per connection); when the choice is
this replica it is reached in-process (local_call: no socket, no pickling), and
other replicas and other applications over the data path, as from a proxy.
What a request skips is the hop through the proxy's process: one process
wake-up and two socket crossings each way, and with one replica all of them.

While an ingress replica holds the sockets the proxy does not accept; when the
replica shuts down it gives them back before it stops accepting, so a
connection waiting to be accepted is never dropped. If the proxy restarts, the
replica goes on serving with the sockets it has and takes the new proxy's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Dict, List, Optional

from ray_serving_ext._private import transport
from ray_serving_ext._private.cluster import get_controller
from ray_serving_ext._private.common import DeploymentID
from ray_serving_ext._private.constants import PROXY_NAME_PREFIX, SERVE_NAMESPACE
from ray_serving_ext._private.ingress_share import take_listeners, until_closed
from ray_serving_ext._private.local_call import LocalConnection
from ray_serving_ext._private.long_poll import LongPollClient

logger = logging.getLogger("ray_serving_ext.replica")

# How often a replica asks again for a proxy that is not there (yet): it starts
# quickly after the proxy, and a node without one costs a call every 10 s.
_RETRY_INITIAL_S = 0.2
_RETRY_MAX_S = 10.0


class ReplicaIngress:
    """One replica's HTTP server on its node's proxy port, while it is an application's ingress."""

    def __init__(self, replica_id: str, deployment_id: DeploymentID, node_id: str,
                 handler: transport.Handler, access_log: bool, log_encoding: str = "TEXT",
                 logs_dir: Optional[str] = None) -> None:
        self._replica_id = replica_id
        self._deployment_id = deployment_id
        self._node_id = node_id
        self._handler = handler
        self._access_log = access_log
        self._log_encoding = log_encoding
        self._logs_dir = logs_dir
        self._component_id = f"{deployment_id.app_name}_{deployment_id.name}_{replica_id}"
        self._routes: Optional[Dict[str, Dict[str, str]]] = None
        self._changed: Optional[asyncio.Event] = None
        self._long_poll: Optional[LongPollClient] = None
        self._task: Optional[asyncio.Task] = None
        self._app: Any = None  # proxy.ProxyASGIApp, once serving
        self._server: Any = None
        self._serve_task: Optional[asyncio.Task] = None
        self._holder: Optional[socket.socket] = None
        self._listeners: List[Any] = []
        self._proxy_pid = 0

    @property
    def serving(self) -> bool:
        return bool(self._listeners)

    def start(self) -> None:
        """Follow the route table and serve while this replica is its application's ingress."""
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._long_poll = LongPollClient(get_controller, {"routes": self._on_routes}, loop)
        self._task = loop.create_task(self._run())

    def _on_routes(self, routes: Dict[str, Dict[str, str]]) -> None:
        self._routes = routes
        if self._app is not None:
            self._app.update_routes(routes)
        assert self._changed is not None
        self._changed.set()

    def _is_ingress(self) -> bool:
        name, app = self._deployment_id.name, self._deployment_id.app_name
        return any(r["app_name"] == app and r["deployment"] == name for r in (self._routes or {}).values())

    async def _run(self) -> None:
        assert self._changed is not None
        delay = _RETRY_INITIAL_S
        while True:
            if not self._is_ingress():
                if self.serving:
                    await self._release()
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                acquired = await self._acquire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Direct ingress: could not take the proxy's sockets (%s); retrying.", exc)
                acquired = False
            if not acquired:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            delay = _RETRY_INITIAL_S
            await self._watch()

    async def _acquire(self) -> bool:
        """Take the node's proxy's sockets (in place of those of a proxy that is gone)."""
        import ray

        try:  # a GCS lookup that blocks: off the serving loop
            proxy = await asyncio.get_running_loop().run_in_executor(
                None, lambda: ray.get_actor(PROXY_NAME_PREFIX + self._node_id, namespace=SERVE_NAMESPACE))
        except ValueError:
            return False  # no proxy on this node (yet)
        info = await proxy.direct_ingress_info.remote()
        if info is None:  # the proxy is draining (or not sharing): its node takes no new connections
            if self.serving:
                await self._release()
            return False
        sockets, holder = await take_listeners(info["path"])
        if self._server is None:
            await self._start_server(info)
        old, self._listeners = self._listeners, []
        from ray_serving_ext._private.proxy import start_listening

        for sock in sockets:
            self._listeners.append(await start_listening(self._server, sock))
        self._stop_listeners(old)
        if self._holder is not None:
            self._holder.close()
        self._holder, self._proxy_pid = holder, info["pid"]
        logger.info("Direct ingress: replica %s accepts the node's HTTP connections (proxy pid %d).",
                    self._replica_id, self._proxy_pid)
        return True

    async def _watch(self) -> None:
        """Until the proxy is gone or this replica is no longer the ingress."""
        assert self._holder is not None and self._changed is not None
        gone = asyncio.ensure_future(until_closed(self._holder))
        try:
            while not gone.done() and self._is_ingress():
                self._changed.clear()
                changed = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({gone, changed}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
        finally:
            gone.cancel()
        if gone.done():
            logger.warning("Direct ingress: the proxy (pid %d) is gone; serving on until a new one is up.",
                           self._proxy_pid)

    async def _start_server(self, info: Dict[str, Any]) -> None:
        from ray_serving_ext._private.logging_utils import access_logger, route_uvicorn_logs
        from ray_serving_ext._private.proxy import ProxyASGIApp, make_server
        from ray_serving_ext._private.proxy_auth import ApiKeys

        http_options = info["http_options"]
        app = ProxyASGIApp(http_options.request_timeout_s, self._node_id,
                           ApiKeys(http_options.api_keys_file, http_options.api_keys_env), info["is_head"],
                           router_factory=self._make_router)
        app.access_log = self._access_log
        # Its access lines go to a proxy log file of their own, as the proxy's do; the
        # replica's log keeps one line per request, its own.
        app.access_logger = access_logger("proxy", f"direct_{self._component_id}", encoding=self._log_encoding,
                                          logs_dir=self._logs_dir)
        app.metrics_endpoint = http_options.metrics_endpoint
        if self._routes is not None:
            app.update_routes(self._routes)
        route_uvicorn_logs()
        server = make_server(app, http_options, http_options.host or "127.0.0.1")
        self._app, self._server = app, server
        self._serve_task = asyncio.get_running_loop().create_task(server.serve(sockets=[]))
        for _ in range(500):  # startup takes a loop turn or two; bounded
            if server.started or self._serve_task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("the replica's HTTP server did not start")

    def _make_router(self, deployment_id: DeploymentID) -> Any:
        from ray_serving_ext._private.router import Router

        loop = asyncio.get_running_loop()
        if deployment_id != self._deployment_id:
            return Router(deployment_id, loop, get_controller)
        async def connect() -> LocalConnection:
            return LocalConnection(loop, self._replica_id, self._handler)

        return Router(deployment_id, loop, get_controller, local=(self._replica_id, connect))

    def _stop_listeners(self, listeners: List[Any]) -> None:
        for listener in listeners:
            listener.close()
            if self._server is not None and listener in self._server.servers:
                self._server.servers.remove(listener)

    async def _release(self) -> None:
        """Give the sockets back to the proxy (it accepts again first), then stop accepting."""
        if self._holder is not None:
            self._holder.close()
            self._holder = None
        self._stop_listeners(self._listeners)
        self._listeners = []
        logger.info("Direct ingress: replica %s no longer accepts the node's connections.", self._replica_id)

    async def stop(self, timeout_s: float) -> None:
        """Stop accepting, let requests in flight on its connections finish (at most
        `timeout_s`), close the connections; the proxy accepts again at once."""
        if self._long_poll is not None:
            self._long_poll.stop()
        if self._task is not None:
            self._task.cancel()
        if self.serving or self._holder is not None:
            await self._release()
        if self._server is not None and self._serve_task is not None:
            self._server.config.timeout_graceful_shutdown = timeout_s
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._serve_task), timeout_s + 5)
            except Exception:
                logger.warning("Direct ingress: the HTTP server did not stop within %.1fs.", timeout_s + 5)
        if self._app is not None:
            for router in self._app.routers.values():
                router.stop()
