"""Authenticate stage: a valid Bearer JWT or 401. Sets ``ctx.identity`` and tells the upstream who
is calling (``X-Custos-Subject``, ``X-Custos-Roles``; the app core strips client-sent ones first).

On failure the reason label goes into ``ctx.auth_failure`` for metrics; the
token itself is never logged, echoed or kept (the cache is keyed by its hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from urllib.parse import quote

from custos.errors import ConfigError, unauthorized

from ..auth import devkey
from ..auth.config import AuthConfig
from ..auth.keys import JwksSource, KeyError_, static_keys
from ..auth.verifier import AuthFailure, TokenVerifier
from ..context import Identity, RequestContext
from ..stage import Stage, StageEnv

log = logging.getLogger("custos.auth")

_SAFE = "@._-+:/=!$&'()*,;~"  # header values stay readable for ordinary subjects; anything else is %-encoded


def _quote(value: str, safe: str) -> bytes:
    # surrogatepass: total for any str (a lone surrogate is %-encoded, not a crash) and still
    # one-to-one, so two different subjects never share a header value.
    return quote(value, safe=safe, encoding="utf-8", errors="surrogatepass").encode("ascii")


def identity_headers(identity: Identity) -> list[tuple[bytes, bytes]]:
    """The headers that tell the upstream who is calling. Total: never raises, whatever the strings
    hold (the verifier refuses control characters and lone surrogates anyway)."""
    role_safe = _SAFE.replace(",", "")
    return [
        (b"x-custos-subject", _quote(identity.subject, _SAFE)),
        (b"x-custos-roles", b",".join(_quote(r, role_safe) for r in identity.roles)),
    ]


class AuthenticateStage(Stage):
    name = "authenticate"

    def __init__(self, cfg: AuthConfig, verifier: TokenVerifier, state_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.verifier = verifier
        self.state_dir = state_dir
        self._tasks: list[asyncio.Task[None]] = []
        self._headers: dict[tuple[str, tuple[str, ...]], list[tuple[bytes, bytes]]] = {}

    async def startup(self, app: object) -> None:
        if self.cfg.dev_key and self.state_dir is not None:
            self._tasks.append(asyncio.create_task(self._dev_key_loop(), name="dev-key-watch"))
        sources = self.verifier.jwks
        if not sources:
            return
        # First fetch before serving; an IdP that is down now is retried by the periodic refresh.
        await asyncio.gather(*(s.refresh(force=True) for s in sources))
        self.verifier.rebuild_index()
        for src in sources:
            self._tasks.append(asyncio.create_task(self._refresh_loop(src), name=f"jwks-refresh {src.url}"))

    async def _refresh_loop(self, src: JwksSource) -> None:
        while True:
            await asyncio.sleep(src.cfg.refresh_interval_s)
            try:
                if await src.refresh(force=True):
                    self.verifier.rebuild_index()
            except Exception:
                log.exception("JWKS refresh of %s failed", src.url)

    async def _dev_key_loop(self) -> None:
        """Follow dev-key rotations (by `custos keys rotate dev-jwt`, another worker, or the schedule
        here): new tokens verify within ``dev_key_check_interval_s``, a retired key's tokens until its
        overlap window closes."""
        cfg, state_dir = self.cfg, self.state_dir
        assert state_dir is not None
        stamp = devkey.keys_stamp(state_dir, cfg.dev_key_algorithm)
        closes = _next_close(state_dir, cfg.dev_key_algorithm)
        while True:
            await asyncio.sleep(cfg.dev_key_check_interval_s)
            try:
                every = cfg.dev_key_rotate_every_s
                if every is not None:
                    age = devkey.key_age_s(state_dir, cfg.dev_key_algorithm)
                    if age is not None and age >= every:
                        rotated = await asyncio.to_thread(
                            devkey.rotate,
                            state_dir,
                            cfg.dev_key_algorithm,
                            overlap_s=cfg.dev_key_overlap_s,
                            older_than_s=every,
                        )
                        if rotated is not None:
                            log.info("dev key rotated on schedule: %s -> %s", *rotated)
                now_stamp = devkey.keys_stamp(state_dir, cfg.dev_key_algorithm)
                if now_stamp == stamp and (closes is None or time.time() < closes):
                    continue
                keys = await asyncio.to_thread(static_keys, cfg, state_dir)
                self.verifier.static = keys
                self.verifier.rebuild_index()
                stamp, closes = now_stamp, _next_close(state_dir, cfg.dev_key_algorithm)
                log.info("dev keys reloaded: trusting %s", ", ".join(k.kid or "?" for k in keys))
            except Exception:
                log.exception("reloading the dev keys failed; the keys in force stay")

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for src in self.verifier.jwks:
            await src.close()

    async def on_request(self, ctx: RequestContext) -> None:
        raw = None
        kept = []
        for name, value in ctx.headers:
            if name == b"authorization":
                raw = value
            else:
                kept.append((name, value))
        # The caller's credential is for us, not for the model server.
        ctx.headers = kept
        if raw is None:
            self._fail(ctx, AuthFailure("missing_token", "Missing Bearer token in the Authorization header."))
        scheme, _, token = raw.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            self._fail(ctx, AuthFailure("malformed", "The Authorization header must be 'Bearer <token>'."))
        try:
            identity = await self.verifier.verify(token.decode("latin-1"))
        except AuthFailure as failure:
            self._fail(ctx, failure)
        ctx.identity = identity
        # Built once per caller: quoting the subject and roles costs more than the cache hit itself.
        key = (identity.subject, identity.roles)
        headers = self._headers.get(key)
        if headers is None:
            if len(self._headers) >= 10000:
                self._headers.clear()
            headers = self._headers[key] = identity_headers(identity)
        ctx.upstream_headers.extend(headers)

    @staticmethod
    def _fail(ctx: RequestContext, failure: AuthFailure) -> None:
        ctx.auth_failure = failure.reason
        raise unauthorized(failure.message, reason=failure.reason)


class AnonymousStage(Stage):
    """``auth.enabled: false``: every caller is the same anonymous identity (RBAC still applies)."""

    name = "authenticate"

    def __init__(self, roles: list[str]) -> None:
        self.identity = Identity(subject="anonymous", roles=tuple(roles))
        self.headers = identity_headers(self.identity)

    async def on_request(self, ctx: RequestContext) -> None:
        ctx.identity = self.identity
        ctx.upstream_headers.extend(self.headers)


def _next_close(state_dir: Path, algorithm: str) -> float | None:
    """When the next retired dev key's overlap window closes (its tokens stop being accepted)."""
    ends = [until for _, _, until in devkey.retired_keys(state_dir, algorithm)]
    return min(ends) if ends else None


def build_verifier(cfg: AuthConfig, state_dir: Path) -> TokenVerifier:
    try:
        keys = static_keys(cfg, state_dir)
    except (KeyError_, OSError, ValueError) as exc:
        raise ConfigError(f"auth: {exc}") from None
    if not keys and not cfg.jwks:
        raise ConfigError("auth: no trusted keys (set auth.keys or auth.jwks, or auth.dev_key: true)")
    return TokenVerifier(cfg, keys, [JwksSource(j) for j in cfg.jwks])


def build(auth: AuthConfig, env: StageEnv) -> Stage:
    if not auth.enabled:
        log.warning(
            "authentication is disabled (auth.enabled: false): callers get roles %s", auth.anonymous_roles
        )
        return AnonymousStage(auth.anonymous_roles)
    return AuthenticateStage(auth, build_verifier(auth, env.state_dir), env.state_dir)
