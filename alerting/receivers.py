"""Receivers and their integrations: WeCom, DingTalk, Feishu, e-mail, SMS, webhook, Slack, PagerDuty,
Alertmanager and the audible alarm (a local command).

Each integration turns one ``Notification`` into one message. ``Notifier.send`` adds what all share:
retries with exponential backoff and jitter (4xx answers other than 408/429 are not retried), a metric
and a log line per failure, and never an exception to the caller.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import ssl
import time
import urllib.parse
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiohttp
import orjson

from .config import AlertingConfig, ReceiverConfig
from .dispatch import Notification
from .metrics import NOTIFICATION_FAILURES, NOTIFICATION_RETRIES, NOTIFICATIONS
from .model import iso
from .templates import Templates

log = logging.getLogger("custos.alerting.notify")

USER_AGENT = "Custos-Alerting/1.0"


class NotifyError(Exception):
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def notification_data(note: Notification, *, external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook/template data for one notification."""
    alerts = [a.to_json(note.at) for a in note.alerts]
    for doc, alert in zip(alerts, note.alerts, strict=True):
        doc["value"] = alert.value
    common_labels = _common([a["labels"] for a in alerts])
    common_annotations = _common([a["annotations"] for a in alerts])
    return {
        "version": "4",
        "groupKey": note.group_key,
        "truncatedAlerts": 0,
        "status": note.status,
        "receiver": note.receiver,
        "groupLabels": dict(note.group_labels),
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external_url,
        "alerts": alerts,
        "firing": [a for a in alerts if a["status"] == "firing"],
        "resolved": [a for a in alerts if a["status"] == "resolved"],
    }


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


class Integration:
    kind = "integration"
    always_send = False  # skip dedup (Alertmanager forwarding refreshes endsAt every group_interval)

    def __init__(self, notifier: Notifier, receiver: ReceiverConfig, cfg: Any, index: int) -> None:
        self.notifier = notifier
        self.receiver = receiver
        self.cfg = cfg
        self.name = f"{self.kind}/{index}"
        self.send_resolved = getattr(cfg, "send_resolved", True)
        self.lang = receiver.language or notifier.config.language

    # -- helpers shared by the HTTP integrations --------------------------------------------------
    def render(self, name: str, data: dict[str, Any], inline: str | None = None) -> str:
        if inline:
            return self.notifier.templates.render_string(inline, data, self.lang)
        return self.notifier.templates.render(name, self.lang, data)

    def context(self, note: Notification) -> dict[str, Any]:
        data = notification_data(note, external_url=self.notifier.config.external_url)
        data["title"] = self.render("title", data, getattr(self.cfg, "title", None))
        return data

    async def post_json(self, url: str, body: Any, headers: dict[str, str] | None = None) -> bytes:
        return await self.request(
            "POST", url, orjson.dumps(body), {"Content-Type": "application/json", **(headers or {})}
        )

    async def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        session = await self.notifier.session()
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        try:
            async with session.request(method, url, data=body, headers=headers, timeout=timeout) as resp:
                text = await resp.read()
                if resp.status >= 400:
                    retry = resp.status >= 500 or resp.status in (408, 429)
                    raise NotifyError(f"HTTP {resp.status}: {text[:200]!r}", retryable=retry)
                return text
        except aiohttp.ClientError as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise NotifyError(f"no answer within {self.cfg.timeout_s}s") from None

    async def send(self, note: Notification) -> None:
        raise NotImplementedError


def _check_errcode(body: bytes, *keys: str) -> None:
    """WeCom/DingTalk/Feishu answer HTTP 200 with an error code in the body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(doc, dict):
        return
    for key in keys:
        code = doc.get(key)
        if code not in (None, 0):
            msg = doc.get("errmsg") or doc.get("msg") or doc.get("StatusMessage") or ""
            # Rate limits (WeCom 45009, DingTalk 130101, Feishu 9499/11232) are worth a retry.
            retry = code in (45009, 130101, 9499, 11232, -1)
            raise NotifyError(f"{key}={code}: {msg}", retryable=retry)


def _truncate_bytes(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 4].decode(errors="ignore") + "\n..."


class WeCom(Integration):
    kind = "wecom"

    async def send(self, note: Notification) -> None:
        data = self.context(note)
        content = _truncate_bytes(self.render("markdown", data, self.cfg.message), 4096)
        body = await self.post_json(self.cfg.url, {"msgtype": "markdown", "markdown": {"content": content}})
        _check_errcode(body, "errcode")
        if self.cfg.mentioned_mobile_list:
            # WeCom markdown cannot @-mention by phone number; a short text message does.
            text = {"content": data["title"], "mentioned_mobile_list": self.cfg.mentioned_mobile_list}
            _check_errcode(await self.post_json(self.cfg.url, {"msgtype": "text", "text": text}), "errcode")


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot signature: base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}"))."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class DingTalk(Integration):
    kind = "dingtalk"

    async def send(self, note: Notification) -> None:
        data = self.context(note)
        text = _truncate_bytes(self.render("markdown", data, self.cfg.message), 20000)
        if self.cfg.at_mobiles:
            text += "\n\n" + " ".join(f"@{m}" for m in self.cfg.at_mobiles)
        url = self.cfg.url
        if self.cfg.secret:
            ts = int(time.time() * 1000)
            sign = urllib.parse.quote_plus(dingtalk_sign(self.cfg.secret, ts))
            url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={sign}"
        body = {
            "msgtype": "markdown",
            "markdown": {"title": data["title"][:64], "text": text},
            "at": {"atMobiles": self.cfg.at_mobiles, "isAtAll": self.cfg.at_all},
        }
        _check_errcode(await self.post_json(url, body), "errcode")


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu/Lark bot signature: base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=""))."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Feishu(Integration):
    kind = "feishu"

    async def send(self, note: Notification) -> None:
        data = self.context(note)
        text = _truncate_bytes(self.render("markdown", data, self.cfg.message), 28000)
        # Feishu's lark_md has no "###" headings: the title goes into the card header.
        text = "\n".join(line for line in text.splitlines() if not line.startswith("### "))
        body: dict[str, Any] = {
            "msg_type": "interactive",
            "card": {
                "header": {
                    "title": {"tag": "plain_text", "content": data["title"]},
                    "template": "red" if note.status == "firing" else "green",
                },
                "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": text}}],
            },
        }
        if self.cfg.secret:
            ts = int(time.time())
            body = {"timestamp": str(ts), "sign": feishu_sign(self.cfg.secret, ts), **body}
        _check_errcode(await self.post_json(self.cfg.url, body), "code", "StatusCode")


class Email(Integration):
    kind = "email"

    async def send(self, note: Notification) -> None:
        import aiosmtplib

        data = self.context(note)
        msg = EmailMessage()
        msg["Subject"] = self.render("email_subject", data, self.cfg.subject).replace("\n", " ")
        msg["From"] = self.cfg.from_
        msg["To"] = ", ".join(self.cfg.to)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-Id"] = make_msgid(domain="custos.local")
        msg["X-Custos-Alert-Status"] = note.status
        for key, value in self.cfg.headers.items():
            msg[key] = value
        msg.set_content(self.render("text", data, self.cfg.message))
        msg.add_alternative(self.render("email.html", data, self.cfg.html), subtype="html")
        host, _, port = self.cfg.smarthost.rpartition(":")
        context = ssl.create_default_context()
        if self.cfg.tls_insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        mode = self.cfg.tls
        try:
            await aiosmtplib.send(
                msg,
                hostname=host,
                port=int(port),
                username=self.cfg.auth_username,
                password=self.cfg.auth_password,
                use_tls=mode == "tls",
                start_tls=True if mode == "starttls" else (False if mode in ("none", "tls") else None),
                tls_context=context,
                local_hostname=self.cfg.hello,
                timeout=self.cfg.timeout_s,
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise NotifyError(
                f"SMTP {exc.code}: {exc.message}", retryable=exc.code < 500 or exc.code >= 600
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}") from None


class SMS(Integration):
    kind = "sms"

    async def send(self, note: Notification) -> None:
        data = self.context(note)
        text = self.render("sms", data, self.cfg.message)
        batches = [[n] for n in self.cfg.to] if self.cfg.per_recipient else [list(self.cfg.to)]
        if not batches:
            raise NotifyError("sms: no recipients in 'to'", retryable=False)
        ts = self.notifier.templates
        for batch in batches:
            to: Any = batch[0] if self.cfg.per_recipient else batch
            ctx = {**data, "to": to, "text": text, "data": data}
            url = ts.render_string(
                self.cfg.url,
                {
                    **ctx,
                    "to": urllib.parse.quote(str(to)) if isinstance(to, str) else to,
                    "text_urlencoded": urllib.parse.quote(text),
                },
                self.lang,
            )
            headers = {k: ts.render_string(v, ctx, self.lang) for k, v in self.cfg.headers.items()}
            body = (
                ts.render_string(self.cfg.body, ctx, self.lang).encode() if self.cfg.method != "GET" else None
            )
            answer = await self.request(self.cfg.method, url, body, {"User-Agent": USER_AGENT, **headers})
            if self.cfg.success_contains and self.cfg.success_contains.encode() not in answer:
                raise NotifyError(f"gateway answer lacks {self.cfg.success_contains!r}: {answer[:200]!r}")


class Webhook(Integration):
    kind = "webhook"

    async def send(self, note: Notification) -> None:
        data = notification_data(note, external_url=self.notifier.config.external_url)
        data.pop("firing")
        data.pop("resolved")
        if self.cfg.max_alerts and len(data["alerts"]) > self.cfg.max_alerts:
            data["truncatedAlerts"] = len(data["alerts"]) - self.cfg.max_alerts
            data["alerts"] = data["alerts"][: self.cfg.max_alerts]
        for doc in data["alerts"]:
            doc.pop("value", None)
        headers = dict(self.cfg.headers)
        if self.cfg.bearer_token:
            headers["Authorization"] = f"Bearer {self.cfg.bearer_token}"
        await self.post_json(self.cfg.url, data, {"User-Agent": USER_AGENT, **headers})


class Slack(Integration):
    kind = "slack"

    async def send(self, note: Notification) -> None:
        data = self.context(note)
        text = self.render("text", data, self.cfg.message)
        body: dict[str, Any] = {
            "username": self.cfg.username,
            "text": data["title"],
            "attachments": [
                {
                    "color": "danger" if note.status == "firing" else "good",
                    "title": data["title"],
                    "text": text,
                    "fallback": data["title"],
                    "mrkdwn_in": ["text"],
                }
            ],
        }
        if self.cfg.channel:
            body["channel"] = self.cfg.channel
        await self.post_json(self.cfg.api_url, body)


class PagerDuty(Integration):
    kind = "pagerduty"

    async def send(self, note: Notification) -> None:
        data = self.context(note)
        severity = self.notifier.templates.render_string(self.cfg.severity, data, self.lang) or "error"
        if severity not in ("critical", "error", "warning", "info"):
            severity = "error"
        body: dict[str, Any] = {
            "routing_key": self.cfg.routing_key,
            "event_action": "trigger" if note.status == "firing" else "resolve",
            "dedup_key": hashlib.sha256(note.group_key.encode()).hexdigest(),
            "client": self.cfg.client,
        }
        if self.notifier.config.external_url:
            body["client_url"] = self.notifier.config.external_url
        if note.status == "firing":
            body["payload"] = {
                "summary": data["title"][:1024],
                "source": data["commonLabels"].get("instance", "custos"),
                "severity": severity,
                "custom_details": {
                    "firing": self.render("text", data, self.cfg.message),
                    "num_firing": len(data["firing"]),
                    "num_resolved": len(data["resolved"]),
                },
            }
        await self.post_json(self.cfg.url, body)


class AlertmanagerForward(Integration):
    kind = "alertmanager"
    always_send = True

    async def send(self, note: Notification) -> None:
        # Firing alerts carry an endsAt a few group intervals ahead: Alertmanager resolves them by
        # itself if this sidecar dies, and every flush (group_interval) pushes it further.
        horizon = note.at + max(3 * note.group_interval, 300.0)
        body = [
            {
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": iso(a.starts_at),
                "endsAt": iso(a.ends_at if a.ends_at is not None else horizon),
                "generatorURL": a.generator_url or None,
            }
            for a in note.alerts
        ]
        for doc in body:
            if doc["generatorURL"] is None:
                del doc["generatorURL"]
        await self.post_json(self.cfg.url.rstrip("/") + "/api/v2/alerts", body, dict(self.cfg.headers))


class Command(Integration):
    kind = "command"

    async def send(self, note: Notification) -> None:
        data = self.context(note)
        ts = self.notifier.templates
        argv = [ts.render_string(arg, data, self.lang) if "{" in arg else arg for arg in self.cfg.command]
        env = {
            "CUSTOS_ALERT_STATUS": note.status,
            "CUSTOS_ALERT_RECEIVER": note.receiver,
            "CUSTOS_ALERT_COUNT": str(len(note.alerts)),
            "CUSTOS_ALERT_NAMES": ",".join(sorted({a.name for a in note.alerts})),
            "CUSTOS_ALERT_TITLE": data["title"],
        }
        import os

        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **env},
                start_new_session=True,
            )
        except OSError as exc:
            raise NotifyError(f"cannot run {argv[0]!r}: {exc.strerror}", retryable=False) from None
        payload = notification_data(note, external_url=self.notifier.config.external_url)
        try:
            _, err = await asyncio.wait_for(proc.communicate(orjson.dumps(payload)), self.cfg.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NotifyError(f"{argv[0]} did not finish within {self.cfg.timeout_s}s") from None
        if proc.returncode != 0:
            raise NotifyError(
                f"{argv[0]} exited with {proc.returncode}: {err.decode(errors='replace')[-200:]}"
            )


class LogOnly(Integration):
    """A receiver with no integrations configured still leaves a trace of every notification."""

    kind = "log"

    async def send(self, note: Notification) -> None:
        names = ", ".join(sorted({a.name for a in note.alerts}))
        log.warning(
            "receiver %s has no integrations configured; %s notification for %s (%d alerts) logged only",
            note.receiver,
            note.status,
            names,
            len(note.alerts),
        )


KINDS: list[tuple[str, type[Integration]]] = [
    ("wecom_configs", WeCom),
    ("dingtalk_configs", DingTalk),
    ("feishu_configs", Feishu),
    ("email_configs", Email),
    ("sms_configs", SMS),
    ("webhook_configs", Webhook),
    ("slack_configs", Slack),
    ("pagerduty_configs", PagerDuty),
    ("alertmanager_configs", AlertmanagerForward),
    ("command_configs", Command),
]


class Notifier:
    def __init__(self, config: AlertingConfig, templates: Templates | None = None) -> None:
        self.config = config
        self.templates = templates or Templates(config.templates, timezone=config.timezone)
        self.retry = config.retry
        self._session: aiohttp.ClientSession | None = None
        self._integrations: dict[str, list[Integration]] = {}
        for receiver in config.receivers:
            found: list[Integration] = []
            for attr, cls in KINDS:
                for i, cfg in enumerate(getattr(receiver, attr)):
                    found.append(cls(self, receiver, cfg, i))
            if not found:
                found.append(LogOnly(self, receiver, None, 0))
            self._integrations[receiver.name] = found

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session

    def integrations(self, receiver: str) -> list[Integration]:
        return self._integrations.get(receiver, [])

    async def send(self, integration: Integration, note: Notification) -> bool:
        labels = (note.receiver, integration.kind)
        delay = self.retry.initial_backoff_s
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                await integration.send(note)
            except NotifyError as exc:
                error, retryable = str(exc), exc.retryable
            except Exception as exc:  # a bug in one integration must not stop the others
                log.exception("integration %s of receiver %s crashed", integration.name, note.receiver)
                error, retryable = f"{type(exc).__name__}: {exc}", False
            else:
                NOTIFICATIONS.labels(*labels).inc()
                log.info(
                    "notified %s via %s: %s %s (%d alerts)",
                    note.receiver,
                    integration.name,
                    note.status,
                    ",".join(sorted({a.name for a in note.alerts})),
                    len(note.alerts),
                )
                return True
            if not retryable or attempt == self.retry.max_attempts:
                NOTIFICATION_FAILURES.labels(*labels).inc()
                log.error(
                    "notification to %s via %s failed after %d attempt(s): %s",
                    note.receiver,
                    integration.name,
                    attempt,
                    error,
                )
                return False
            NOTIFICATION_RETRIES.labels(*labels).inc()
            log.warning(
                "notification to %s via %s failed (attempt %d/%d), retrying in %.1fs: %s",
                note.receiver,
                integration.name,
                attempt,
                self.retry.max_attempts,
                delay,
                error,
            )
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.retry.max_backoff_s)
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def send_test(notifier: Notifier, receiver: str, *, status: str = "firing") -> dict[str, bool]:
    """Send a synthetic alert to every integration of ``receiver`` (checking a new WeCom key, SMTP
    password, ...). Returns integration name -> delivered."""
    from .dispatch import Notification
    from .model import Alert

    now = time.time()
    alert = Alert(
        {"alertname": "CustosTestNotification", "severity": "info", "receiver": receiver},
        {
            "summary": f"Test notification for receiver {receiver} (Custos alerting)",
            "description": "Sent by `custos alerts send-test` or the admin API; no action needed.",
        },
        starts_at=now - 60,
        ends_at=now - 1 if status == "resolved" else None,
    )
    note = Notification(receiver, "test", f"test:{receiver}", status, [alert], {"alertname": alert.name}, now)
    return {i.name: await notifier.send(i, note) for i in notifier.integrations(receiver)}
