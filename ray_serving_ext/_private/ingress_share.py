"""A proxy's listening sockets, shared with the ingress replicas of its node (direct ingress).

The proxy binds the HTTP port. An ingress replica on the same node connects to
the proxy's Unix socket (in a directory only this user can open) and is sent
the listening sockets themselves (SCM_RIGHTS): it then accepts the node's HTTP
connections and serves them in its own process, its own deployment's requests
without a hop to another process.

There is one accept queue, whoever accepts from it: a listener coming or going
loses no connection waiting in it. The proxy stops accepting while at least one
replica holds the sockets and starts again as soon as none does; a holder's
Unix connection closing says so, also when its process died.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
from typing import Callable, List, Optional, Set, Tuple

logger = logging.getLogger("ray_serving_ext.proxy")

_GREETING = b"L"  # the one byte that carries the descriptors
_MAX_SOCKETS = 8
_TAKE_TIMEOUT_S = 5.0


class ListenerShare:
    """The proxy's side: hands its listening sockets to whoever connects, counts the holders."""

    def __init__(self, sockets: List[socket.socket], on_holders: Callable[[int], None]) -> None:
        self._fds = [s.fileno() for s in sockets]
        self._on_holders = on_holders
        self._dir = ""
        self._server: Optional[socket.socket] = None
        self._task: Optional[asyncio.Task] = None
        self._holders: Set[asyncio.Task] = set()

    @property
    def path(self) -> str:
        return os.path.join(self._dir, "listeners.sock") if self._dir else ""

    @property
    def holders(self) -> int:
        return len(self._holders)

    def start(self) -> str:
        """Listen on a fresh Unix socket (mode 0600 in a 0700 directory); returns its path."""
        self._dir = tempfile.mkdtemp(prefix="serve_ingress_")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            server.bind(self.path)
        finally:
            os.umask(old_umask)
        server.listen(64)
        server.setblocking(False)
        self._server = server
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())
        return self.path

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._server is not None
        while True:
            conn, _ = await loop.sock_accept(self._server)
            try:
                conn.setblocking(True)
                socket.send_fds(conn, [_GREETING], self._fds)
                conn.setblocking(False)
            except OSError as exc:
                logger.warning("Could not hand the listening sockets to a replica: %s", exc)
                conn.close()
                continue
            task = loop.create_task(self._hold(conn))
            self._holders.add(task)
            self._changed()

    async def _hold(self, conn: socket.socket) -> None:
        """Wait until the holder lets go (closes, or its process ends)."""
        try:
            await until_closed(conn)
        finally:
            conn.close()
            self._holders.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._changed()

    def _changed(self) -> None:
        try:
            self._on_holders(len(self._holders))
        except Exception:
            logger.exception("Listener holder callback failed.")

    def close(self) -> None:
        """Stop handing out sockets; the holders keep theirs (the proxy's shutdown ends them)."""
        if self._task is not None:
            self._task.cancel()
        for task in list(self._holders):
            task.cancel()
        self._holders.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""


def _take(path: str) -> Tuple[List[socket.socket], socket.socket]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(_TAKE_TIMEOUT_S)
        conn.connect(path)
        data, fds, _flags, _addr = socket.recv_fds(conn, 16, _MAX_SOCKETS)
        if data != _GREETING or not fds:
            for fd in fds:
                os.close(fd)
            raise OSError(f"unexpected answer from {path}: {data!r}, {len(fds)} descriptors")
        conn.setblocking(False)
    except BaseException:
        conn.close()
        raise
    sockets = [socket.socket(fileno=fd) for fd in fds]
    for sock in sockets:
        sock.setblocking(False)
    return sockets, conn


async def take_listeners(path: str) -> Tuple[List[socket.socket], socket.socket]:
    """The listening sockets of the proxy at `path`, and the connection that holds them:
    while it is open the proxy leaves accepting to its holders; closing it gives it back."""
    return await asyncio.get_running_loop().run_in_executor(None, _take, path)


async def until_closed(conn: socket.socket) -> None:
    """Returns when the other end of a holder connection closed (the proxy, or the holder, is gone)."""
    loop = asyncio.get_running_loop()
    try:
        while await loop.sock_recv(conn, 64):
            pass
    except OSError:
        pass
