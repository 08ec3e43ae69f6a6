"""The documentation does not drift from the code: relative links resolve, every `custos ...` command
shown in README.md and docs/ exists (its `--help` exits 0), the README command table lists every
command, and every built-in alert rule has its runbook and links to it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from alerting.rules import load_rule_files
from sidecar.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
RUNBOOKS = REPO / "docs" / "runbooks"

_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M)
_INLINE = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# `custos` where a command starts (span or line start, after a shell operator or `$(`, or a .../bin/
# path), then one or two command words; `a|b` (also `a\|b` in tables) lists alternatives.
_WORD = r"[a-z][a-z0-9-]*(?:\\?\|[a-z][a-z0-9-]*)*"
_COMMAND = re.compile(rf"(?:^|(?<=[\s;|&(]))(?:\S*/bin/)?custos((?:[ \t]+{_WORD}(?=$|[\s;|&)'\"\]])){{1,2}})")
# `custos` as an argument of another tool (namespace, Helm release, deployment name).
_NOT_A_COMMAND = re.compile(r"(?:\s-n|--namespace|\bhelm\s+\w+|\bkubectl\b.*)\s+$")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def code_spans(text: str) -> list[str]:
    """Fenced code blocks and inline code spans: where commands are shown."""
    spans = [m.group(2) for m in _FENCE.finditer(text)]
    prose = _FENCE.sub("", text)
    spans += [m.group(2) for m in _INLINE.finditer(prose)]
    return spans


def documented_commands(text: str) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for span in code_spans(text):
        for line in span.splitlines():
            for m in _COMMAND.finditer(line):
                if _NOT_A_COMMAND.search(line[: m.start()]):
                    continue
                alternatives = [w.replace("\\|", "|").split("|") for w in m.group(1).split()]
                if len(alternatives) == 1:
                    found.update((a,) for a in alternatives[0])
                else:
                    found.update((a, b) for a in alternatives[0] for b in alternatives[1])
    return found


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


PARSER = build_parser()
TOP = _subcommands(PARSER)


def command_path(words: tuple[str, ...]) -> tuple[str, ...] | None:
    """The command the words name (a second word that is an argument, e.g. `completion bash`, is
    dropped), or None when there is no such command."""
    if words[0] not in TOP:
        return None
    subs = _subcommands(TOP[words[0]])
    if len(words) > 1 and subs:
        return words if words[1] in subs else None
    return words[:1]


def _documented() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for words in sorted(documented_commands(doc.read_text(encoding="utf-8"))):
            out.append((_rel(doc), " ".join(words)))
    return out


def _links() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        prose = _INLINE.sub("", _FENCE.sub("", text))  # links shown as code are examples
        for m in _LINK.finditer(prose):
            out.append((_rel(doc), m.group(1)))
    return out


def test_the_extractors_find_what_they_should() -> None:
    text = (
        "Run `custos alerts export|check` or `custos completion bash`; `custos.example.yaml` is no "
        "command.\n```sh\nexport TOKEN=$(~/.cache/custos/venv/bin/custos token --sub you)\n"
        "helm install custos deploy/helm/custos -n llm\nkubectl -n custos apply -f x.yaml\n```\n"
    )
    assert documented_commands(text) == {
        ("alerts", "export"),
        ("alerts", "check"),
        ("completion", "bash"),
        ("token",),
    }
    assert command_path(("completion", "bash")) == ("completion",)
    assert command_path(("alerts", "nosuch")) is None
    assert command_path(("nosuch",)) is None
    assert len(_documented()) > 30 and len(_links()) > 10


@pytest.mark.parametrize(("doc", "target"), _links(), ids=lambda v: v)
def test_relative_links_resolve(doc: str, target: str) -> None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return  # absolute URLs and in-page anchors
    path = target.split("#", 1)[0].split("?", 1)[0]
    resolved = (REPO / doc).parent / path
    assert resolved.exists(), f"{doc}: link to {target} does not resolve ({resolved} is missing)"


@pytest.mark.parametrize(("doc", "command"), _documented(), ids=lambda v: v)
def test_documented_commands_have_working_help(doc: str, command: str, capsys) -> None:
    path = command_path(tuple(command.split()))
    assert path is not None, f"{doc} shows `custos {command}`, which is not a custos command"
    with pytest.raises(SystemExit) as exit_info:
        PARSER.parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: custos " + " ".join(path) in capsys.readouterr().out


def test_readme_command_table_lists_every_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    shown = {words[0] for words in documented_commands(table)}
    missing = sorted(set(TOP) - shown)
    assert not missing, f"README.md's command table has no row for: {', '.join(missing)}"


def _alert_rules() -> list[tuple[str, dict[str, str]]]:
    return [
        (rule.name, rule.annotations)
        for group in load_rule_files()
        for rule in group.rules
        if rule.kind == "alert"
    ]


@pytest.mark.parametrize(
    ("alert", "annotations"), _alert_rules(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_alert_rule_links_its_runbook(alert: str, annotations: dict[str, str]) -> None:
    page = RUNBOOKS / f"{alert}.md"
    assert page.is_file(), f"no runbook for {alert}: write docs/runbooks/{alert}.md"
    assert annotations.get("runbook_url") == f"docs/runbooks/{alert}.md"
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# {alert}\n")
    for section in ("## What it means", "## First checks", "## Commands"):
        assert section in text, f"{page.name}: no '{section}' section"


def test_no_runbook_without_a_rule() -> None:
    names = {alert for alert, _ in _alert_rules()}
    orphans = sorted(p.stem for p in RUNBOOKS.glob("*.md") if p.stem != "README" and p.stem not in names)
    assert not orphans, f"runbooks for rules that do not exist: {orphans}"
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    assert not [n for n in names if f"({n}.md)" not in index], "docs/runbooks/README.md misses a rule"
