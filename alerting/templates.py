"""Notification templates (Jinja2), built-in in English and Chinese, overridable per file or inline.

Template context is Alertmanager's notification data (``status``, ``alerts``, ``groupLabels``,
``commonLabels``, ``commonAnnotations``, ``externalURL``, ``receiver``) plus ``firing``/``resolved``
lists, the rendered ``title`` and ``lang``. A directory in ``alerting.templates`` with
``<lang>/<name>.j2`` files overrides the built-in template of that name.

Besides Jinja2's filters (``urlencode``, ``default``, ...): ``tojson``, ``b64encode``, ``when``,
``labels_inline``, and for gateways that sign requests the globals ``now()``, ``now_ms()``,
``uuid4()``, ``sha256(msg)`` and ``hmac_sha256(key, msg, "hex"|"base64")``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import orjson
from jinja2.sandbox import SandboxedEnvironment

from .model import parse_iso

BUILTIN_DIR = Path(__file__).parent / "templates"
NAMES = ("title", "markdown", "text", "sms", "email_subject", "email.html")

WORDS = {
    "en": {
        "firing": "FIRING",
        "resolved": "RESOLVED",
        "summary": "Summary",
        "description": "Description",
        "labels": "Labels",
        "started": "Started",
        "ended": "Resolved",
        "runbook": "Runbook",
        "footer": "Sent by Custos alerting",
    },
    "zh": {
        "firing": "告警",
        "resolved": "已恢复",
        "summary": "摘要",
        "description": "详情",
        "labels": "标签",
        "started": "开始时间",
        "ended": "恢复时间",
        "runbook": "处理手册",
        "footer": "由 Custos 告警发送",
    },
}
_SEVERITY_ZH = {"critical": "严重", "warning": "警告", "info": "提示", "page": "紧急"}


def _hmac_sha256(key: str, msg: str, encoding: str = "hex") -> str:
    digest = hmac.new(str(key).encode(), str(msg).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode() if encoding == "base64" else digest.hex()


class Templates:
    def __init__(self, dirs: list[str] | None = None, *, timezone: str = "UTC") -> None:
        loaders = [jinja2.FileSystemLoader(str(Path(d).expanduser())) for d in dirs or []]
        loaders.append(jinja2.FileSystemLoader(str(BUILTIN_DIR)))
        # Sandboxed: inline templates come from config files, which should not reach Python internals.
        self.env = SandboxedEnvironment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.zone = ZoneInfo(timezone)
        self.env.filters["when"] = self._when
        self.env.filters["labels_inline"] = lambda labels: ", ".join(
            f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname"
        )
        self.env.filters["severity_zh"] = lambda s: _SEVERITY_ZH.get(str(s), str(s))
        self.env.filters["tojson"] = lambda v: orjson.dumps(v).decode()
        self.env.filters["b64encode"] = lambda v: base64.b64encode(str(v).encode()).decode()
        # For HTTP gateways that sign requests (SMS): timestamps, nonces and HMACs in templates.
        self.env.globals.update(
            now=lambda: int(time.time()),
            now_ms=lambda: int(time.time() * 1000),
            uuid4=lambda: uuid.uuid4().hex,
            sha256=lambda msg: hashlib.sha256(str(msg).encode()).hexdigest(),
            hmac_sha256=_hmac_sha256,
        )
        self._inline: dict[str, jinja2.Template] = {}

    def _when(self, value: str) -> str:
        try:
            ts = parse_iso(value)
        except (TypeError, ValueError):
            return str(value)
        if ts < 0:
            return ""
        return datetime.fromtimestamp(ts, self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    def render(self, name: str, lang: str, data: dict[str, Any]) -> str:
        template = self.env.get_template(f"{lang}/{name}.j2")
        return template.render(**data, lang=lang, t=WORDS.get(lang, WORDS["en"])).strip()

    def render_string(self, source: str, data: dict[str, Any], lang: str = "en") -> str:
        template = self._inline.get(source)
        if template is None:
            template = self.env.from_string(source)
            self._inline[source] = template
        return template.render(**data, lang=lang, t=WORDS.get(lang, WORDS["en"])).strip()

    def check(self) -> None:
        """Compile every template once (startup fails early on a broken override)."""
        for lang in WORDS:
            for name in NAMES:
                self.env.get_template(f"{lang}/{name}.j2")
