"""JWKS against a real local HTTP server: rotation, unknown-kid refresh (rate-limited), outages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar.auth.verifier import AuthFailure
from sidecar.config import Config
from sidecar.stages.authenticate import AuthenticateStage, build_verifier
from tests.identity.support import JwksServer, jwk_of, new_key, sign


@pytest.fixture
def jwks() -> JwksServer:
    server = JwksServer()
    yield server
    server.stop()


def stage_for(tmp: Path, server: JwksServer, **jwks_opts) -> AuthenticateStage:
    cfg = Config.model_validate(
        {
            "state": {"dir": str(tmp)},
            "auth": {
                "dev_key": False,
                "jwks": [{"url": server.url, "min_refresh_interval_s": 0.5, **jwks_opts}],
            },
        }
    )
    return AuthenticateStage(cfg.auth, build_verifier(cfg.auth, cfg.state.dir))


async def test_rotation_with_overlap_and_unknown_kid_refresh(tmp_path: Path, jwks: JwksServer) -> None:
    k1, k2 = new_key("RS256"), new_key("ES256")
    jwks.keys = [jwk_of(k1, "k1", "RS256")]
    stage = stage_for(tmp_path, jwks)
    await stage.startup(None)
    try:
        v = stage.verifier
        assert (await v.verify(sign(k1, "RS256", kid="k1"))).subject == "alice"
        # The IdP publishes a new key next to the old one (overlap) and starts signing with it.
        jwks.keys = [jwk_of(k1, "k1", "RS256"), jwk_of(k2, "k2", "ES256")]
        await asyncio.sleep(0.6)  # past min_refresh_interval_s since the startup fetch
        hits = jwks.hits
        assert (await v.verify(sign(k2, "ES256", kid="k2"))).subject == "alice"
        assert jwks.hits == hits + 1  # fetched once, because of the unknown kid
        assert await v.verify(sign(k1, "RS256", kid="k1", sub="still-old"))  # overlap: old key still good
        # The old key is withdrawn: after the next refresh its tokens fail, even ones cached before.
        old_token = sign(k1, "RS256", kid="k1")
        assert await v.verify(old_token)
        jwks.keys = [jwk_of(k2, "k2", "ES256")]
        assert await jwks_refresh(stage)
        with pytest.raises(AuthFailure) as info:
            await v.verify(old_token)
        assert info.value.reason == "unknown_key"
    finally:
        await stage.shutdown()


async def jwks_refresh(stage: AuthenticateStage) -> bool:
    changed = False
    for src in stage.verifier.jwks:
        changed = await src.refresh(force=True) or changed
    if changed:
        stage.verifier.rebuild_index()
    return changed


async def test_unknown_kid_storm_is_rate_limited(tmp_path: Path, jwks: JwksServer) -> None:
    k1 = new_key("EdDSA")
    jwks.keys = [jwk_of(k1, "k1", "EdDSA")]
    stage = stage_for(tmp_path, jwks, min_refresh_interval_s=60)
    await stage.startup(None)
    try:
        start = jwks.hits
        stranger = new_key("EdDSA")
        for i in range(20):
            with pytest.raises(AuthFailure):
                await stage.verifier.verify(sign(stranger, "EdDSA", kid=f"random-{i}"))
        assert jwks.hits - start <= 1
    finally:
        await stage.shutdown()


async def test_outage_keeps_last_good_keys(tmp_path: Path, jwks: JwksServer) -> None:
    k1 = new_key("ES256")
    jwks.keys = [jwk_of(k1, "k1", "ES256")]
    stage = stage_for(tmp_path, jwks)
    await stage.startup(None)
    try:
        v = stage.verifier
        jwks.status = 500
        assert not await jwks_refresh(stage)
        assert await v.verify(sign(k1, "ES256", kid="k1", sub="during-500"))
        jwks.stop()  # connection refused from now on
        assert not await jwks_refresh(stage)
        assert (await v.verify(sign(k1, "ES256", kid="k1", sub="during-outage"))).subject == "during-outage"
        jwks.status = 200
        jwks.keys = [{"kty": "garbage"}]
        jwks.start()
        assert not await jwks_refresh(stage)  # no usable key in the new document: kept the old ones
        assert await v.verify(sign(k1, "ES256", kid="k1", sub="after-garbage"))
    finally:
        await stage.shutdown()


async def test_jwks_refuses_hmac_and_private_keys(tmp_path: Path, jwks: JwksServer) -> None:
    k1 = new_key("EdDSA")
    private_jwk = jwk_of(k1, "priv", "EdDSA")
    private_jwk["d"] = "AAAA"
    jwks.keys = [
        {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "hs", "alg": "HS256"},
        private_jwk,
    ]
    stage = stage_for(tmp_path, jwks)
    await stage.startup(None)
    try:
        assert stage.verifier.jwks[0].keys == []
        import jwt

        forged = jwt.encode(
            {"sub": "m", "exp": 2**40},
            b"secretsecretsecretsecretsecret-secret",
            algorithm="HS256",
            headers={"kid": "hs"},
        )
        with pytest.raises(AuthFailure) as info:
            await stage.verifier.verify(forged)
        assert info.value.reason == "alg_not_allowed"
    finally:
        await stage.shutdown()


def test_jwks_config_refuses_hmac_algorithms() -> None:
    with pytest.raises(Exception, match="HMAC secrets never come from a URL"):
        Config.model_validate({"auth": {"jwks": [{"url": "http://127.0.0.1:1/j", "algorithms": ["HS256"]}]}})


async def test_periodic_background_refresh(tmp_path: Path, jwks: JwksServer) -> None:
    k1, k2 = new_key("EdDSA"), new_key("EdDSA")
    jwks.keys = [jwk_of(k1, "k1", "EdDSA")]
    # Unknown-kid refetches are effectively off here: only the background task can pick up k2.
    stage = stage_for(tmp_path, jwks, refresh_interval_s=5, min_refresh_interval_s=3600)
    await stage.startup(None)
    try:
        jwks.keys = [jwk_of(k1, "k1", "EdDSA"), jwk_of(k2, "k2", "EdDSA")]
        with pytest.raises(AuthFailure):
            await stage.verifier.verify(sign(k2, "EdDSA", kid="k2"))
        for _ in range(80):
            if len(stage.verifier.jwks[0].keys) == 2:
                break
            await asyncio.sleep(0.1)
        assert (await stage.verifier.verify(sign(k2, "EdDSA", kid="k2", sub="bg"))).subject == "bg"
    finally:
        await stage.shutdown()
