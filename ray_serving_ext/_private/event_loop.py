"""One background event loop per process, on which handle routers run.

Handles are used from synchronous drivers, from replicas' event loops and from
threads; running every router on one dedicated loop keeps their state
single-threaded whatever the caller is.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Optional

_lock = threading.Lock()
_loop: Optional[asyncio.AbstractEventLoop] = None
_pid: Optional[int] = None


def _run(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    loop.run_forever()


def get_router_loop() -> asyncio.AbstractEventLoop:
    """The process's router loop, started on first use (and again after fork)."""
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            try:
                import uvloop

                loop = uvloop.new_event_loop()
            except ImportError:  # pragma: no cover - uvloop is a dependency
                loop = asyncio.new_event_loop()
            started = threading.Event()
            thread = threading.Thread(target=_run, args=(loop, started), name="serve-router-loop", daemon=True)
            thread.start()
            started.wait(10)
            _loop, _pid = loop, os.getpid()
        return _loop


def in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when the caller runs on `loop`'s thread."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
