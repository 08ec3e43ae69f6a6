"""Each detector: positives (formats, Chinese text around them) and near-miss negatives."""

from __future__ import annotations

import pytest

from sidecar.redaction import validators as v
from sidecar.redaction.detectors import BUILTIN, Scanner
from sidecar.redaction.engine import Redactor
from sidecar.redaction.policy import Policy

SCANNER = Scanner(BUILTIN, windowed=True)
FULL = Scanner(BUILTIN)


def found(text: str) -> list[tuple[str, str]]:
    ents = SCANNER.scan(text)
    # The prefilter is an exact optimization: the plain full scan must agree.
    assert ents == FULL.scan(text)
    return [(e.type, text[e.start : e.end]) for e in ents]


POSITIVES = [
    # China
    ("手机13812345678联系我", "CN_PHONE", "13812345678"),
    ("call +86 138-1234-5678 now", "CN_PHONE", "+86 138-1234-5678"),
    ("电话：(+86)199 8888 0000。", "CN_PHONE", "(+86)199 8888 0000"),
    ("0086 13912345678", "CN_PHONE", "0086 13912345678"),
    ("号码16612345678，", "CN_PHONE", "16612345678"),
    ("身份证号110101199003074258。", "CN_ID", "110101199003074258"),
    ("ID 11010519491231002X ok", "CN_ID", "11010519491231002X"),
    ("卡号6222021234567890128", "CN_BANK_CARD", "6222021234567890128"),
    ("card 6212 2612 0200 9876 542 ok", "CN_BANK_CARD", "6212 2612 0200 9876 542"),
    ("座机010-62345678", "CN_LANDLINE", "010-62345678"),
    ("tel (0755)88889999", "CN_LANDLINE", "(0755)88889999"),
    ("+86 21 62345678", "CN_LANDLINE", "+86 21 62345678"),
    ("信用代码91350100M000100Y43。", "CN_USCC", "91350100M000100Y43"),
    ("护照E12345678", "CN_PASSPORT", "E12345678"),
    ("passport EA1234567.", "CN_PASSPORT", "EA1234567"),
    # International
    ("mail jlin@example.com.", "EMAIL", "jlin@example.com"),
    ("邮箱zhang.san+tag@mail.example.com.cn联系", "EMAIL", "zhang.san+tag@mail.example.com.cn"),
    ("visa 4111 1111 1111 1111", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("amex 3782-822463-10005", "CREDIT_CARD", "3782-822463-10005"),
    ("mc 5555555555554444;", "CREDIT_CARD", "5555555555554444"),
    ("iban DE89 3704 0044 0532 0130 00 ok", "IBAN", "DE89 3704 0044 0532 0130 00"),
    ("IBAN: GB82WEST12345698765432", "IBAN", "GB82WEST12345698765432"),
    ("ssn 276-52-1423", "US_SSN", "276-52-1423"),
    ("call +44 20 7946 0958 today", "PHONE", "+44 20 7946 0958"),
    ("(855)232-2086", "PHONE", "(855)232-2086"),
    ("701-687-9627x46923", "PHONE", "701-687-9627x46923"),
    ("+1-915-688-5708", "PHONE", "+1-915-688-5708"),
    ("host 192.168.1.10:8080", "IPV4", "192.168.1.10"),
    ("地址10.0.0.1访问", "IPV4", "10.0.0.1"),
    ("v6 2001:db8::8a2e:370:7334 ok", "IPV6", "2001:db8::8a2e:370:7334"),
    ("loopback ::1", "IPV6", "::1"),
    ("mac 8a:78:0c:c4:27:e6", "MAC", "8a:78:0c:c4:27:e6"),
    ("mac 00-1A-2B-3C-4D-5E", "MAC", "00-1A-2B-3C-4D-5E"),
    # Secrets
    ("key AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
    ("tok ghp_" + "a1B2" * 9, "GITHUB_TOKEN", "ghp_" + "a1B2" * 9),
    (
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "GITHUB_TOKEN",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    ),
    ("slack xoxb-1234567890-0987654321-abcdef", "SLACK_TOKEN", "xoxb-1234567890-0987654321-abcdef"),
    ("OPENAI_API_KEY sk-proj-abcdefghijklmnopqrstuvwx", "OPENAI_KEY", "sk-proj-abcdefghijklmnopqrstuvwx"),
    (
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcDEF_-123",
        "JWT",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcDEF_-123",
    ),
    ("password=hunter22 and more", "PASSWORD", "hunter22"),
    ("DB_PASSWORD: 'S3cr3t!'", "PASSWORD", "S3cr3t!"),
    ('"api_key": "abcd1234efgh"', "PASSWORD", "abcd1234efgh"),
    ("密码是abc123，请查收", "PASSWORD", "abc123"),
    ("口令：Passw0rd", "PASSWORD", "Passw0rd"),
    # A space after 是/为, then a value of letters only, with no other trigger in the text (the
    # prefilter's window once ended at the space).
    ("我的密码是 hunter 谢谢", "PASSWORD", "hunter"),
    ("口令为  abcdef", "PASSWORD", "abcdef"),
    # Spaces between the characters of the keyword.
    ("密 码 是 hunter2", "PASSWORD", "hunter2"),
    ("口令 ： Passw0rd", "PASSWORD", "Passw0rd"),
    # ``is``/``was`` before the colon.
    ("my password is: hunter2", "PASSWORD", "hunter2"),
    ("The api_key was : abcd1234efgh, rotate it", "PASSWORD", "abcd1234efgh"),
    ("PASSWORD IS：S3cr3t!", "PASSWORD", "S3cr3t!"),
    # ... and without the colon, a value of letters, then a digit.
    ("my password is hunter2", "PASSWORD", "hunter2"),
    ('The api_key was "P@ssw0rd", rotate it', "PASSWORD", "P@ssw0rd"),
    ("x" * 60 + " and my pwd is  abc1", "PASSWORD", "abc1"),
    # ... or of five digits or more.
    ("the password is 12345678 and", "PASSWORD", "12345678"),
    ("My passcode was 482913, ok", "PASSWORD", "482913"),
]


@pytest.mark.parametrize(("text", "type_", "value"), POSITIVES)
def test_positive(text: str, type_: str, value: str) -> None:
    assert (type_, value) in found(text)


def test_private_key_block() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\nAbCdEfGh+/==\n-----END RSA PRIVATE KEY-----"
    assert found(f"here: {pem} done") == [("PRIVATE_KEY", pem)]
    # A truncated block still loses its body.
    cut = "-----BEGIN PRIVATE KEY-----\nMIIEowIBAAKCAQEAxyz\nMIIEowIBAAKCAQEAabc"
    assert found(cut) == [("PRIVATE_KEY", cut)]


NEGATIVES = [
    "timestamp 1732780800000 ms",  # a 13-digit run holds no phone number
    "order 20241128138123456789",  # a phone inside a longer number
    "a1b13812345678",  # inside a token with digits (a letter alone may touch a number: see test_evasions)
    "pi 3.13812345678",  # decimals
    "12812345678 is not a mobile prefix",  # 12x does not exist
    "id 110101199003074259",  # wrong check digit
    "id 110101199002304253",  # 30 February
    "card 4111111111111112",  # Luhn fails
    "card 6222021234567890127",  # UnionPay, Luhn fails
    "order 2024112812345678",  # 16 digits, no issuer prefix
    "iban DE89370400440532013001",  # mod 97 fails
    "uscc 91350100M000100Y44",  # wrong check character
    "ssn 000-12-3456 666-12-3456 912-12-3456 123-00-4567",  # impossible SSNs
    "ip 256.1.1.1 and 1.2.3 and version 1.2.3.4.5",
    "time 12:30:45 and 2024-11-28 10:00:00",
    "E1234567 and G123456789",  # wrong passport lengths
    "password: ab",  # too short to be a value
    "this is: fine and that was: too",  # ``is:`` without a keyword
    "passwordis: hunter2",  # ``is`` glued to the keyword
    "the password is stored in the vault and the secret is 42.",  # ``is``: no letters-then-digit value
    "the password is 2019 and the secret was 1234 ok",  # four digits or fewer: a year, a count
    "this is hunter2 and passwordis hunter2",  # ``is`` without a keyword, or glued to it
    "+12",  # too short for E.164
    "mask 138****5678",  # already masked
    "price 1,380,000.00 and 13,812,345,678",
    "ratio 1:2:3",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_near_miss_negative(text: str) -> None:
    assert found(text) == []


def test_validators() -> None:
    assert v.luhn("4111 1111 1111 1111") and not v.luhn("4111 1111 1111 1112")
    assert v.iban("GB82 WEST 1234 5698 7654 32") and not v.iban("GB83 WEST 1234 5698 7654 32")
    assert v.cn_resident_id("11010519491231002X") and not v.cn_resident_id("110105194912310021")
    assert not v.cn_resident_id("110105299912310023")  # born in the future
    assert v.cn_uscc("91350100M000100Y43") and not v.cn_uscc("91350100M000100Y4Z")
    assert v.us_ssn("276-52-1423") and not v.us_ssn("276-00-1423")
    assert v.ipv4("10.0.0.255") and not v.ipv4("10.0.0.256")
    assert v.ipv6("fe80::1") and not v.ipv6("12:30:45")


def test_disabled_type_is_not_detected() -> None:
    policy = Policy.model_validate({"entities": {"CN_PASSPORT": {"enabled": False}, "IPV4": "keep"}})
    r = Redactor(policy, b"k")
    assert r.redact("护照E12345678 ip 10.0.0.1") == "护照E12345678 ip 10.0.0.1"


@pytest.mark.parametrize(
    "text",
    [
        ("+" + "1" * 40 + "x ") * 50,
        "a@" + "a." * 500,
        "-----BEGIN PRIVATE KEY-----\n" * 50,
        "password=" * 200,
        "1-" * 2000,
        "a:" * 2000,
        "eyJ" * 1000,
        "+1 2 3 4 5 6 7 8 9 1 2 3 4 5 x " * 50,
    ],
    ids=[
        "plus-digits",
        "email-labels",
        "pem-begins",
        "passwords",
        "digit-dash",
        "hex-colon",
        "eyJ",
        "plus-spaced",
    ],
)
def test_adversarial_inputs(text: str) -> None:
    # Pathological repetitions (kept linear by possessive quantifiers and shared token ends) still
    # give exactly the result of the plain full scan.
    found(text)
