"""The alerting admin API (``/admin/alerts``) against a real sidecar: every admin action, allowed or
refused, leaves an audit record naming the caller; a silence's author is the authenticated subject,
not what the body claims; silences that would mute everything (or every security/audit alert), and
overlong ones, need ``alerts:silence-broad``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.stack import Sidecar, mint_token
from tests.audit.helpers import wait_record

from .conftest import RecordingUpstream

POLICY = """
version: 1
roles:
  - name: operator
    permissions: [alerts:read, alerts:manage]
  - name: oncall-lead
    permissions: [alerts:read, alerts:manage, alerts:silence-broad]
  - name: viewer
    permissions: [model:list]
"""

SILENCES = "/admin/alerts/silences"


@pytest.fixture
def admin_sidecar(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> tuple[Sidecar, Path]:
    policy = tmp_path / "admin-policy.yaml"
    policy.write_text(POLICY)
    sc = start_sidecar(
        upstream.url,
        config={
            "rbac": {"policy_file": str(policy)},
            "audit": {"fsync": "always"},
            "alerting": {"evaluation_interval": "1s"},
        },
    )
    return sc, tmp_path / "state" / "audit" / "spool"


def _auth(subject: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(subject, list(roles))}"}


OPERATOR = _auth("op-alice", "operator")
LEAD = _auth("lead-carol", "oncall-lead")
VIEWER = _auth("bob-viewer", "viewer")


def _call(
    sc: Sidecar,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
    request_id: str | None = None,
) -> httpx.Response:
    h = dict(headers or {})
    if request_id:
        h["x-request-id"] = request_id
    return httpx.request(method, sc.url + path, headers=h, json=body, timeout=30)


def _silence_ids(sc: Sidecar) -> set[str]:
    r = _call(sc, "GET", SILENCES, LEAD)
    assert r.status_code == 200, r.text
    return {s["id"] for s in r.json()["silences"]}


def _stored(sc: Sidecar) -> list[dict[str, Any]]:
    path = Path(sc.config["state"]["dir"]) / "alerting" / "silences.json"
    return json.loads(path.read_text())["silences"] if path.exists() else []


def test_silence_create_and_delete_are_audited_with_the_callers_subject(admin_sidecar) -> None:
    sc, spool = admin_sidecar
    r = _call(
        sc,
        "POST",
        SILENCES,
        OPERATOR,
        {"matchers": ['alertname="CustosGPUUtilizationHigh"'], "duration": "1h", "comment": "load test"},
        "adm-create",
    )
    assert r.status_code == 200, r.text
    sid = r.json()["silenceID"]
    rec = wait_record(spool, "adm-create")
    assert rec["user"]["id"] == "op-alice" and rec["user"]["roles"] == ["operator"]
    assert rec["url"]["path"] == SILENCES and rec["http"]["request"]["method"] == "POST"
    assert rec["http"]["response"]["status_code"] == 200 and rec["event"]["outcome"] == "success"

    r = _call(sc, "DELETE", f"{SILENCES}/{sid}", OPERATOR, request_id="adm-delete")
    assert r.status_code == 200 and r.json()["status"]["state"] == "expired"
    rec = wait_record(spool, "adm-delete")
    assert rec["user"]["id"] == "op-alice"
    assert rec["url"]["path"] == f"{SILENCES}/{sid}" and rec["http"]["request"]["method"] == "DELETE"
    assert rec["http"]["response"]["status_code"] == 200


def test_refused_admin_requests_are_audited(admin_sidecar) -> None:
    sc, spool = admin_sidecar
    r = _call(sc, "GET", "/admin/alerts", request_id="adm-no-token")
    assert r.status_code == 401
    rec = wait_record(spool, "adm-no-token")
    assert rec["http"]["response"]["status_code"] == 401 and rec["event"]["outcome"] == "failure"
    assert rec["url"]["path"] == "/admin/alerts" and rec["http"]["request"]["method"] == "GET"
    assert not rec.get("user")

    r = _call(sc, "GET", "/admin/alerts", VIEWER, request_id="adm-viewer-read")
    assert r.status_code == 403 and "alerts:read" in r.json()["error"]["message"]
    rec = wait_record(spool, "adm-viewer-read")
    assert rec["user"]["id"] == "bob-viewer" and rec["http"]["response"]["status_code"] == 403

    body = {"matchers": ['alertname="CustosGPULost"'], "duration": "1h", "comment": "x"}
    r = _call(sc, "POST", SILENCES, VIEWER, body, "adm-viewer-silence")
    assert r.status_code == 403
    rec = wait_record(spool, "adm-viewer-silence")
    assert rec["user"]["id"] == "bob-viewer" and rec["url"]["path"] == SILENCES
    assert rec["http"]["request"]["method"] == "POST" and rec["http"]["response"]["status_code"] == 403
    assert _stored(sc) == []

    # The OpenAPI document is a read like the others: alerts:read, and refusals are audited too.
    r = _call(sc, "GET", "/admin/alerts/openapi.json", request_id="adm-openapi-anon")
    assert r.status_code == 401
    r = _call(sc, "GET", "/admin/alerts/openapi.json", VIEWER, request_id="adm-openapi-viewer")
    assert r.status_code == 403 and "alerts:read" in r.json()["error"]["message"]
    rec = wait_record(spool, "adm-openapi-viewer")
    assert rec["user"]["id"] == "bob-viewer" and rec["http"]["response"]["status_code"] == 403
    r = _call(sc, "GET", "/admin/alerts/openapi.json", OPERATOR)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.") and "/admin/alerts/openapi.json" not in doc["paths"]
    assert set(doc["paths"][SILENCES]) == {"get", "post"}
    assert set(doc["paths"][SILENCES + "/{silence_id}"]) == {"get", "delete"}
    post = doc["paths"][SILENCES]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SilenceRequest"
    }
    assert {"400", "401", "403"} <= set(post["responses"]) and "422" not in post["responses"]
    assert post["responses"]["403"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


def test_created_by_is_the_authenticated_subject_not_the_body(admin_sidecar) -> None:
    sc, _ = admin_sidecar
    r = _call(
        sc,
        "POST",
        SILENCES,
        OPERATOR,
        {
            "matchers": ['alertname="CustosGPUTemperatureHigh"', 'gpu="1"'],
            "duration": "2h",
            "comment": "fan swap",
            "createdBy": "mallory",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["silence"]["createdBy"] == "op-alice"
    listed = _call(sc, "GET", SILENCES, OPERATOR).json()["silences"]
    assert [s["createdBy"] for s in listed] == ["op-alice"]
    assert [s["created_by"] for s in _stored(sc)] == ["op-alice"]
    assert "mallory" not in json.dumps(_stored(sc))


@pytest.mark.parametrize(
    "matchers",
    [
        ['alertname=~".+"'],  # every alert
        ['alertname=~"Custos.*"'],  # every rule's alerts
        ['severity=~"warning|critical"'],  # every rule's alerts
        ['alertname="CustosAuthFailureSpike"'],  # every alert of a security rule
        ['alertname="CustosAuditWriteFailures"'],  # every alert of an audit-trail rule
        ['severity="critical"'],  # covers the audit-trail rules
    ],
)
def test_broad_silences_need_the_broad_permission(admin_sidecar, matchers: list[str]) -> None:
    sc, spool = admin_sidecar
    body = {"matchers": matchers, "duration": "1h", "comment": "quiet please"}
    r = _call(sc, "POST", SILENCES, OPERATOR, body, "adm-broad")
    assert r.status_code == 403, r.text
    message = r.json()["error"]["message"]
    assert "too broad" in message and "alerts:silence-broad" in message
    # Nothing about the policy behind the refusal: no role, no address.
    assert "operator" not in message and "127.0.0.1" not in message
    assert _stored(sc) == [] and _silence_ids(sc) == set()
    rec = wait_record(spool, "adm-broad")
    assert rec["user"]["id"] == "op-alice" and rec["http"]["response"]["status_code"] == 403

    r = _call(sc, "POST", SILENCES, LEAD, body)
    assert r.status_code == 200, r.text
    assert r.json()["silence"]["createdBy"] == "lead-carol"
    assert _silence_ids(sc) == {r.json()["silenceID"]}


def test_narrow_silences_of_security_alerts_stay_allowed(admin_sidecar) -> None:
    sc, _ = admin_sidecar
    body = {
        "matchers": ['alertname="CustosRBACDenialSpike"', 'permission="model:invoke:canary"'],
        "duration": "1h",
        "comment": "canary rollout denies on purpose",
    }
    assert _call(sc, "POST", SILENCES, OPERATOR, body).status_code == 200
    body["matchers"] = ['alertname="CustosRBACDenialSpike"', 'permission=~".+"']
    assert _call(sc, "POST", SILENCES, OPERATOR, body).status_code == 403


def test_silences_longer_than_the_cap_need_the_broad_permission(admin_sidecar) -> None:
    sc, _ = admin_sidecar
    body = {"matchers": ['alertname="CustosGPUMemoryHigh"'], "duration": "30d", "comment": "long"}
    r = _call(sc, "POST", SILENCES, OPERATOR, body)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "at most 7d" in message and "alerts:silence-broad" in message
    body["duration"] = "365d"
    assert _call(sc, "POST", SILENCES, OPERATOR, body).status_code == 400
    body["duration"] = "7d"
    assert _call(sc, "POST", SILENCES, OPERATOR, body).status_code == 200
    body["duration"] = "30d"
    assert _call(sc, "POST", SILENCES, LEAD, body).status_code == 200
    assert len(_stored(sc)) == 2


def test_a_silence_with_a_regex_re2_refuses_is_a_400_naming_the_matcher(admin_sidecar) -> None:
    sc, _ = admin_sidecar
    body = {"matchers": ['alertname=~"(Custos)\\\\1"', 'gpu="0"'], "duration": "1h", "comment": "x"}
    r = _call(sc, "POST", SILENCES, LEAD, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "matchers" and error["code"] == "invalid_request"
    assert "alertname=~" in error["message"] and "backreferences" in error["message"]
    # Alertmanager v2 matcher objects (what amtool sends) go through the same parser.
    body["matchers"] = [{"name": "alertname", "value": "Custos(?=GPU)", "isRegex": True}]
    r = _call(sc, "POST", SILENCES, LEAD, body)
    assert r.status_code == 400 and "lookahead" in r.json()["error"]["message"], r.text
    assert _stored(sc) == []
