"""JWT verification: every attack in the issue, every accepted algorithm, claims and the cache."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from custos.errors import ConfigError
from sidecar.auth.verifier import AuthFailure, TokenVerifier
from sidecar.config import Config
from sidecar.stages.authenticate import build_verifier
from tests.identity.support import new_key, public_pem, sign, write_public


def verifier(tmp: Path, **auth: Any) -> TokenVerifier:
    auth.setdefault("dev_key", False)
    cfg = Config.model_validate({"state": {"dir": str(tmp / "state")}, "auth": auth})
    return build_verifier(cfg.auth, cfg.state.dir)


def b64(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def refused(v: TokenVerifier, token: str, reason: str) -> None:
    with pytest.raises(AuthFailure) as info:
        await v.verify(token)
    assert info.value.reason == reason, info.value.message
    assert token not in info.value.message


@pytest.fixture
def rsa_setup(tmp_path: Path) -> tuple[TokenVerifier, Any, Path]:
    key = new_key("RS256")
    path = write_public(tmp_path, key)
    return verifier(tmp_path, keys=[{"kid": "k1", "path": str(path), "algorithms": ["RS256"]}]), key, path


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
async def test_each_asymmetric_algorithm_verifies(tmp_path: Path, alg: str) -> None:
    key = new_key(alg)
    v = verifier(tmp_path, keys=[{"kid": "k", "path": str(write_public(tmp_path, key)), "algorithms": [alg]}])
    ident = await v.verify(sign(key, alg, kid="k"))
    assert ident.subject == "alice" and ident.roles == ("analyst",)


async def test_hs256_with_a_secret_file(tmp_path: Path) -> None:
    secret = b"s" * 40
    (tmp_path / "secret").write_bytes(secret)
    v = verifier(
        tmp_path, keys=[{"path": str(tmp_path / "secret"), "type": "secret", "algorithms": ["HS256"]}]
    )
    assert (await v.verify(sign(secret, "HS256"))).subject == "alice"
    await refused(v, sign(b"x" * 40, "HS256"), "bad_signature")


async def test_alg_none_is_refused(rsa_setup) -> None:
    v, _, _ = rsa_setup
    now = int(time.time())
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'mallory', 'exp': now + 60})}."
    await refused(v, token, "alg_not_allowed")
    token = f"{b64({'alg': 'None', 'kid': 'k1'})}.{b64({'sub': 'mallory', 'exp': now + 60})}.sig"
    await refused(v, token, "alg_not_allowed")


async def test_algorithm_confusion_hs256_signed_with_the_rsa_public_key(rsa_setup) -> None:
    v, _, path = rsa_setup
    pem = path.read_bytes()
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    payload = {"sub": "mallory", "roles": ["admin"], "exp": now + 600, "iat": now}
    import hashlib
    import hmac

    signing_input = f"{b64(header)}.{b64(payload)}".encode()
    sig = hmac.new(pem, signing_input, hashlib.sha256).digest()
    await refused(v, f"{signing_input.decode()}.{b64(sig)}", "alg_not_allowed")


def test_config_refuses_hmac_algorithms_on_public_keys(tmp_path: Path) -> None:
    path = write_public(tmp_path, new_key("RS256"))
    with pytest.raises(Exception, match="secrets only"):
        verifier(tmp_path, keys=[{"path": str(path), "algorithms": ["RS256", "HS256"]}])


def test_config_refuses_mismatched_key_types(tmp_path: Path) -> None:
    path = write_public(tmp_path, new_key("ES256"))
    with pytest.raises(ConfigError, match="RS256 cannot be used"):
        verifier(tmp_path, keys=[{"path": str(path), "algorithms": ["RS256"]}])


def test_config_refuses_short_rsa_private_keys_and_short_secrets(tmp_path: Path) -> None:
    small = rsa.generate_private_key(65537, 1024)
    (tmp_path / "small.pem").write_bytes(public_pem(small))
    with pytest.raises(ConfigError, match="2048"):
        verifier(tmp_path, keys=[{"path": str(tmp_path / "small.pem")}])
    (tmp_path / "short").write_bytes(b"tooshort")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        verifier(tmp_path, keys=[{"path": str(tmp_path / "short"), "type": "secret"}])
    from cryptography.hazmat.primitives import serialization

    key = new_key("EdDSA")
    (tmp_path / "priv.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigError, match="private key"):
        verifier(tmp_path, keys=[{"path": str(tmp_path / "priv.pem")}])


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
async def test_embedded_key_headers_are_refused(tmp_path: Path, name: str) -> None:
    key = new_key("ES256")
    v = verifier(tmp_path, keys=[{"kid": "k", "path": str(write_public(tmp_path, key))}])
    value: Any = {"kty": "EC"} if name == "jwk" else (["MIIB"] if name == "x5c" else "http://127.0.0.1:1/k")
    # Correctly signed by the trusted key: the header alone must make it fail.
    await refused(v, sign(key, "ES256", kid="k", headers={name: value}), "bad_header")


async def test_unknown_crit_header_is_refused(tmp_path: Path) -> None:
    key = new_key("EdDSA")
    v = verifier(tmp_path, keys=[{"kid": "k", "path": str(write_public(tmp_path, key))}])
    await refused(v, sign(key, "EdDSA", kid="k", headers={"crit": ["exp-ext"], "exp-ext": 1}), "bad_header")


async def test_oversized_tokens_are_refused_before_parsing(tmp_path: Path) -> None:
    key = new_key("EdDSA")
    v = verifier(
        tmp_path, keys=[{"kid": "k", "path": str(write_public(tmp_path, key))}], max_token_bytes=1024
    )
    big = sign(key, "EdDSA", kid="k", pad="x" * 2000)  # validly signed, just too big
    await refused(v, big, "too_large")
    await refused(v, "!" * 5000, "too_large")  # not even a JWT: never parsed


async def test_claims_are_checked(tmp_path: Path) -> None:
    key = new_key("EdDSA")
    v = verifier(
        tmp_path,
        keys=[{"kid": "k", "path": str(write_public(tmp_path, key))}],
        issuer="https://idp.example",
        audience=["custos", "other"],
        leeway_s=30,
    )
    ok = {"iss": "https://idp.example", "aud": "custos"}
    now = int(time.time())
    assert (await v.verify(sign(key, "EdDSA", ok, kid="k"))).subject == "alice"
    await refused(v, sign(key, "EdDSA", ok, kid="k", exp_in=-120), "expired")
    await refused(v, sign(key, "EdDSA", {**ok, "nbf": now + 300}, kid="k"), "not_yet_valid")
    await refused(v, sign(key, "EdDSA", {**ok, "iat": now + 300}, kid="k"), "not_yet_valid")
    await refused(v, sign(key, "EdDSA", {**ok, "iss": "https://evil.example"}, kid="k"), "bad_issuer")
    await refused(v, sign(key, "EdDSA", {**ok, "aud": "someone-else"}, kid="k"), "bad_audience")
    await refused(v, sign(key, "EdDSA", {**ok, "exp": None}, kid="k"), "missing_claim")
    await refused(v, sign(key, "EdDSA", {**ok, "sub": None}, kid="k"), "missing_claim")
    # Within the clock-skew leeway: still fine.
    assert await v.verify(sign(key, "EdDSA", {**ok, "nbf": now + 10}, kid="k"))
    assert await v.verify(sign(key, "EdDSA", ok, kid="k", exp_in=-10))


async def test_signature_and_kid(tmp_path: Path) -> None:
    key, other = new_key("ES256"), new_key("ES256")
    v = verifier(tmp_path, keys=[{"kid": "k", "path": str(write_public(tmp_path, key))}])
    await refused(v, sign(other, "ES256", kid="k"), "bad_signature")
    await refused(v, sign(key, "ES256", kid="unknown"), "unknown_key")
    good = sign(key, "ES256", kid="k")
    head, payload, sig = good.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["roles"] = ["admin"]
    await refused(v, f"{head}.{b64(forged)}.{sig}", "bad_signature")
    await refused(v, "not-a-jwt", "malformed")
    await refused(v, "a.b.c", "malformed")


async def test_rotation_by_kid_with_overlap(tmp_path: Path) -> None:
    old, new = new_key("EdDSA"), new_key("EdDSA")
    v = verifier(
        tmp_path,
        keys=[
            {"kid": "2024", "path": str(write_public(tmp_path, old, "old.pem"))},
            {"kid": "2025", "path": str(write_public(tmp_path, new, "new.pem"))},
        ],
    )
    assert await v.verify(sign(old, "EdDSA", kid="2024"))
    assert await v.verify(sign(new, "EdDSA", kid="2025"))
    # A kid names exactly one key: the old key's token labelled with the new kid fails.
    await refused(v, sign(old, "EdDSA", kid="2025"), "bad_signature")


async def test_roles_claim_paths_and_group_mapping(tmp_path: Path) -> None:
    key = new_key("EdDSA")
    path = str(write_public(tmp_path, key))
    kc = verifier(tmp_path, keys=[{"path": path}], roles_claim="realm_access.roles")
    ident = await kc.verify(sign(key, "EdDSA", {"roles": None, "realm_access": {"roles": ["analyst", "x"]}}))
    assert ident.roles == ("analyst", "x")
    okta = verifier(
        tmp_path,
        keys=[{"path": path}],
        roles_claim="groups",
        map_unmapped=False,
        role_mapping={"Engineering": ["analyst"], "SRE": ["operator", "analyst"]},
    )
    ident = await okta.verify(sign(key, "EdDSA", {"groups": ["Engineering", "SRE", "Sales"]}))
    assert ident.roles == ("analyst", "operator")
    ident = await okta.verify(sign(key, "EdDSA", {"groups": "SRE"}))
    assert ident.roles == ("operator", "analyst")


async def test_cache_never_serves_past_exp(tmp_path: Path) -> None:
    key = new_key("EdDSA")
    v = verifier(tmp_path, keys=[{"kid": "k", "path": str(write_public(tmp_path, key))}], leeway_s=0)
    token = sign(key, "EdDSA", kid="k", exp_in=2)
    assert await v.verify(token)
    assert len(v._cache) == 1 and token.encode() not in str(v._cache).encode()
    await asyncio.sleep(2.2)
    await refused(v, token, "expired")
    assert len(v._cache) == 0


async def test_cache_is_bounded_lru(tmp_path: Path) -> None:
    key = new_key("EdDSA")
    v = verifier(tmp_path, keys=[{"kid": "k", "path": str(write_public(tmp_path, key))}], cache_size=3)
    tokens = [sign(key, "EdDSA", kid="k", sub=f"user{i}") for i in range(5)]
    for t in tokens:
        await v.verify(t)
    assert len(v._cache) == 3


async def test_dev_key_is_created_private_and_trusted(tmp_path: Path) -> None:
    from sidecar.auth import devkey

    v = verifier(tmp_path, dev_key=True)
    path = devkey.dev_key_path(tmp_path / "state", "EdDSA")
    assert path.stat().st_mode & 0o777 == 0o600
    private = devkey.load_or_create(tmp_path / "state")
    ident = await v.verify(devkey.mint_token(private, subject="bob", roles=["viewer"]))
    assert ident.subject == "bob" and ident.roles == ("viewer",)
    # Another state directory is another key: not trusted here.
    stranger = devkey.load_or_create(tmp_path / "elsewhere")
    await refused(v, devkey.mint_token(stranger, subject="bob", roles=["admin"]), "unknown_key")
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        devkey.load_or_create(tmp_path / "state")


def test_token_refused_with_wrong_issuer_for_dev_key(tmp_path: Path) -> None:
    # The dev key only vouches for its own issuer: a dev-key token claiming the IdP's iss is refused.
    from sidecar.auth import devkey

    v = verifier(tmp_path, dev_key=True)
    private = devkey.load_or_create(tmp_path / "state")
    token = devkey.mint_token(private, subject="bob", roles=["admin"], issuer="https://idp.example")
    with pytest.raises(AuthFailure) as info:
        asyncio.run(v.verify(token))
    assert info.value.reason == "bad_issuer"


@pytest.mark.parametrize(
    ("claims", "fragment"),
    [
        ({"sub": "al\ud800ice"}, "'sub' claim holds control characters"),  # lone surrogate
        ({"sub": "alice\r\nX-Custos-Roles: admin"}, "'sub' claim holds control characters"),
        ({"sub": "alice\x00"}, "'sub' claim holds control characters"),
        ({"sub": "ali\u202ece"}, "'sub' claim holds control characters"),  # bidi override
        ({"sub": "a" * 257}, "longer than 256"),
        ({"roles": ["analyst", "adm\udc80in"]}, "'roles' claim holds control characters"),
        ({"roles": "analyst\x00admin"}, "'roles' claim holds control characters"),
        ({"roles": [f"r{i}" for i in range(65)]}, "more than 64 roles"),
        ({"roles": ["r" * 65]}, "longer than 64"),
        ({"roles": ["g"] * 257}, "more than 256 entries"),
    ],
)
async def test_identity_claims_are_bounded_and_clean(tmp_path: Path, claims: dict, fragment: str) -> None:
    key = new_key("EdDSA")
    v = verifier(tmp_path, keys=[{"kid": "k", "path": str(write_public(tmp_path, key))}])
    with pytest.raises(AuthFailure) as info:
        await v.verify(sign(key, "EdDSA", claims, kid="k"))
    assert info.value.reason == "invalid_token" and fragment in info.value.message
    # At the limits, and with ordinary non-ASCII, the token is fine.
    ok = {"sub": "é" * 256, "roles": [f"{i:064d}" for i in range(64)]}
    ident = await v.verify(sign(key, "EdDSA", ok, kid="k"))
    assert len(ident.subject) == 256 and len(ident.roles) == 64


def test_identity_headers_are_total() -> None:
    from urllib.parse import unquote

    from sidecar.context import Identity
    from sidecar.stages.authenticate import identity_headers

    for subject in ["alice@example.com", "al\ud800ice", "a\r\nb", "é,ü", "\x00"]:
        headers = dict(identity_headers(Identity(subject, ("a,b", "r\udfff", "ok"))))
        for value in headers.values():
            value.decode("ascii")  # plain ASCII, no CR/LF: nothing can be injected
            assert b"\r" not in value and b"\n" not in value
        assert headers[b"x-custos-roles"].count(b",") == 2  # a comma inside a role stays inside
    assert dict(identity_headers(Identity("é,ü", ())))[b"x-custos-subject"] == b"%C3%A9,%C3%BC"
    assert unquote(
        dict(identity_headers(Identity("alice@example.com", ())))[b"x-custos-subject"].decode()
    ) == ("alice@example.com")
