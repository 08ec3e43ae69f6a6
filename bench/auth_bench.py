"""Cost of authentication + authorization per request: cold vs warm token cache, RS256/ES256/EdDSA.

Runs the real stages (``authenticate`` then ``authorize``, and ``ratelimit`` in a second column) on
real request contexts in one event loop, timing each request's ``on_request`` calls. "cold" clears
the verified-token cache before every request (signature check + claims every time); "warm" is the
steady state of a client reusing its token. Target: <= 50 us p50 warm.

    ~/.cache/custos/venv/bin/python -m bench.auth_bench [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sidecar.auth import devkey
from sidecar.config import Config
from sidecar.context import RequestContext
from sidecar.stage import StageEnv
from sidecar.stages import authenticate, authorize, ratelimit

POLICY = """
version: 1
roles:
  - name: analyst
    permissions: [model:read, history:list]
    constraints:
      models: [deepseek-7b, "llama-*"]
      rate_limit: {per_subject_rpm: 100000000}
  - name: viewer
    permissions: [model:list]
"""
KEYS = {
    "RS256": lambda: rsa.generate_private_key(65537, 2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": lambda: ed25519.Ed25519PrivateKey.generate(),
}
BODY = b'{"model":"deepseek-7b","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def run(alg: str, requests: int, tmp: Path) -> dict[str, list[float]]:
    key = KEYS[alg]()
    pub = tmp / f"{alg}.pem"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    policy = tmp / "rbac.yaml"
    policy.write_text(POLICY)
    cfg = Config.model_validate(
        {
            "state": {"dir": str(tmp / "state")},
            "auth": {"dev_key": False, "keys": [{"kid": "k", "path": str(pub), "algorithms": [alg]}]},
            "rbac": {"policy_file": str(policy)},
        }
    )
    env = StageEnv.from_config(cfg)
    authn, authz = authenticate.build(cfg.auth, env), authorize.build(cfg.rbac, env)
    limit = ratelimit.build(cfg.rbac, env)
    token = devkey.mint_token(key, subject="alice", roles=["analyst"], ttl_s=3600, algorithm=alg, kid="k")
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]

    def ctx() -> RequestContext:
        c = RequestContext(
            request_id="r",
            method="POST",
            path="/v1/chat/completions",
            query=b"",
            headers=list(headers),
            client_ip="127.0.0.1",
            body=BODY,
        )
        c.model = "deepseek-7b"  # what the parse stage (not measured here) sets
        return c

    out: dict[str, list[float]] = {"cold": [], "warm": [], "warm+ratelimit": []}
    clock = time.perf_counter_ns
    for mode in out:
        for i in range(requests + 200):
            c = ctx()
            if mode == "cold":
                authn.verifier._cache.clear()
            t0 = clock()
            await authn.on_request(c)
            await authz.on_request(c)
            if mode == "warm+ratelimit":
                await limit.on_request(c)
            dt = clock() - t0
            assert c.decision is not None and c.decision.allowed
            if i >= 200:  # warm-up excluded
                out[mode].append(dt / 1000)
    return out


async def main_async(requests: int) -> None:
    print(f"{'alg':6} {'mode':15} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8} {'mean us':>8}  (n={requests})")
    with tempfile.TemporaryDirectory() as d:
        for alg in KEYS:
            results = await run(alg, requests, Path(d))
            for mode, values in results.items():
                print(
                    f"{alg:6} {mode:15} {pct(values, 50):8.1f} {pct(values, 90):8.1f} "
                    f"{pct(values, 99):8.1f} {statistics.fmean(values):8.1f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main_async(args.requests))


if __name__ == "__main__":
    main()
