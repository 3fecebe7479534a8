"""Binding the proxy's HTTP port: the sockets, and what to say when it cannot be done.

The proxy binds its listening sockets itself, before uvicorn starts, so that a
port already in use (the most common first-run accident: an old process, a
notebook, another server) is an error the proxy can report and retry, not a
`sys.exit` inside uvicorn that would end the proxy's event loop.
"""

from __future__ import annotations

import errno
import socket
from typing import List


def bind_sockets(host: str, port: int, backlog: int = 2048, reuse_port: bool = False) -> List[socket.socket]:
    """Listening sockets for every address `host` resolves to (as asyncio's create_server
    binds them), or OSError with nothing left open. With `reuse_port`, SO_REUSEPORT lets
    the node's other proxies bind the same port (a process without it still gets EADDRINUSE)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen = set()
    sockets: List[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def describe_bind_error(exc: OSError, host: str, port: int, node: str) -> str:
    """A one-line reason for `serve.status()` and the CLI, naming the port and the node."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} already in use on node {node} (host {host}); retrying until it is free"
    if exc.errno == errno.EACCES:
        return f"permission denied binding port {port} on node {node} (host {host}); retrying"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address {host} is not available on node {node} (port {port}); retrying"
    return f"cannot listen on {host}:{port} on node {node}: {exc}; retrying"
