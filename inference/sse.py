"""Server-sent event streams of generated output, and noticing a client that went away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .engine import Delta, Failure, RequestSink, Sequence

if TYPE_CHECKING:
    from .server import EngineServer

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was complete."""


async def wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """The result of ``work``; ClientGone (and ``work`` cancelled) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(wait_disconnect(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is shutting down: nobody waits for the work any more
        task.cancel()
        raise
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone
    return task.result()


class EventStream(Response):
    """An SSE answer made by ``_events``; aborts the sequences when the client leaves mid-stream."""

    media_type = "text/event-stream"

    def __init__(self, server: EngineServer, sequences: list[Sequence], sink: RequestSink) -> None:
        # No super().__init__: it would declare a Content-Length, and a stream has none.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.server = server
        self.sequences = sequences
        self.sink = sink

    def _events(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def _next(self) -> Delta | Failure:
        """The next output, or ``ClientGone`` as soon as the client disconnects (even while queued)."""
        getter = asyncio.ensure_future(self.sink.queue.get())
        await asyncio.wait({getter, self._gone}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        raise ClientGone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._gone = asyncio.ensure_future(wait_disconnect(receive))
        finished = False
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for event in self._events():
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            finished = True
        except (ClientGone, OSError):  # the client left (or its connection broke while we wrote)
            return
        except asyncio.CancelledError:
            # The server is shutting down and its grace period is over: end this stream quietly
            # (the client sees no final event, so it knows the answer is incomplete).
            return
        finally:
            self._gone.cancel()
            if not finished:
                self.server.engine.abort(self.sequences)
