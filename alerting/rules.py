"""Alert rule files: the Prometheus rule-file format, loaded, checked and exported.

A rule file is a Prometheus rule file (``groups: [{name, interval, rules: [...]}]``) so the same text
runs in-process and in Prometheus. One Custos extension: a group may say ``source: prometheus`` to be
evaluated by a Prometheus server's HTTP API instead of the in-process store (fleet-wide views); the
export drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from custos.yamlfile import FileError, Loc, Problem, YamlDocument, parse_yaml, read_yaml

from . import gotemplate, promql

DEFAULT_RULES_DIR = Path(__file__).parent / "rules"
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class RuleError(FileError):
    """Problems in rule files, one ``file:line:col: field: problem`` line each."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _duration(value: Any) -> str:
    promql.parse_duration(value)
    return str(value) if not isinstance(value, int | float) else promql.format_duration(float(value))


class RuleModel(_Strict):
    alert: str | None = None
    record: str | None = None
    expr: str
    for_: str = Field("0s", alias="for")
    keep_firing_for: str = "0s"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("for_", "keep_firing_for", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> str:
        return _duration(v)

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): str(val) for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _kind(self) -> RuleModel:
        if (self.alert is None) == (self.record is None):
            raise ValueError("a rule needs exactly one of 'alert' or 'record'")
        if self.alert is not None and not _NAME_RE.match(self.alert):
            raise ValueError(f"alert name {self.alert!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        if self.record is not None:
            if not _METRIC_RE.match(self.record):
                raise ValueError(f"record name {self.record!r} is not a valid metric name")
            if self.annotations or self.for_ != "0s" or self.keep_firing_for != "0s":
                raise ValueError("recording rules take no annotations, for or keep_firing_for")
        for name in self.labels:
            if not _NAME_RE.match(name) or name.startswith("__"):
                raise ValueError(f"label name {name!r} is invalid")
        return self


class GroupModel(_Strict):
    name: str
    interval: str | None = None
    limit: int = Field(0, ge=0)
    source: Literal["local", "prometheus"] = "local"
    rules: list[RuleModel] = Field(default_factory=list)

    @field_validator("interval", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> Any:
        return None if v is None else _duration(v)


class RuleFileModel(_Strict):
    groups: list[GroupModel] = Field(default_factory=list)


@dataclass(slots=True)
class Rule:
    name: str  # alert or record name
    kind: Literal["alert", "record"]
    expr: str
    node: Any
    for_s: float
    keep_firing_for_s: float
    labels: dict[str, str]
    annotations: dict[str, str]
    group: str
    source_file: str
    id: str = ""  # unique in the group: the name, or name#2, #3 for repeated names (severity tiers)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.name, "expr": self.expr}
        if self.for_s:
            out["for"] = promql.format_duration(self.for_s)
        if self.keep_firing_for_s:
            out["keep_firing_for"] = promql.format_duration(self.keep_firing_for_s)
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(slots=True)
class Group:
    name: str
    interval_s: float | None
    source: str
    limit: int
    rules: list[Rule] = field(default_factory=list)
    source_file: str = ""

    def to_dict(self, *, prometheus: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.interval_s:
            out["interval"] = promql.format_duration(self.interval_s)
        if self.limit:
            out["limit"] = self.limit
        if not prometheus and self.source != "local":
            out["source"] = self.source
        out["rules"] = [r.to_dict() for r in self.rules]
        return out


def parse_rules(text: str, source: str = "<rules>") -> list[Group]:
    """Parse and check one rule file; ``RuleError`` lists every problem found."""
    return _groups(parse_yaml(text, source, error=RuleError))


def _groups(doc: YamlDocument) -> list[Group]:
    model = doc.validate(RuleFileModel)
    problems: list[Problem] = []
    groups: list[Group] = []
    seen_groups: set[str] = set()
    for gi, g in enumerate(model.groups):
        if g.name in seen_groups:
            problems.append(doc.problem(("groups", gi, "name"), f"duplicate group name {g.name!r}"))
        seen_groups.add(g.name)
        group = Group(
            name=g.name,
            interval_s=promql.parse_duration(g.interval) if g.interval else None,
            source=g.source,
            limit=g.limit,
            source_file=doc.source,
        )
        for ri, r in enumerate(g.rules):
            node, found = _checked_rule(doc, ("groups", gi, "rules", ri), r, g.source)
            problems += found
            group.rules.append(
                Rule(
                    name=r.alert or r.record or "?",
                    kind="alert" if r.alert else "record",
                    expr=r.expr,
                    node=node,
                    for_s=promql.parse_duration(r.for_),
                    keep_firing_for_s=promql.parse_duration(r.keep_firing_for),
                    labels=dict(r.labels),
                    annotations=dict(r.annotations),
                    group=g.name,
                    source_file=doc.source,
                )
            )
        seen_names: dict[str, int] = {}
        for rule in group.rules:
            n = seen_names[rule.name] = seen_names.get(rule.name, 0) + 1
            rule.id = rule.name if n == 1 else f"{rule.name}#{n}"
        groups.append(group)
    doc.fail(problems)
    return groups


def _checked_rule(doc: YamlDocument, at: Loc, rule: RuleModel, source: str) -> tuple[Any, list[Problem]]:
    """The parsed expression (evaluated here: ``source: local``), and the problems the models cannot
    see: in the expression and in the templates."""
    problems: list[Problem] = []
    node = None
    if source == "local":
        try:
            node = promql.parse(rule.expr)
        except promql.PromQLError as exc:
            problems.append(doc.problem((*at, "expr"), str(exc)))
    for section, texts in (("labels", rule.labels), ("annotations", rule.annotations)):
        for key, text in texts.items():
            try:
                gotemplate.check(text)
            except gotemplate.TemplateError as exc:
                problems.append(doc.problem((*at, section, key), str(exc)))
    return node, problems


def default_rule_files() -> list[Path]:
    return sorted(DEFAULT_RULES_DIR.glob("*.yaml"))


def resolve_rule_files(paths: list[Path] | list[str] | None = None) -> list[Path]:
    """Files named by ``paths`` (globs allowed; directories mean their *.yaml); defaults when empty."""
    files: list[Path] = []
    for p in paths or default_rule_files():
        path = Path(p).expanduser()
        if any(ch in str(p) for ch in "*?["):
            matched = (
                sorted(Path().glob(str(p)))
                if not path.is_absolute()
                else sorted(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            )
            files.extend(matched)
        elif path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    return files


def signature(paths: list[Path] | list[str] | None = None) -> tuple[tuple[str, int, int], ...]:
    """What changes when a rule file is edited, added or removed (for reloading)."""
    out = []
    for f in resolve_rule_files(paths):
        try:
            st = f.stat()
            out.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(f), -1, -1))
    return tuple(out)


def load_rule_files(paths: list[Path] | list[str] | None = None) -> list[Group]:
    """Load and check rule files (see ``resolve_rule_files``); ``RuleError`` lists every problem."""
    groups: list[Group] = []
    names: dict[str, str] = {}
    for f in resolve_rule_files(paths):
        doc = read_yaml(f, what="rule file", error=RuleError)
        problems: list[Problem] = []
        for i, g in enumerate(_groups(doc)):
            if g.name in names:
                message = f"group {g.name!r} is also defined in {names[g.name]}"
                problems.append(doc.problem(("groups", i, "name"), message))
            names.setdefault(g.name, doc.source)
            groups.append(g)
        doc.fail(problems)
    return groups


def export(
    groups: list[Group],
    fmt: str = "prometheus",
    *,
    name: str = "custos-alerts",
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """Render groups as a Prometheus rule file or a Prometheus Operator ``PrometheusRule``."""
    body = {"groups": [g.to_dict(prometheus=True) for g in groups]}
    if fmt == "prometheus":
        doc: dict[str, Any] = body
    elif fmt == "prometheusrule":
        meta: dict[str, Any] = {
            "name": name,
            "labels": {"app.kubernetes.io/name": "custos", **(labels or {})},
        }
        if namespace:
            meta["namespace"] = namespace
        doc = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": meta,
            "spec": body,
        }
    else:
        raise ValueError(f"unknown export format {fmt!r} (prometheus or prometheusrule)")
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)


def rule_count(groups: list[Group]) -> tuple[int, int]:
    alerts = sum(1 for g in groups for r in g.rules if r.kind == "alert")
    records = sum(1 for g in groups for r in g.rules if r.kind == "record")
    return alerts, records
