"""Which silences are broad (``silence_breadth``), and how the admin API's authorizer uses the identity
the sidecar's pipeline already established."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from alerting.api import ApiError, make_authorizer
from alerting.config import AdminConfig
from alerting.matchers import parse_matchers
from alerting.rules import load_rule_files, parse_rules
from alerting.silences import SilenceError, check_silence, silence_breadth
from sidecar.context import Identity
from sidecar.rbac.policy import Policy, parse_policy

BUILTIN = load_rule_files(None)
PROTECTED = parse_matchers(AdminConfig().protected_alerts)


def _breadth(matchers: list[str], groups: Any = BUILTIN, ext: dict[str, str] | None = None) -> str | None:
    return silence_breadth(parse_matchers(matchers), groups, ext or {}, PROTECTED)


@pytest.mark.parametrize(
    ("matchers", "why"),
    [
        (['alertname=~".+"'], "any name"),
        (['alertname=~"Custos.*"'], "every rule"),
        (['severity=~".+"'], "every rule"),
        (['alertname="CustosAuthFailureSpike"'], "CustosAuthFailureSpike"),
        (['alertname="CustosAuditDeadLetters"'], "CustosAuditDeadLetters"),
        (['alertname=~"CustosAudit.*"'], "protected rule CustosAudit"),
        (['team="security"'], "protected rule"),
        (['severity="warning"'], "protected rule"),
        (['alertname="CustosRBACDenialSpike"', 'permission=~".+"'], "CustosRBACDenialSpike"),
        (['alertname="CustosRBACDenialSpike"', 'permission!="model:list"'], "CustosRBACDenialSpike"),
        (['gpu=~".+"'], "protected rule"),  # conservative: the audit rules' series decide their labels
    ],
)
def test_broad_silences(matchers: list[str], why: str) -> None:
    found = _breadth(matchers)
    assert found is not None and why in found


@pytest.mark.parametrize(
    "matchers",
    [
        ['alertname="CustosGPUUtilizationHigh"'],
        ['alertname=~"CustosGPU.*"'],
        ['alertname="CustosGPUTemperatureHigh"', 'gpu="1"'],
        ['gpu="0"'],
        ['instance="10.0.0.7:8000"'],
        ['alertname="CustosRBACDenialSpike"', 'permission="model:invoke:canary"'],
        ['alertname="CustosUpstreamDown"'],
    ],
)
def test_narrow_silences(matchers: list[str]) -> None:
    assert _breadth(matchers) is None


def test_external_labels_and_custom_rules() -> None:
    groups = parse_rules(
        """
groups:
  - name: g
    rules:
      - alert: DiskFull
        expr: vector(1)
        labels: {severity: warning, owner: '{{ $labels.team }}'}
      - alert: Breach
        expr: vector(1)
        labels: {team: security}
"""
    )
    # A matcher on an external label every alert carries mutes everything.
    assert "any name" in (_breadth(['cluster="prod"'], groups, {"cluster": "prod"}) or "")
    assert _breadth(['cluster="staging"'], groups, {"cluster": "prod"}) is None
    # Custom rules labelled like the built-in protected ones are protected too.
    assert "Breach" in (_breadth(['alertname="Breach"'], groups) or "")
    assert _breadth(['alertname="DiskFull"'], groups) is None
    # A templated label value is not known in advance: a matcher on it is not taken as restrictive
    # for the protected rules, nor as matching every rule.
    assert _breadth(['owner="ops"'], groups) is None


def test_matchers_that_all_match_nothing_are_refused_for_everyone() -> None:
    for matchers in ([], ['alertname=~".*"'], ['alertname!="X"'], ['gpu=~".*"', 'a!~"b"']):
        with pytest.raises(SilenceError, match=r"at least one matcher|every alert"):
            check_silence(matchers, 0.0, 60.0, "alice")
    with pytest.raises(SilenceError, match="end after"):
        check_silence(['alertname="X"'], 60.0, 60.0, "alice")


# -- the authorizer -------------------------------------------------------------------------------------
class _Verifier:
    calls = 0

    async def verify(self, token: str) -> Identity:
        self.calls += 1
        return Identity("from-token", ("operator",))


class _Stage:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


class _Store:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.routes = None


class _Pipeline:
    def __init__(self, stages: dict[str, Any]) -> None:
        self.stages = stages

    def stage(self, name: str) -> Any:
        return self.stages.get(name)


class _App:
    def __init__(self, verifier: Any, policy_text: str | None) -> None:
        stages: dict[str, Any] = {"authenticate": _Stage(verifier=verifier)}
        if policy_text is not None:
            stages["authorize"] = _Stage(store=_Store(Policy(parse_policy(policy_text, "p.yaml"))))
        self.pipeline = _Pipeline(stages)


POLICY = """
version: 1
roles:
  - name: operator
    permissions: [alerts:read, alerts:manage]
  - name: lead
    permissions: [alerts:manage, alerts:silence-broad]
  - name: office
    permissions: [alerts:read]
    constraints: {source_cidrs: [10.0.0.0/8]}
"""


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_pipeline_identity_is_used_without_verifying_again() -> None:
    verifier = _Verifier()
    authorize = make_authorizer(_App(verifier, POLICY), AdminConfig())
    scope = {
        "headers": [(b"authorization", b"Bearer forged")],
        "client": ("127.0.0.1", 1),
        "custos.identity": Identity("alice", ("operator",)),
        "custos.client_ip": "192.0.2.9",
    }
    caller = _run(authorize(scope, "alerts:manage"))
    assert caller.subject == "alice" and verifier.calls == 0
    assert caller.may("alerts:manage") and not caller.may("alerts:silence-broad")
    lead = _run(authorize({**scope, "custos.identity": Identity("carol", ("lead",))}, "alerts:read"))
    assert lead.subject == "carol" and lead.may("alerts:silence-broad")  # manage also allows reads


def test_denials_name_the_permission_only_and_use_the_resolved_client_ip() -> None:
    authorize = make_authorizer(_App(_Verifier(), POLICY), AdminConfig())
    office = {
        "headers": [],
        "client": ("10.1.2.3", 1),  # a trusted proxy's address; the client is elsewhere
        "custos.identity": Identity("dave", ("office", "intern")),
        "custos.client_ip": "203.0.113.5",
    }
    with pytest.raises(ApiError) as err:
        _run(authorize(office, "alerts:read"))
    assert err.value.status == 403 and err.value.message == "Permission alerts:read denied."
    assert _run(authorize({**office, "custos.client_ip": "10.9.9.9"}, "alerts:read")).subject == "dave"


def test_without_the_pipeline_identity_the_token_is_verified() -> None:
    verifier = _Verifier()
    authorize = make_authorizer(_App(verifier, POLICY), AdminConfig())
    caller = _run(
        authorize({"headers": [(b"authorization", b"Bearer t")], "client": ("::1", 1)}, "alerts:read")
    )
    assert caller.subject == "from-token" and verifier.calls == 1
    with pytest.raises(ApiError) as err:
        _run(authorize({"headers": [], "client": ("::1", 1)}, "alerts:read"))
    assert err.value.status == 401


def test_token_and_loopback_modes() -> None:
    token_mode = make_authorizer(_App(None, None), AdminConfig(token="s3cret"))
    caller = _run(token_mode({"headers": [(b"authorization", b"Bearer s3cret")]}, "alerts:manage"))
    assert caller.subject == "admin-token" and caller.may("alerts:silence-broad")
    with pytest.raises(ApiError):
        _run(token_mode({"headers": [(b"authorization", b"Bearer nope")]}, "alerts:read"))
    local = make_authorizer(_App(None, None), AdminConfig())
    assert _run(local({"headers": [], "client": ("127.0.0.1", 5)}, "alerts:manage")).subject == "local"
    # Behind a trusted proxy on loopback, the resolved client address counts, not the peer's.
    with pytest.raises(ApiError) as err:
        _run(local({"headers": [], "client": ("127.0.0.1", 5), "custos.client_ip": "198.51.100.1"}, "x:y"))
    assert err.value.status == 403
