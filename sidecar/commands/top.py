"""``custos top``: a live terminal view of a running sidecar (requests, latency, tokens, engine queue,
GPUs, alerts, audit, recent denials), for hosts without Grafana. docs/top.md.

Everything comes from the sidecar's own endpoints with the operator's token (``metrics:read``,
``alerts:read``, ``audit:read``); a pane the token may not read says so and why. ``--once`` prints
one frame as plain text (no colours, no escape codes) for scripts and tickets.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "top",
        help="live terminal view of a running sidecar (traffic, GPUs, alerts, audit, denials)",
        description="A full-screen live view of a running sidecar, read from its own endpoints. "
        "Keys: 1-5 (or o t g a d, Tab) switch panes, q quits. --once prints one frame as plain text.",
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"the sidecar's base URL (default {DEFAULT_URL})")
    p.add_argument("--token", help="Bearer token (default: --token-file, else $CUSTOS_TOKEN)")
    p.add_argument("--token-file", metavar="PATH", help="read the Bearer token from this file")
    p.add_argument("--interval", default="1", metavar="SECONDS", help="seconds between refreshes (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame as plain text and exit")
    p.set_defaults(func=run_top)


def _token(args: argparse.Namespace) -> str | None:
    from custos.errors import UsageError

    if args.token is not None and args.token_file is not None:
        raise UsageError("give --token or --token-file, not both")
    if args.token is not None:
        token = args.token.strip()
        if not token:
            raise UsageError("--token: the token is empty")
        return token.removeprefix("Bearer ").strip()
    if args.token_file is not None:
        try:
            token = Path(args.token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--token-file: cannot read {args.token_file}: {exc.strerror or exc}") from None
        if not token:
            raise UsageError(f"--token-file: {args.token_file} is empty")
        return token.removeprefix("Bearer ").strip()
    env = os.environ.get("CUSTOS_TOKEN", "").strip()
    return env.removeprefix("Bearer ").strip() or None


def _interval(text: str) -> float:
    from custos.errors import UsageError

    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--interval: {text!r} is not a number of seconds") from None
    if not 0.2 <= value <= 3600:
        raise UsageError(f"--interval: {value:g} is out of range (0.2 to 3600 seconds)")
    return value


def _first_poll(poller, url: str, has_token: bool) -> None:
    """The first read decides whether there is anything to show: an unreachable sidecar, a refused
    token or a server that is not a sidecar are bad input (exit 2), not an empty screen."""
    from custos.errors import UsageError

    from ..top.client import why_not

    reply = poller.poll()["metrics"]
    if reply.status is None:
        raise UsageError(f"cannot reach the sidecar at {url}: {reply.error}")
    if reply.status == 401:
        raise UsageError(f"{url}: {why_not('metrics', reply, has_token)}")
    if reply.status == 404:
        raise UsageError(f"{url} has no /metrics: is it a Custos sidecar?")
    if reply.status not in (403, 429) and not reply.ok:  # 403/429: the panes say why
        raise UsageError(f"{url}/metrics answered HTTP {reply.status}: {reply.message()}")


def run_top(args: argparse.Namespace) -> int:
    from custos.errors import UsageError

    try:
        import rich  # noqa: F401
    except ImportError:
        raise UsageError("custos top needs the 'rich' package (pip install rich)") from None
    from ..top.client import Client, check_url
    from ..top.state import Poller, TopState

    url = check_url(args.url)
    token = _token(args)
    interval = _interval(args.interval)
    state = TopState(has_token=token is not None)
    poller = Poller(Client(url, token, timeout_s=min(5.0, max(2.0, interval * 2))), state)
    if not args.once and not sys.stdout.isatty():
        raise UsageError("standard output is not a terminal: use --once for a plain-text frame")
    _first_poll(poller, url, token is not None)
    if args.once:
        return _once(poller, state, url, interval)
    return _live(poller, state, url, interval)


def _once(poller, state, url: str, interval: float) -> int:
    import io
    import shutil

    from rich.console import Console

    from ..top.view import plain_frame

    time.sleep(interval)  # a second scrape: rates need two
    poller.poll()
    width = shutil.get_terminal_size((140, 50)).columns
    buf = io.StringIO()
    console = Console(
        file=buf, width=max(100, width), force_terminal=False, color_system=None, highlight=False, emoji=False
    )
    with state.lock:
        console.print(plain_frame(state, url, interval, console.width))
    sys.stdout.write(buf.getvalue())
    sys.stdout.flush()
    return 0


def _live(poller, state, url: str, interval: float) -> int:
    from rich.console import Console
    from rich.live import Live

    from ..top.keys import KeyReader
    from ..top.view import layout, pane_for_key

    stop = threading.Event()
    fresh = threading.Event()

    def fetch() -> None:
        # Reads run here, so a slow or gone sidecar never holds up keys or redraws.
        while not stop.wait(interval):
            try:
                poller.poll()
            except Exception as exc:  # a bug must not leave a frozen screen without a word
                with state.lock:
                    state.unreachable = f"custos top failed to read: {type(exc).__name__}: {exc}"
            fresh.set()

    worker = threading.Thread(target=fetch, name="custos-top-poll", daemon=True)
    console = Console(highlight=False)
    pane = "overview"
    last_draw = 0.0
    last_size = console.size
    with KeyReader() as keys, Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
        worker.start()
        try:
            dirty = True
            while True:
                pressed = keys.read(0.1)
                for ch in pressed:
                    if ch in ("q", "Q"):
                        return 0
                    chosen = pane_for_key(ch, pane)
                    if chosen is not None and chosen != pane:
                        pane, dirty = chosen, True
                if fresh.is_set():
                    fresh.clear()
                    dirty = True
                now = time.monotonic()
                if console.size != last_size:
                    last_size, dirty = console.size, True
                if dirty or now - last_draw >= 1.0:  # the "updated Ns ago" clock ticks on
                    with state.lock:
                        frame = layout(state, url, pane, interval, console.width)
                    live.update(frame, refresh=True)
                    last_draw, dirty = now, False
        finally:
            stop.set()
