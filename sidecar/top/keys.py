"""Keys read without blocking: the terminal in cbreak mode (keys arrive one by one, no echo, Ctrl-C
still interrupts), ``select`` with a timeout, and the terminal's settings restored on exit."""

from __future__ import annotations

import contextlib
import os
import select
import sys
from typing import Any, TextIO


class KeyReader:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdin
        self.fd: int | None = None
        self._saved: Any = None

    def __enter__(self) -> KeyReader:
        try:
            fd = self.stream.fileno()
        except (AttributeError, ValueError, OSError):
            return self
        if not os.isatty(fd):
            return self  # no keyboard (e.g. stdin redirected): refresh only, Ctrl-C still quits
        import termios
        import tty

        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self._saved is not None:
            import termios

            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        self.fd = None

    def read(self, timeout: float) -> str:
        """Keys pressed within ``timeout`` seconds ("" when none). Escape sequences (arrows) are
        returned whole and ignored by the caller."""
        if self.fd is None:
            if timeout > 0:
                select.select([], [], [], timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return ""
        try:
            data = os.read(self.fd, 64)
        except OSError:
            return ""
        if not data:  # the terminal went away
            return "q"
        return data.decode("utf-8", "replace")
