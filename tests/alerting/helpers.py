"""Small builders shared by the alerting tests."""

from __future__ import annotations

from typing import Any

from alerting.config import AlertingConfig
from alerting.dispatch import Notification
from alerting.model import Alert

T0 = 1_767_258_000.0  # 2026-01-01T09:00:00Z


def config(**sections: Any) -> AlertingConfig:
    base: dict[str, Any] = {"retry": {"max_attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.2}}
    base.update(sections)
    return AlertingConfig.model_validate(base)


def alert(
    name: str = "CustosGPUUtilizationHigh", *, at: float = T0, ends: float | None = None, **labels: str
) -> Alert:
    lb = {"alertname": name, "severity": "warning", **labels}
    return Alert(
        lb,
        {
            "summary": f"{name} summary {labels.get('gpu', '')}".strip(),
            "description": "something is wrong",
            "runbook_url": "https://runbooks.example/x",
        },
        starts_at=at,
        ends_at=ends,
        value=0.97,
    )


def note(
    alerts: list[Alert], receiver: str = "r", *, at: float = T0 + 60, status: str | None = None
) -> Notification:
    firing = any(not a.resolved(at) for a in alerts)
    return Notification(
        receiver,
        "test/0",
        '{}:{alertname="X"}',
        status or ("firing" if firing else "resolved"),
        alerts,
        {"alertname": alerts[0].name},
        at,
    )
