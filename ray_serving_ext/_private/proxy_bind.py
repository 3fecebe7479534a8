"""Binding the proxy's HTTP port: the sockets, and what to say when it cannot be done.

The proxy binds its listening sockets itself, before uvicorn starts, so that a
port already in use (the most common first-run accident: an old process, a
notebook, another server) is an error the proxy can report and retry, not a
`sys.exit` inside uvicorn that would end the proxy's event loop.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Dict, List, Optional, Set


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
        owner = foreign_listener(port) if reuse_port else None
        if owner is not None:
            raise OSError(errno.EADDRINUSE, f"port {port} is also bound (SO_REUSEPORT) by process {owner}, "
                                            "which is not a proxy of this node")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listening_inodes(port: int) -> Set[int]:
    """Socket inodes listening on TCP `port` in this network namespace (Linux's /proc/net)."""
    inodes: Set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(int(fields[9]))
        except (OSError, ValueError):
            continue
    return inodes


def _socket_owners(inodes: Set[int]) -> Dict[int, int]:
    """inode -> pid of a process holding it (one scan of /proc/*/fd)."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    owners: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                inode = wanted.get(os.readlink(f"/proc/{entry}/fd/{fd}"))
                if inode is not None:
                    owners.setdefault(inode, int(entry))
        except OSError:  # gone, or not ours to read
            continue
        if len(owners) == len(wanted):
            break
    return owners


def _is_sibling_proxy(pid: int) -> bool:
    """A proxy of this node: a worker of the same raylet (same parent) running ProxyActor,
    or a replica holding an earlier proxy's sockets (direct ingress)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError, IndexError):
        return False
    return ppid == os.getppid() and (b"ProxyActor" in cmdline or b"ReplicaActor" in cmdline)


def foreign_listener(port: int) -> Optional[int]:
    """With SO_REUSEPORT any process of the same user may share the port: the pid of one
    that is not a proxy of this node (another Serve instance, a stale process), -1 if a
    listener's owner cannot be found, None when every listener is a sibling proxy."""
    if not os.path.exists("/proc/net/tcp"):
        return None  # not Linux: nothing to check with
    inodes = _listening_inodes(port)
    owners = _socket_owners(inodes)
    for inode in inodes:
        pid = owners.get(inode)
        if pid is None:
            return -1
        if pid != os.getpid() and not _is_sibling_proxy(pid):
            return pid
    return None


def describe_bind_error(exc: OSError, host: str, port: int, node: str) -> str:
    """A one-line reason for `serve.status()` and the CLI, naming the port and the node."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} already in use on node {node} (host {host}); retrying until it is free"
    if exc.errno == errno.EACCES:
        return f"permission denied binding port {port} on node {node} (host {host}); retrying"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address {host} is not available on node {node} (port {port}); retrying"
    return f"cannot listen on {host}:{port} on node {node}: {exc}; retrying"
