"""Property: no token that was not signed by a configured key is ever accepted."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import jwt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.auth.verifier import AuthFailure
from sidecar.config import Config
from sidecar.stages.authenticate import build_verifier
from tests.identity.support import new_key, write_public

TRUSTED = new_key("EdDSA")
SECRET = b"k" * 48
OUTSIDERS = {alg: new_key(alg) for alg in ("RS256", "ES256", "EdDSA")}


def _verifier(tmp: Path):
    (tmp / "secret").write_bytes(SECRET)
    cfg = Config.model_validate(
        {
            "state": {"dir": str(tmp)},
            "auth": {
                "dev_key": False,
                "keys": [
                    {"kid": "trusted", "path": str(write_public(tmp, TRUSTED))},
                    {"kid": "hmac", "path": str(tmp / "secret"), "type": "secret", "algorithms": ["HS256"]},
                ],
            },
        }
    )
    return build_verifier(cfg.auth, cfg.state.dir)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["none", "HS256", "RS256", "ES256", "EdDSA", "PS256", "", "NONE"])},
    optional={
        "kid": st.sampled_from(["trusted", "hmac", "other"]) | st.text(max_size=10),
        "typ": st.just("JWT"),
        "jku": st.just("http://127.0.0.1:1/j"),
        "crit": st.lists(st.text(max_size=5)),
    },
)
claims = st.fixed_dictionaries(
    {"sub": st.text(min_size=1, max_size=10)},
    optional={
        "exp": st.integers(0, 2**33),
        "roles": st.lists(st.text(max_size=5)),
        "iat": st.integers(0, 2**33),
        "x": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=headers,
    payload=claims,
    signature=st.binary(max_size=96),
    signer=st.sampled_from(
        ["outsider-RS256", "outsider-ES256", "outsider-EdDSA", "random", "hmac-guess", "tampered"]
    ),
)
def test_only_configured_keys_are_accepted(tmp_path_factory, header, payload, signature, signer) -> None:
    v = VERIFIER.get("v") or VERIFIER.setdefault("v", _verifier(tmp_path_factory.mktemp("prop")))
    payload = {**payload, "exp": payload.get("exp", int(time.time()) + 600)}
    if signer.startswith("outsider-"):
        alg = signer.split("-")[1]
        token = jwt.encode(
            payload, OUTSIDERS[alg], algorithm=alg, headers={k: v for k, v in header.items() if k != "alg"}
        )
    elif signer == "hmac-guess":
        token = jwt.encode(payload, b"g" * 48, algorithm="HS256", headers={"kid": "hmac"})
    elif signer == "tampered":
        good = jwt.encode(
            {"sub": "x", "exp": int(time.time()) + 600},
            TRUSTED,
            algorithm="EdDSA",
            headers={"kid": "trusted"},
        )
        h, _, s = good.split(".")
        token = f"{h}.{b64(json.dumps(payload).encode())}.{s}"
    else:
        token = ".".join(
            [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
        )
    try:
        asyncio.run(v.verify(token))
    except AuthFailure:
        return
    raise AssertionError(f"accepted a token not signed by a configured key: {header} {payload} ({signer})")


VERIFIER: dict[str, object] = {}


def test_the_trusted_keys_do_verify(tmp_path: Path) -> None:
    # The property above is only meaningful if the same verifier accepts genuine tokens.
    v = _verifier(tmp_path)
    exp = int(time.time()) + 600
    assert (
        asyncio.run(
            v.verify(
                jwt.encode({"sub": "a", "exp": exp}, TRUSTED, algorithm="EdDSA", headers={"kid": "trusted"})
            )
        ).subject
        == "a"
    )
    assert (
        asyncio.run(
            v.verify(jwt.encode({"sub": "b", "exp": exp}, SECRET, algorithm="HS256", headers={"kid": "hmac"}))
        ).subject
        == "b"
    )
