"""What one client may ask of a proxy: uvicorn's httptools protocol with limits.

`http_options` bounds (see `config_types.ProxyLimitOptions`): the request line
plus headers (431), the body, declared or sent (413), how long a request's
headers may take to arrive (408, slowloris), how long a body may stall (408),
and how many connections a proxy holds (503 and close). Each refusal is a
small plain-text response with `connection: close`, written before anything
more of the request is read, and the connection then closes: what a client
can make a proxy hold is bounded by these limits.

Timers are armed only when a read ends inside a request's head or body, so a
request that arrives in one read (nearly all) costs no timer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

logger = logging.getLogger("ray_serving_ext.proxy")


class Limits:
    """The limits one proxy enforces (None: no limit)."""

    __slots__ = ("max_body", "max_header", "header_timeout_s", "body_timeout_s", "max_connections")

    def __init__(self, http_options: Any) -> None:
        self.max_body: Optional[int] = http_options.max_request_body_bytes
        self.max_header: Optional[int] = http_options.max_header_bytes
        self.header_timeout_s: Optional[float] = http_options.header_timeout_s
        self.body_timeout_s: Optional[float] = http_options.body_timeout_s
        self.max_connections: Optional[int] = http_options.max_connections


_IDLE, _HEAD, _BODY = 0, 1, 2  # where the parser is in the current request


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing what exceeds `limits` (set by a subclass)."""

    limits: Limits = None  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _IDLE
        self._head_bytes = 0
        self._body_bytes = 0
        self._refused = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._last_body = 0.0

    # ---- connections -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.limits.max_connections
        if limit is not None and len(self.connections) > limit:
            logger.warning("Refusing a connection: this proxy already holds %d (max_connections).", limit)
            self._refuse(503, "Too many connections to this proxy; try again later.")
            return
        if self.limits.header_timeout_s:  # a connection that never sends a request is closed too
            self._timer = self.loop.call_later(self.limits.header_timeout_s, self._silent_overdue)

    def _silent_overdue(self) -> None:
        self._timer = None
        if self._phase == _IDLE and self.cycle is None and not self._refused:
            self._refused = True
            self.transport.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        try:
            super().data_received(data)
        except Exception as exc:  # uvicorn trips on some malformed input (e.g. a bad upgrade)
            logger.debug("Closing a connection whose request broke the parser: %r", exc)
            self._refuse(400, "Invalid HTTP request.")
            return
        if self._timer is None and not self._refused:  # the read ended inside a request
            if self._phase == _HEAD and self.limits.header_timeout_s:
                self._timer = self.loop.call_later(self.limits.header_timeout_s, self._head_overdue)
            elif self._phase == _BODY and self.limits.body_timeout_s:
                self._timer = self.loop.call_later(self.limits.body_timeout_s, self._body_stalled)

    # ---- the parser's callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._cancel_timer()  # the first-request timer: a request began
        self._phase, self._head_bytes, self._body_bytes = _HEAD, 0, 0

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        super().on_url(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        super().on_header(name, value)
        self._count_head(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._phase = _BODY
        self._cancel_timer()
        limit = self.limits.max_body
        if limit is not None:
            for name, value in self.headers:
                if name == b"content-length" and value.isdigit() and int(value) > limit:
                    self._refuse(413, f"The request body is larger than {limit} bytes.")
                    return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._account_body(body):
            super().on_body(body)

    def _account_body(self, body: bytes) -> bool:
        """Count a piece of body against the limit; False if the request was refused (413)."""
        if self._refused:
            return False
        self._body_bytes += len(body)
        self._last_body = self.loop.time()
        limit = self.limits.max_body
        if limit is not None and self._body_bytes > limit:  # a chunked body, or one longer than it said
            self._refuse(413, f"The request body is larger than {limit} bytes.")
            return False
        return True

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._phase = _IDLE
        self._cancel_timer()
        super().on_message_complete()

    # ---- refusing ----------------------------------------------------------------------
    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        limit = self.limits.max_header
        if limit is not None and self._head_bytes > limit:
            self._refuse(431, f"The request line and headers are larger than {limit} bytes.")

    def _head_overdue(self) -> None:
        self._timer = None
        if self._phase == _HEAD and not self._refused:
            self._refuse(408, f"The request headers did not arrive within {self.limits.header_timeout_s}s.")

    def _body_stalled(self) -> None:
        self._timer = None
        if self._phase != _BODY or self._refused:
            return
        timeout = self.limits.body_timeout_s or 0
        if self.flow.read_paused:  # the proxy stopped reading (flow control): not the client's stall
            self._timer = self.loop.call_later(timeout, self._body_stalled)
            return
        wait = timeout - (self.loop.time() - self._last_body)
        if wait > 0 and self._last_body:  # it moved since the timer was armed: wait the rest
            self._timer = self.loop.call_later(wait, self._body_stalled)
            return
        self._refuse(408, f"The request body stalled for {self.limits.body_timeout_s}s.")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, text: str) -> None:
        """Answer `status` and close, unless an answer is already under way (then just close);
        whatever the request's app would still send is dropped."""
        self._refused = True
        self._cancel_timer()
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's sends are dropped; its receive() says disconnect
            cycle.message_event.set()
        if self.transport is None or self.transport.is_closing():
            return
        if not started:
            body = text.encode()
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\n", b"connection: close\r\n\r\n", body,
            ]))
        self.transport.close()
