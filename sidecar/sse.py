"""Incremental Server-Sent Events framing, shared by every filter that reads streams."""

from __future__ import annotations


class SSEBuffer:
    """Splits a byte stream into complete events (each ending with a blank line).

    Incomplete trailing bytes stay buffered until the next ``feed``; ``rest`` returns them at the end.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buf + chunk if self._buf else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        self._buf = events.pop()
        return [event + b"\n\n" for event in events]

    def rest(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` payload of one event, or None when it has none."""
    parts = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in event.split(b"\n")]
    data = [p for p in parts if p is not None]
    if not data:
        return None
    return b"\n".join(data)
