"""`custos completion bash|zsh`: the scripts complete what the argparse tree has, in a real shell."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from bench.procs import custos_cmd

# Completes the words in $1 (a trailing space: a new, empty word) with the generated _custos function.
BASH_DRIVER = r"""
source <("$@" completion bash) || exit 3
read -ra COMP_WORDS <<< "$LINE"
[[ "$LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$LINE"; COMP_POINT=${#LINE}
_custos
printf '%s\n' "${COMPREPLY[@]}"
"""


def complete(line: str, cwd=None) -> list[str]:
    r = subprocess.run(
        ["bash", "-c", BASH_DRIVER, "driver", *custos_cmd()],
        env={"LINE": line, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_script_is_generated_for_both_shells() -> None:
    for shell in ("bash", "zsh"):
        r = subprocess.run(custos_cmd("completion", shell), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "_custos()" in r.stdout and "complete -F _custos custos" in r.stdout
    bad = subprocess.run(custos_cmd("completion", "fish"), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2


def test_bash_completes_commands_subcommands_options_and_choices(tmp_path) -> None:
    assert complete("custos al") == ["alerts"]
    assert "config" in complete("custos ") and "completion" in complete("custos ")
    assert complete("custos alerts silence ") == ["add", "list", "expire"]
    assert complete("custos config ") == ["check", "show"]
    assert set(complete("custos config show --")) == {"--help", "--config", "--effective", "--json"}
    assert complete("custos completion ") == ["bash", "zsh"]
    assert complete("custos gpu sample --names ") == ["custos", "dcgm", "both"]
    # after an option that takes a value: file names; the subcommand before it still counts
    (tmp_path / "my-config.yaml").write_text("{}")
    assert complete("custos serve --config my-", cwd=tmp_path) == ["my-config.yaml"]
    assert complete("custos serve --config x.yaml --wor") == ["--workers"]


# What zsh's bashcompinit does for a completion: COMP_WORDS from zsh's 1-indexed `words`, then
# `compgen -F _custos` (which runs the function in sh emulation). zsh itself then filters by prefix.
ZSH_DRIVER = r"""
eval "$SCRIPT" || exit 3
(( $+functions[_custos] )) || exit 4
[[ "${_comps[custos]}" == *"-F _custos"* ]] || exit 5
words=( ${=LINE} )
[[ "$LINE" == *" " ]] && words+=( "" )
CURRENT=${#words}
COMP_WORDS=( "${words[@]}" )
COMP_CWORD=$(( CURRENT - 1 ))
compgen -F _custos -- "${words[CURRENT]}"
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_loads_and_completes() -> None:
    script = subprocess.run(
        custos_cmd("completion", "zsh"), capture_output=True, text=True, timeout=60
    ).stdout

    def zsh_complete(line: str) -> list[str]:
        r = subprocess.run(
            ["zsh", "-f", "-c", ZSH_DRIVER],
            env={"SCRIPT": script, "LINE": line, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert "alerts" in zsh_complete("custos al")
    assert zsh_complete("custos alerts silence ") == ["add", "list", "expire"]
    assert zsh_complete("custos completion ") == ["bash", "zsh"]
    assert "--effective" in zsh_complete("custos config show --")


def test_every_command_of_the_parser_is_completed() -> None:
    from sidecar.cli import build_parser
    from sidecar.commands.completion import walk

    tree = walk(build_parser())
    assert set(tree[""].subcommands) == set(complete("custos "))
