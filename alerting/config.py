"""The ``alerting:`` config section: rules, evaluation, routing tree, inhibition, receivers.

Routing, inhibition, receivers and time intervals follow Alertmanager's configuration model (same key
names, same matcher syntax) so on-call teams can bring their existing trees. The defaults serve the
embedded single-machine setup: the built-in rules, evaluated every 15 s over the sidecar's own metrics
and the upstream's /metrics, routed per the seed's on-call table to receivers that log until their
endpoints are configured.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from custos.section import Section

from .matchers import parse_matchers
from .promql import parse_duration


def _check_duration(value: Any) -> Any:
    if value is not None:
        parse_duration(value)
    return value


def _check_matchers(value: list[str]) -> list[str]:
    parse_matchers(value)
    return value


# -- receivers ----------------------------------------------------------------------------------------
class _Integration(Section):
    send_resolved: bool = True
    timeout_s: float = Field(10.0, gt=0)
    # Per-integration template overrides (Jinja2 source); unset = the built-in template of the language.
    title: str | None = None
    message: str | None = None


class WeComConfig(_Integration):
    url: str = Field(
        description="group robot webhook, https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=..."
    )
    mentioned_mobile_list: list[str] = Field(default_factory=list)


class DingTalkConfig(_Integration):
    url: str = Field(description="https://oapi.dingtalk.com/robot/send?access_token=...")
    secret: str | None = Field(None, description="signing secret (SEC...): timestamp+HMAC-SHA256 in the URL")
    at_mobiles: list[str] = Field(default_factory=list)
    at_all: bool = False


class FeishuConfig(_Integration):
    url: str = Field(description="https://open.feishu.cn/open-apis/bot/v2/hook/...")
    secret: str | None = Field(None, description="signature verification secret of the bot")


class EmailConfig(_Integration):
    to: list[str]
    from_: str = Field("custos@localhost", alias="from")
    smarthost: str = Field("127.0.0.1:25", description="host:port of the SMTP server")
    hello: str | None = None
    tls: Literal["starttls", "tls", "none", "auto"] = Field(
        "auto", description="starttls: require STARTTLS; tls: implicit TLS (465); auto: STARTTLS if offered"
    )
    tls_insecure_skip_verify: bool = False
    auth_username: str | None = None
    auth_password: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    subject: str | None = None
    html: str | None = None

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    @field_validator("smarthost")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("must be host:port, e.g. smtp.example.com:587")
        return v


class SMSConfig(_Integration):
    """An HTTP SMS gateway: URL, headers and body are Jinja2 templates (``to``, ``text``, ``data``)."""

    url: str
    method: Literal["POST", "GET", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=lambda: {"Content-Type": "application/json"})
    body: str = '{"to": {{ to | tojson }}, "text": {{ text | tojson }}}'
    to: list[str] = Field(default_factory=list)
    per_recipient: bool = Field(
        True, description="one request per number; false: one request for all ('to' is a list)"
    )
    send_resolved: bool = False
    success_contains: str | None = Field(
        None, description="the response body must contain this to count as sent"
    )


class WebhookConfig(_Integration):
    """Alertmanager's webhook JSON (version 4): existing tooling consumes it unchanged."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token: str | None = None
    max_alerts: int = Field(0, ge=0, description="0: all alerts in the group")


class SlackConfig(_Integration):
    api_url: str = Field(description="incoming webhook URL")
    channel: str | None = None
    username: str = "custos"


class PagerDutyConfig(_Integration):
    routing_key: str
    url: str = "https://events.pagerduty.com/v2/enqueue"
    severity: str = Field(
        "{{ commonLabels.severity | default('error') }}", description="template: critical|error|warning|info"
    )
    client: str = "Custos"


class AlertmanagerConfig(_Integration):
    """Forward the group's alerts to an existing Alertmanager (``POST /api/v2/alerts``)."""

    url: str = Field(description="Alertmanager base URL, e.g. http://alertmanager:9093")
    headers: dict[str, str] = Field(default_factory=dict)


class CommandConfig(_Integration):
    """The audible alarm: runs a local command (e.g. ``paplay alarm.wav``); alert JSON on stdin."""

    command: list[str] = Field(min_length=1, description="argv; each element is a Jinja2 template")
    send_resolved: bool = False
    timeout_s: float = Field(30.0, gt=0)


class ReceiverConfig(Section):
    name: str
    language: Literal["en", "zh"] | None = Field(
        None, description="template language; default alerting.language"
    )
    wecom_configs: list[WeComConfig] = Field(default_factory=list)
    dingtalk_configs: list[DingTalkConfig] = Field(default_factory=list)
    feishu_configs: list[FeishuConfig] = Field(default_factory=list)
    email_configs: list[EmailConfig] = Field(default_factory=list)
    sms_configs: list[SMSConfig] = Field(default_factory=list)
    webhook_configs: list[WebhookConfig] = Field(default_factory=list)
    slack_configs: list[SlackConfig] = Field(default_factory=list)
    pagerduty_configs: list[PagerDutyConfig] = Field(default_factory=list)
    alertmanager_configs: list[AlertmanagerConfig] = Field(default_factory=list)
    command_configs: list[CommandConfig] = Field(default_factory=list)


# -- routing --------------------------------------------------------------------------------------------
class RouteConfig(Section):
    receiver: str | None = Field(None, description="inherited from the parent when unset")
    matchers: list[str] = Field(
        default_factory=list, description='Alertmanager matchers: name="v", name=~"re"'
    )
    group_by: list[str] | None = Field(None, description="['...'] groups by all labels")
    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None
    continue_: bool = Field(False, alias="continue")
    mute_time_intervals: list[str] = Field(default_factory=list)
    active_time_intervals: list[str] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    @field_validator("group_wait", "group_interval", "repeat_interval")
    @classmethod
    def _durations(cls, v: Any) -> Any:
        return _check_duration(v)

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        return _check_matchers(v)


class InhibitRuleConfig(Section):
    source_matchers: list[str] = Field(min_length=1)
    target_matchers: list[str] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        return _check_matchers(v)


_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


class TimeRangeConfig(Section):
    start_time: str
    end_time: str

    @field_validator("start_time", "end_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v) or (v.startswith("24") and v != "24:00"):
            raise ValueError("must be HH:MM between 00:00 and 24:00")
        return v


class TimeIntervalSpec(Section):
    times: list[TimeRangeConfig] = Field(default_factory=list)
    weekdays: list[str] = Field(default_factory=list, description="e.g. monday:friday, saturday")
    days_of_month: list[str] = Field(default_factory=list, description="e.g. 1:5, -1 (last day)")
    months: list[str] = Field(default_factory=list, description="e.g. january:march, 12")
    years: list[str] = Field(default_factory=list, description="e.g. 2026:2027")
    location: str = "UTC"

    @model_validator(mode="after")
    def _parse(self) -> TimeIntervalSpec:
        from .timeintervals import compile_spec

        compile_spec(self)
        return self


class TimeIntervalConfig(Section):
    name: str
    time_intervals: list[TimeIntervalSpec]


# -- sources, admin, retries ---------------------------------------------------------------------------------
class ScrapeTargetConfig(Section):
    job: str
    url: str = Field(description="a /metrics URL of a local process")


class PrometheusSourceConfig(Section):
    url: str | None = Field(None, description="Prometheus base URL for groups with 'source: prometheus'")
    timeout_s: float = Field(10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


class RetryConfig(Section):
    max_attempts: int = Field(5, ge=1, le=100)
    initial_backoff_s: float = Field(1.0, gt=0)
    max_backoff_s: float = Field(60.0, gt=0)


class AdminConfig(Section):
    enabled: bool = True
    token: str | None = Field(
        None, description="bearer token for /admin/alerts when no identity stage is configured"
    )
    read_permission: str = "alerts:read"
    manage_permission: str = "alerts:manage"
    broad_silence_permission: str = Field(
        "alerts:silence-broad",
        description="also needed (with manage_permission) for a silence that matches every alert, "
        "covers every alert of a protected rule, or lasts longer than max_silence_duration",
    )
    protected_alerts: list[str] = Field(
        default_factory=lambda: ['team=~"security|compliance"'],
        description="matchers for the rules whose alerts only broad_silence_permission may silence "
        "wholesale (built in: the security and audit-trail rules)",
    )
    max_silence_duration: str | None = Field(
        "7d", description="longest silence without broad_silence_permission; null: no cap"
    )

    @field_validator("protected_alerts")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        return _check_matchers(v)

    @field_validator("max_silence_duration")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return _check_duration(v)


def _default_route() -> RouteConfig:
    return RouteConfig.model_validate(
        {
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                # The seed's on-call table.
                {
                    "matchers": ['alertname="CustosGPUUtilizationHigh"'],
                    "receiver": "wecom",
                    "group_by": ["alertname", "gpu"],
                },
                {"matchers": ['alertname="CustosInferenceLatencyHigh"'], "receiver": "email-audible"},
                {"matchers": ['alertname="CustosErrorRateHigh"'], "receiver": "sms"},
            ],
        }
    )


def _default_inhibit() -> list[InhibitRuleConfig]:
    return [
        InhibitRuleConfig(
            source_matchers=['alertname="CustosGPULost"'],
            target_matchers=[
                'alertname=~"CustosGPU(UtilizationHigh|TemperatureHigh|MemoryHigh|ECCErrors|XIDErrors)"'
            ],
            equal=["gpu"],
        ),
        InhibitRuleConfig(
            source_matchers=['alertname="CustosUpstreamDown"'],
            target_matchers=['alertname=~"CustosInferenceLatencyHigh|CustosErrorRateHigh"'],
        ),
        InhibitRuleConfig(
            source_matchers=['severity="critical"'],
            target_matchers=['severity="warning"'],
            equal=["alertname", "gpu"],
        ),
    ]


def _default_receivers() -> list[ReceiverConfig]:
    # No endpoints are known out of the box: these receivers log each notification until configured.
    return [ReceiverConfig(name=n) for n in ("default", "wecom", "email-audible", "sms")]


class AlertingConfig(Section):
    enabled: bool = True
    rules: list[str] = Field(
        default_factory=list, description="rule files, dirs or globs; empty: built-in rules"
    )
    evaluation_interval: str = "15s"
    scrape_upstream: bool = Field(
        True, description="also read the upstream's /metrics (vLLM or the CPU engine)"
    )
    scrape_targets: list[ScrapeTargetConfig] = Field(default_factory=list)
    external_labels: dict[str, str] = Field(default_factory=dict)
    external_url: str = Field("", description="link base for notifications (e.g. the Grafana/sidecar URL)")
    language: Literal["en", "zh"] = "en"
    timezone: str = Field("UTC", description="time zone of times in notifications, e.g. Asia/Shanghai")
    templates: list[str] = Field(
        default_factory=list, description="dirs whose <lang>/*.j2 override the built-ins"
    )
    resolved_retention: str = Field(
        "15m", description="how long resolved alerts stay visible and are re-sent"
    )
    prometheus: PrometheusSourceConfig = Field(default_factory=PrometheusSourceConfig)
    route: RouteConfig = Field(default_factory=_default_route)
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=_default_inhibit)
    receivers: list[ReceiverConfig] = Field(default_factory=_default_receivers)
    time_intervals: list[TimeIntervalConfig] = Field(default_factory=list)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a known time zone (e.g. UTC, Asia/Shanghai)") from None
        return v

    @field_validator("evaluation_interval", "resolved_retention")
    @classmethod
    def _durations(cls, v: Any) -> Any:
        return _check_duration(v)

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"receiver names must be unique: {sorted(dupes)}")
        intervals = {t.name for t in self.time_intervals}
        if self.route.receiver is None:
            raise ValueError("route.receiver: the root route needs a receiver")

        def walk(route: RouteConfig, path: str) -> None:
            if route.receiver is not None and route.receiver not in names:
                raise ValueError(f"{path}.receiver: no receiver named {route.receiver!r} (have: {names})")
            for name in [*route.mute_time_intervals, *route.active_time_intervals]:
                if name not in intervals:
                    raise ValueError(f"{path}: no time interval named {name!r} in time_intervals")
            for i, child in enumerate(route.routes):
                walk(child, f"{path}.routes.{i}")

        walk(self.route, "route")
        if self.enabled:
            from .rules import load_rule_files

            load_rule_files(self.rules or None)  # a RuleError (ValueError): each file's own problems
        return self
