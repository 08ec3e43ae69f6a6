"""Policy files: clear errors with file and line; operators; hash key; custom detectors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from custos.errors import ConfigError
from sidecar.config import load_config
from sidecar.redaction.engine import Redactor
from sidecar.redaction.operators import Session, load_hash_key
from sidecar.redaction.policy import Policy, PolicyError, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]


def test_shipped_policy_matches_builtin_defaults() -> None:
    assert load_policy(REPO / "policies" / "redaction.yaml").model_dump() == Policy().model_dump()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nentities:\n  EMAIL: maks\n",
            "p.yaml:3:10: entities.EMAIL.operator: 'maks' is not an operator",
        ),
        ("version: 1\nentities:\n  EMIAL: mask\n", "unknown entity type 'EMIAL'"),
        ("version: 1\nentitys: {}\n", "p.yaml:2:1: entitys: unknown option"),
        (
            "version: 1\ncustom:\n  - name: EMP\n    pattern: 'EMP-['\n",
            "p.yaml:4:14: custom[0].pattern: custom detector EMP: 'EMP-[' is not a valid regular",
        ),
        ("custom:\n  - name: emp\n    pattern: 'x'\n", "p.yaml:2:11: custom[0].name: must be upper case"),
        ("custom:\n  - name: EMP\n    pattern: 'E[0-9]+'\n    validator: lunh\n", "unknown validator 'lunh'"),
        ("custom:\n  - name: EMP\n    pattern: 'x*'\n", "matches the empty string"),
        (
            "entities:\n  CN_PHONE: {operator: mask, keep_first: -1}\n",
            "p.yaml:2:42: entities.CN_PHONE.keep_first",
        ),
        ("entities: [1, 2\n", "p.yaml:2:1: (yaml): not valid YAML"),
        ("- 1\n", "p.yaml:1:1: (top level): must be a mapping"),
        ("restore:\n  roles:\n    auditor: [NOPE]\n", "restore: unknown entity type 'NOPE'"),
        ("placeholder_format: '[{n}]'\n", "placeholder_format: must contain {type} and {n}"),
        ("allow: [周黑鸭, '  ']\n", "p.yaml:1:14: allow[1]: an empty value"),
        ("allow:\n  - 周黑鸭\n  - ''\n", "p.yaml:3:5: allow[1]: an empty value"),
        ("allow: 周黑鸭\n", "p.yaml:1:8: allow: value '周黑鸭' is invalid: Input should be a valid list"),
        (f"allow: ['{'x' * 300}']\n", "p.yaml:1:9: allow[0]: longer than 256 characters"),
    ],
)
def test_policy_errors_are_clear(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "p.yaml")
    assert expected in str(err.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope.yaml")


def test_bad_policy_fails_config_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("entities:\n  EMAIL: nope\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"redaction:\n  policy_file: {bad}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2:10: entities.EMAIL.operator"):
        load_config(cfg, environ={})


def make(policy: dict, key: bytes = b"k") -> Redactor:
    return Redactor(Policy.model_validate(policy), key)


def test_operators() -> None:
    r = make(
        {
            "entities": {
                "CN_PHONE": "mask",
                "EMAIL": "hash",
                "CN_ID": "drop",
                "IPV4": "keep",
                "CREDIT_CARD": {"operator": "replace", "text": "[CARD]"},
            }
        }
    )
    s = Session()
    out = r.redact(
        "手机13812345678 邮箱 A@Example.com id 110101199003074258! ip 10.0.0.1 visa 4111111111111111", s
    )
    assert "138****5678" in out
    assert "<EMAIL:" in out and "Example" not in out
    assert "id !" in out and "10.0.0.1" in out and "[CARD]" in out
    assert s.counts == {"CN_PHONE": 1, "EMAIL": 1, "CN_ID": 1, "CREDIT_CARD": 1}  # keep is not counted


def test_mask_keeps_separators_and_prefix() -> None:
    r = make({"entities": {"CN_PHONE": "mask", "CREDIT_CARD": {"operator": "mask", "keep_first": 6}}})
    assert r.redact("+86 138-1234-5678") == "+86 138-****-5678"
    assert r.redact("4111 1111 1111 1111") == "4111 11** **** 1111"


def test_hash_is_stable_keyed_and_normalized() -> None:
    a, b = (
        make({"entities": {"CN_PHONE": "hash"}}, b"key-a"),
        make({"entities": {"CN_PHONE": "hash"}}, b"key-b"),
    )
    h1 = a.redact("13812345678")
    assert h1 == a.redact("+86 138 1234 5678")  # same number, same hash: analysts can join
    assert h1 != b.redact("13812345678")  # keyed
    assert h1.startswith("<CN_PHONE:") and len(h1) == len("<CN_PHONE:>") + 12


def test_placeholders_numbered_per_value() -> None:
    r = make({})
    s = Session()
    out = r.redact("a@x.com b@x.com A@X.com 13812345678 138-1234-5678", s)
    assert out == "<EMAIL_1> <EMAIL_2> <EMAIL_1> <CN_PHONE_1> <CN_PHONE_1>"


def test_hash_key_file_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "redaction.key"
    key = load_hash_key(None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_hash_key(None, path) == key and len(key) >= 32
    assert load_hash_key("configured", path) == b"configured"


def test_custom_detector_with_validator_and_context() -> None:
    r = make(
        {
            "custom": [
                {
                    "name": "EMPLOYEE_ID",
                    "pattern": r"\bEMP-[0-9]{6}\b",  # RE2: word boundaries, no lookarounds
                    "context": ["employee", "工号"],
                    "operator": "hash",
                },
                {"name": "ACCOUNT", "pattern": r"acct:(?P<value>[0-9]{8,19})", "validator": "luhn"},
            ]
        }
    )
    assert r.redact("employee EMP-123456").startswith("employee <EMPLOYEE_ID:")
    assert r.redact("工号EMP-123456") != "工号EMP-123456"
    assert r.redact("ticket EMP-123456") == "ticket EMP-123456"  # no context word
    assert r.redact("acct:79927398713") == "acct:<ACCOUNT_1>"  # value group only, Luhn ok
    assert r.redact("acct:79927398714") == "acct:79927398714"  # Luhn fails


def test_restore_rules_by_role() -> None:
    p = Policy.model_validate(
        {
            "restore": {
                "default": False,
                "anonymous": True,
                "roles": {"admin": True, "support": ["EMAIL"], "viewer": False},
            }
        }
    )
    assert p.restore_types(None) is True
    assert p.restore_types(("admin", "viewer")) is True  # union
    assert p.restore_types(("support",)) == frozenset({"EMAIL"})
    assert p.restore_types(("viewer",)) is False
    assert p.restore_types(("other",)) is False  # default


def test_round_trip_pseudonymization() -> None:
    """Prompt -> placeholders (what the model sees) -> answer with placeholders -> originals back."""
    r = make({})
    s = Session()
    prompt = "请给13812345678和jlin@example.com发确认，卡号4111111111111111"
    seen = r.redact(prompt, s)
    assert "13812345678" not in seen and "jlin@example.com" not in seen and "4111111111111111" not in seen
    answer = f"好的，已经联系{seen.split('给')[1]}"
    restored = r.redact(answer, s, response=True, restore=True)
    assert restored == "好的，已经联系13812345678和jlin@example.com发确认，卡号4111111111111111"
    # Without the right to restore, the placeholders stay; a caller can never see more than sent.
    assert r.redact(answer, s, response=True, restore=False) == answer
    # An unknown placeholder (the model made it up) is left alone.
    assert r.redact("<EMAIL_9>", s, response=True, restore=True) == "<EMAIL_9>"


def test_custom_detectors_combine_safely() -> None:
    # Global flags and equal group names in several custom patterns still make one alternation.
    r = make(
        {
            "custom": [
                {"name": "TICKET", "pattern": r"(?i)tkt-(?P<value>[0-9]{4})"},
                {"name": "CASE", "pattern": r"(?i)case-(?P<value>[0-9]{4})"},
            ]
        }
    )
    assert r.redact("TKT-1234 and Case-5678") == "TKT-<TICKET_1> and Case-<CASE_1>"
    # RE2 allows a flag mid-pattern; it stays in its own detector's branch.
    r = make({"custom": [{"name": "A", "pattern": "a(?i)b"}, {"name": "C", "pattern": "cd"}]})
    assert r.redact("aB AB CD cd") == "<A_1> AB CD <C_1>"


def test_custom_patterns_are_re2_refused_at_load_and_linear_when_scanning() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("custom:\n  - name: EMP\n    pattern: 'EMP-(?=[0-9])'\n", "p.yaml")
    message = str(info.value)
    assert "custom[0].pattern: custom detector EMP:" in message and "lookahead" in message
    assert "\n" not in message
    # Exponential for a backtracking engine: RE2 scans it in linear time, and the streaming hold-back
    # (partial matches, which RE2 lacks) is time-boxed and holds the rest instead of stalling.
    r = make({"custom": [{"name": "EVIL", "pattern": r"(a+)+$"}]})
    text = "a" * 100_000 + "!"
    assert r.redact(text) == text
    assert r.redact("x " + "a" * 100_000) == "x <EVIL_1>"
    assert 2 <= r.hold_from("x " + "a" * 3000 + "!", 2) <= 3003
