"""The policy in force, with hot reload.

A background task polls the file's (mtime, size, inode) once per ``reload_interval_s`` in a thread
(off the hot path), and SIGHUP forces a reload. A new file that does not validate is rejected: the
old policy stays in force and the errors are logged at ERROR level with file and line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from prometheus_client import Counter, Gauge

from .policy import Policy, PolicyError, load_policy_file
from .routes import RouteTable

log = logging.getLogger("custos.rbac")

RELOADS = Counter("custos_rbac_policy_reloads_total", "Policy reloads by result", ["result"])
LOADED_AT = Gauge("custos_rbac_policy_loaded_timestamp_seconds", "When the policy in force was loaded")


class PolicyStore:
    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = Path(path).expanduser()
        self.interval_s = interval_s
        self.policy: Policy = load_policy_file(self.path)  # a bad file at startup is fatal
        self.routes = RouteTable(self.policy.routes)
        self.generation = 1
        self._stamp = self._stat()
        self._task: asyncio.Task[None] | None = None
        self._sighup = False
        LOADED_AT.set(time.time())

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, why: str = "changed") -> bool:
        """Load the file again; True when the new policy is in force. Blocking: call in a thread."""
        try:
            policy = load_policy_file(self.path)
        except PolicyError as exc:
            RELOADS.labels("rejected").inc()
            log.error(
                "RBAC policy %s %s but is INVALID; the previous policy stays in force:\n  %s",
                self.path,
                why,
                "\n  ".join(exc.errors),
            )
            return False
        except Exception as exc:
            RELOADS.labels("rejected").inc()
            log.error(
                "RBAC policy %s could not be reloaded (%s); the previous policy stays in force",
                self.path,
                exc,
            )
            return False
        # One assignment each: requests in flight keep the object they already read.
        self.routes = RouteTable(policy.routes)
        self.policy = policy
        self.generation += 1
        RELOADS.labels("ok").inc()
        LOADED_AT.set(time.time())
        log.warning("RBAC policy %s %s: reloaded (%d roles)", self.path, why, len(policy.roles))
        return True

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._watch(), name="rbac-policy-watch")
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            log.info("SIGHUP reload unavailable here; the file watch still reloads the policy")

    def _on_sighup(self) -> None:
        self._sighup = True
        if self._task is not None and not self._task.done():
            # Wake the watcher at once rather than on its next tick.
            self._wake.set()

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                stamp = await asyncio.to_thread(self._stat)
                if self._sighup:
                    self._sighup = False
                    self._stamp = stamp
                    await asyncio.to_thread(self.reload, "reload requested by SIGHUP")
                elif stamp != self._stamp and stamp is not None:
                    self._stamp = stamp
                    await asyncio.to_thread(self.reload, "changed on disk")
            except Exception:
                log.exception("RBAC policy watch failed; retrying")

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
