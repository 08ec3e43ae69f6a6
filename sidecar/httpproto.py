"""uvicorn's httptools protocol with the limits a server facing strangers needs.

uvicorn parses request heads without bound (a 64 MiB header parses, 20,000 headers are accepted)
and waits forever for a head that never ends (slowloris). This protocol adds, per connection:

- ``max_header_bytes``: the request line and headers together; over it -> 431 and the connection closes.
- ``max_headers``: the number of header fields; over it -> 431.
- ``header_timeout_s``: from the first byte of a request (or the connection's start) to the end of its
  head; past it -> 408 and the connection closes.

The body is bounded by the app (``server.max_body_bytes``, ``server.body_timeout_s``). The limits are
process-wide (``configure``), set from the server config when the app is built, so every worker
process gets them however uvicorn starts it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0


_limits = HeadLimits()


def configure(limits: HeadLimits) -> None:
    global _limits
    _limits = limits


class _Refuse(Exception):
    def __init__(self, status: int, reason: bytes, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.code = status, reason, message, code


def _too_large(message: str) -> _Refuse:
    return _Refuse(431, b"Request Header Fields Too Large", message, "request_header_fields_too_large")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus head size, head field count and head timeout limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = _limits
        self._in_head = True  # a new connection waits for its first request head
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False  # a byte of the current request head has arrived

    # -- connection -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and self.transport is not None and not self.transport.is_closing():
            if self._head_started:
                # A head was started and not finished (slowloris): tell the client why.
                self._refuse(
                    _Refuse(
                        408,
                        b"Request Timeout",
                        f"The request head was not complete within {self._limits.header_timeout_s:g} s "
                        "(server.header_timeout_s).",
                        "request_timeout",
                    )
                )
            else:
                self.transport.close()  # nothing was sent at all: an idle connection, not a request

    # -- parsing ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        self._head_started = True
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refuse):
                self._refuse(cause)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head:
            # The head is still incomplete after this chunk: all of it counts against the limit
            # (httptools buffers an unfinished header value, so callbacks alone cannot see it).
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse(_too_large(self._head_message()))

    def _head_message(self) -> str:
        return (
            f"The request line and headers are larger than {self._limits.max_header_bytes} bytes "
            "(server.max_header_bytes)."
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self._limits.max_header_bytes:
            raise _too_large(self._head_message())
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            raise _too_large(
                f"The request has more than {self._limits.max_headers} header fields (server.max_headers)."
            )
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._limits.max_header_bytes:
            raise _too_large(self._head_message())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_started = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this keep-alive connection has its own head deadline; uvicorn's
        # keep-alive timeout covers the idle time before its first byte.
        self._in_head = True

    def _refuse(self, refusal: _Refuse) -> None:
        self.logger.info("refusing a request head from %s: %s", self.client, refusal.message)
        body = orjson.dumps(
            {
                "error": {
                    "message": refusal.message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": refusal.code,
                }
            }
        )
        head = [f"HTTP/1.1 {refusal.status} ".encode() + refusal.reason + b"\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        # The app audits it like any request (one record each, whoever sent it).
        hook = getattr(self.app, "refused_head", None)
        if hook is not None:
            peer = self.client[0] if self.client else ""
            url = self.url if isinstance(getattr(self, "url", None), bytes) else b""
            task = self.loop.create_task(hook(peer, url, refusal.status, refusal.code, refusal.message))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
