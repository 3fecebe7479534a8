"""ingress_share: a proxy's listening socket handed to another holder; holders counted."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from typing import List

from ray_serving_ext._private.ingress_share import ListenerShare, take_listeners


def test_a_holder_accepts_from_the_shared_socket_and_letting_go_is_seen() -> None:
    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        counts: List[int] = []
        share = ListenerShare([listener], counts.append)
        path = share.start()
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert mode & 0o077 == 0, oct(mode)  # only this user may take the sockets
            sockets, holder = await take_listeners(path)
            for _ in range(100):
                if counts:
                    break
                await asyncio.sleep(0.01)
            assert counts == [1] and share.holders == 1
            (taken,) = sockets
            assert taken.getsockname()[1] == port
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn, _ = await asyncio.get_running_loop().sock_accept(taken)
            client.sendall(b"ping")
            assert await asyncio.get_running_loop().sock_recv(conn, 4) == b"ping"
            for s in (conn, client, taken):
                s.close()
            holder.close()
            for _ in range(100):
                if counts[-1] == 0:
                    break
                await asyncio.sleep(0.01)
            assert counts == [1, 0] and share.holders == 0
        finally:
            share.close()
            listener.close()
        assert not os.path.exists(path)

    asyncio.run(main())
