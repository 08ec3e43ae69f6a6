"""JWT verification: bounded, strict, cached.

Order of checks, cheapest and most dangerous first: size bound (before any parsing), header shape,
``alg`` against the allow-list of the key that ``kid`` names (no ``none``, no HMAC with a public
key), embedded key headers refused, ``crit`` refused, then the signature and the claims (pyjwt).
Verified tokens are cached by a hash of the token until their ``exp``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import time
from collections import OrderedDict
from typing import Any

import jwt
import orjson

from ..context import Identity
from .config import AuthConfig
from .keys import JwksSource, VerifyKey

log = logging.getLogger("custos.auth")

# Headers that carry or point at a key: trusting them lets the token choose its own verifier.
FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c"})
_MAX_CANDIDATES = 4  # keys tried for one token without a kid: bounds the work an attacker can cause

# Identity claims end up in headers, logs, audit records and metrics: bounded, and free of control
# characters, line/paragraph separators, bidi overrides and lone surrogates (which no UTF-8 encoder
# accepts), or the token is refused.
MAX_SUBJECT_CHARS = 256
MAX_ROLES = 64
MAX_ROLE_CHARS = 64
MAX_GROUPS = 256  # entries of the raw roles claim, before role_mapping
MAX_GROUP_CHARS = 256
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class AuthFailure(Exception):
    """Why a token was refused. ``reason`` is a short fixed label (metrics, audit); ``message`` is
    safe to show to the client (never contains the token)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _bad_claim(message: str) -> AuthFailure:
    return AuthFailure("invalid_token", message)


def _b64json(segment: str) -> Any:
    pad = "=" * (-len(segment) % 4)
    return orjson.loads(base64.urlsafe_b64decode(segment + pad))


def claim_at(claims: dict[str, Any], dotted: str) -> Any:
    node: Any = claims
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


class TokenVerifier:
    def __init__(
        self, cfg: AuthConfig, static: list[VerifyKey], jwks: list[JwksSource] | None = None
    ) -> None:
        self.cfg = cfg
        self.static = static
        self.jwks = jwks or []
        self.max_bytes = cfg.max_token_bytes
        self.leeway = cfg.leeway_s
        self.audience = list(cfg.audience) or None
        self.issuer = list(cfg.issuer) or None
        self.cache_size = cfg.cache_size
        self._cache: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        self._jwt = jwt.PyJWT()
        self._options: Any = {"require": ["exp"], "verify_aud": self.audience is not None}
        self.generation = 0
        self._index: dict[str | None, list[VerifyKey]] = {}
        self.rebuild_index()

    # -- keys -----------------------------------------------------------------------------------
    def rebuild_index(self) -> None:
        """Called when a JWKS changes: re-index keys by kid and drop cached verifications (a token
        whose key was withdrawn must not stay accepted through the cache)."""
        keys = [*self.static, *(k for src in self.jwks for k in src.keys)]
        # A key without a kid serves every token; a token without a kid may use any key.
        anykid = [k for k in keys if k.kid is None]
        index: dict[str | None, list[VerifyKey]] = {None: keys}
        for key in keys:
            if key.kid is not None:
                index.setdefault(key.kid, []).append(key)
        for kid, bucket in index.items():
            if kid is not None:
                bucket.extend(anykid)
        self._anykid = anykid
        # Algorithms any trusted key could verify; a JWKS still to be fetched counts with its list.
        self._algorithms = frozenset(a for k in keys for a in k.algorithms) | frozenset(
            a for src in self.jwks for a in src.cfg.algorithms
        )
        self._index = index
        self._cache.clear()
        self.generation += 1

    def candidates(self, kid: str | None, alg: str) -> list[VerifyKey]:
        keys = self._index.get(kid, self._anykid)
        return [k for k in keys if alg in k.algorithms][:_MAX_CANDIDATES]

    # -- verification ---------------------------------------------------------------------------
    async def verify(self, token: str) -> Identity:
        if len(token) > self.max_bytes:
            raise AuthFailure("too_large", f"Bearer token is longer than {self.max_bytes} bytes.")
        digest = hashlib.sha256(token.encode("ascii", "replace")).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            identity, exp = hit
            if time.time() < exp:  # never served past exp, leeway or not
                self._cache.move_to_end(digest)
                return identity
            del self._cache[digest]
        kid, alg = self._check_header(token)
        keys = self.candidates(kid, alg)
        if not keys and kid is not None and self.jwks:
            # Unknown kid: the IdP may have rotated; refetch (rate-limited inside the source).
            changed = False
            for src in self.jwks:
                changed = await src.refresh() or changed
            if changed:
                self.rebuild_index()
            keys = self.candidates(kid, alg)
        if not keys:
            raise AuthFailure("unknown_key", "Bearer token is not signed by a trusted key.")
        identity, exp = self._verify_with(token, keys, alg)
        if self.cache_size:
            self._cache[digest] = (identity, exp)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return identity

    def _check_header(self, token: str) -> tuple[str | None, str]:
        if token.count(".") != 2:
            raise AuthFailure("malformed", "Bearer token is not a JWT.")
        try:
            header = _b64json(token.split(".", 1)[0])
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            raise AuthFailure("malformed", "Bearer token header is not valid.") from None
        if not isinstance(header, dict):
            raise AuthFailure("malformed", "Bearer token header is not valid.")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or not alg:
            raise AuthFailure("alg_not_allowed", "Bearer token algorithm is not allowed.")
        if FORBIDDEN_HEADERS.intersection(header):
            raise AuthFailure("bad_header", "Bearer token carries an embedded key header (jwk/jku/x5u/x5c).")
        if "crit" in header or "b64" in header:
            raise AuthFailure(
                "bad_header", "Bearer token has critical header extensions that are not supported."
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthFailure("malformed", "Bearer token kid is not a string.")
        if alg not in self._algorithms:
            raise AuthFailure("alg_not_allowed", "Bearer token algorithm is not allowed.")
        return kid, alg

    def _verify_with(self, token: str, keys: list[VerifyKey], alg: str) -> tuple[Identity, float]:
        failure: AuthFailure | None = None
        for key in keys:
            issuer = key.issuer or self.issuer
            try:
                claims = self._jwt.decode(
                    token,
                    key.prepared[alg],
                    algorithms=[alg],
                    options=self._options,
                    audience=self.audience,
                    issuer=issuer,
                    leeway=self.leeway,
                )
            except jwt.InvalidSignatureError:
                failure = AuthFailure("bad_signature", "Bearer token signature is not valid.")
                continue
            except jwt.ExpiredSignatureError:
                raise AuthFailure("expired", "Bearer token has expired.") from None
            except jwt.ImmatureSignatureError:
                raise AuthFailure("not_yet_valid", "Bearer token is not valid yet (nbf/iat).") from None
            except jwt.InvalidIssuerError:
                raise AuthFailure("bad_issuer", "Bearer token issuer is not accepted.") from None
            except jwt.InvalidAudienceError:
                raise AuthFailure("bad_audience", "Bearer token audience is not accepted.") from None
            except jwt.MissingRequiredClaimError as exc:
                raise AuthFailure("missing_claim", f"Bearer token lacks the '{exc.claim}' claim.") from None
            except jwt.InvalidTokenError:
                failure = AuthFailure("malformed", "Bearer token is not valid.")
                continue
            return self._identity(claims), float(claims["exp"])
        assert failure is not None
        raise failure

    def _identity(self, claims: dict[str, Any]) -> Identity:
        name = self.cfg.subject_claim
        subject = claim_at(claims, name)
        if not isinstance(subject, str) or not subject:
            raise AuthFailure("missing_claim", f"Bearer token lacks the '{name}' claim.")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise _bad_claim(f"Bearer token '{name}' claim is longer than {MAX_SUBJECT_CHARS} characters.")
        if _BAD_CHARS.search(subject):
            raise _bad_claim(f"Bearer token '{name}' claim holds control characters or invalid Unicode.")
        roles = self.map_roles(claim_at(claims, self.cfg.roles_claim))
        if len(roles) > MAX_ROLES:
            raise _bad_claim(f"Bearer token carries more than {MAX_ROLES} roles.")
        if any(len(r) > MAX_ROLE_CHARS for r in roles):
            raise _bad_claim(f"Bearer token carries a role longer than {MAX_ROLE_CHARS} characters.")
        return Identity(subject=subject, roles=roles, claims=claims)

    def map_roles(self, raw: Any) -> tuple[str, ...]:
        """The Custos roles for a roles claim. AuthFailure when the claim is oversized or holds
        characters no identity may hold."""
        claim = self.cfg.roles_claim
        if isinstance(raw, str):
            if len(raw) > MAX_GROUPS * (MAX_GROUP_CHARS + 1):
                raise _bad_claim(f"Bearer token '{claim}' claim is too long.")
            if _BAD_CHARS.search(raw):
                raise _bad_claim(f"Bearer token '{claim}' claim holds control characters or invalid Unicode.")
            groups = raw.replace(",", " ").split()  # scope-style "a b" or "a,b"
        elif isinstance(raw, list):
            groups = [g for g in raw if isinstance(g, str)]
        else:
            return ()
        if len(groups) > MAX_GROUPS:
            raise _bad_claim(f"Bearer token '{claim}' claim has more than {MAX_GROUPS} entries.")
        for group in groups:
            if len(group) > MAX_GROUP_CHARS:
                raise _bad_claim(
                    f"Bearer token '{claim}' claim has an entry longer than {MAX_GROUP_CHARS} characters."
                )
            if _BAD_CHARS.search(group):
                raise _bad_claim(f"Bearer token '{claim}' claim holds control characters or invalid Unicode.")
        mapping = self.cfg.role_mapping
        roles: list[str] = []
        for group in groups:
            mapped = mapping.get(group)
            if mapped is None:
                if self.cfg.map_unmapped:
                    mapped = [group]
                else:
                    continue
            for role in mapped:
                if role not in roles:
                    roles.append(role)
        return tuple(roles)
