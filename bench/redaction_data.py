"""Labelled evaluation set for PII redaction: Faker zh_CN + en_US PII in sentences, plus near-miss
non-PII (order numbers, timestamps, wrong-checksum IDs and cards, versions, prices).

    python -m bench.redaction_data --out /tmp/redaction-eval.jsonl --per-type 200 --seed 7

Each line: {"text", "lang", "pii": [{"type", "start", "end", "value"}],
            "nonpii": [{"kind", "start", "end", "value"}]}.
Only the standard library and Faker (both in the project venv and the Presidio venv).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import sys
from collections.abc import Callable
from datetime import date, timedelta

from faker import Faker

# -- check digits (independent re-implementations, so the set does not trust the code it tests) -----
_ID_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_USCC = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_W = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def cn_id(rng: random.Random, valid: bool = True) -> str:
    area = rng.choice(["110101", "310104", "440305", "510107", "330106", "420111", "210102"])
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
    body = f"{area}{born:%Y%m%d}{rng.randrange(1000):03d}"
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, _ID_W, strict=True)) % 11]
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    return body + check


def uscc(rng: random.Random, valid: bool = True) -> str:
    body = rng.choice("159Y") + rng.choice("123") + rng.choice(["110101", "310104", "440305", "350100"])
    org = "".join(rng.choice(string.digits + "ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
    c = 11 - sum(int(ch, 36) * w for ch, w in zip(org, (3, 7, 9, 10, 5, 8, 4, 2), strict=True)) % 11
    body += org + ("X" if c == 10 else "0" if c == 11 else str(c))  # GB 11714 organization code
    c = (31 - sum(_USCC.index(ch) * w for ch, w in zip(body, _USCC_W, strict=True)) % 31) % 31
    check = _USCC[c] if valid else _USCC[(c + rng.randrange(1, 30)) % 31]
    return body + check


def unionpay(rng: random.Random, valid: bool = True) -> str:
    body = "62" + "".join(rng.choice(string.digits) for _ in range(rng.choice([13, 15, 16])))
    d = luhn_digit(body)
    return body + (d if valid else str((int(d) + rng.randrange(1, 10)) % 10))


def bad_luhn(card: str, rng: random.Random) -> str:
    last = int(card[-1])
    return card[:-1] + str((last + rng.randrange(1, 10)) % 10)


def iban(rng: random.Random, valid: bool = True) -> str:
    country, bban = rng.choice(
        [
            ("DE", lambda: "".join(rng.choice(string.digits) for _ in range(18))),
            (
                "GB",
                lambda: (
                    "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
                    + "".join(rng.choice(string.digits) for _ in range(14))
                ),
            ),
            ("FR", lambda: "".join(rng.choice(string.digits) for _ in range(23))),
        ]
    )
    b = bban()
    num = int("".join(str(int(c, 36)) for c in b + country + "00"))
    check = 98 - num % 97
    if not valid:
        check = (check + rng.randrange(1, 90)) % 97 + 2
    return f"{country}{check:02d}{b}"


def spaced(value: str, rng: random.Random, group: int = 4) -> str:
    if rng.random() < 0.3:
        return " ".join(value[i : i + group] for i in range(0, len(value), group))
    return value


def token(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(rng: random.Random, fake: Faker) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(
        json.dumps({"sub": fake.user_name(), "iat": rng.randrange(1_600_000_000, 1_800_000_000)}).encode()
    )
    return f"{header}.{payload}.{b64url(rng.randbytes(32))}"


def pem(rng: random.Random) -> str:
    body = base64.b64encode(rng.randbytes(rng.choice([120, 240]))).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    kind = rng.choice(["RSA ", "EC ", ""])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"


def cn_mobile(rng: random.Random, fake_zh: Faker) -> str:
    n = fake_zh.phone_number()
    r = rng.random()
    if r < 0.15:
        return f"+86 {n[:3]} {n[3:7]} {n[7:]}"
    if r < 0.3:
        return f"{n[:3]}-{n[3:7]}-{n[7:]}"
    return n


def landline(rng: random.Random) -> str:
    area = rng.choice(["010", "021", "020", "0755", "0571", "028"])
    local = str(rng.randrange(2, 9)) + "".join(
        rng.choice(string.digits) for _ in range(7 if len(area) == 3 else 6)
    )
    return rng.choice([f"{area}-{local}", f"({area}){local}", f"{area} {local}"])


def passport(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "E" + "".join(rng.choice(string.digits) for _ in range(8))
    return "E" + rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + "".join(rng.choice(string.digits) for _ in range(7))


def e164(rng: random.Random) -> str:
    cc, groups = rng.choice(
        [("44", [2, 4, 4]), ("49", [3, 7]), ("33", [1, 2, 2, 2, 2]), ("81", [2, 4, 4]), ("61", [1, 4, 4])]
    )
    parts = ["".join(rng.choice(string.digits) for _ in range(g)) for g in groups]
    parts[0] = str(rng.randrange(1, 10)) + parts[0][1:]
    return f"+{cc} " + " ".join(parts)


# -- generators per type: (value, zh template, en template) ----------------------------------------
def pii_generators(rng: random.Random, zh: Faker, en: Faker) -> dict[str, Callable[[], str]]:
    return {
        "CN_PHONE": lambda: cn_mobile(rng, zh),
        "CN_LANDLINE": lambda: landline(rng),
        "CN_ID": lambda: cn_id(rng),
        "CN_BANK_CARD": lambda: spaced(unionpay(rng), rng),
        "CN_USCC": lambda: uscc(rng),
        "CN_PASSPORT": lambda: passport(rng),
        "EMAIL": lambda: rng.choice([zh, en]).email(),
        "CREDIT_CARD": lambda: spaced(
            en.credit_card_number(card_type=rng.choice(["visa", "mastercard", "amex", "discover", "jcb"])),
            rng,
        ),
        "IBAN": lambda: spaced(iban(rng), rng),
        "US_SSN": lambda: en.ssn(),
        "PHONE": lambda: rng.choice([en.phone_number, lambda: e164(rng)])(),
        "IPV4": lambda: rng.choice([en.ipv4(), en.ipv4_private()]),
        "IPV6": lambda: en.ipv6(),
        "MAC": lambda: en.mac_address(),
        "AWS_ACCESS_KEY": lambda: "AKIA" + token(rng, 16, string.ascii_uppercase + string.digits),
        "GITHUB_TOKEN": lambda: rng.choice(["ghp_", "gho_", "ghs_"]) + token(rng, 36),
        "SLACK_TOKEN": lambda: (
            f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**12, 10**13)}-{token(rng, 24)}"
        ),
        "OPENAI_KEY": lambda: "sk-proj-" + token(rng, 48, string.ascii_letters + string.digits + "_-"),
        "JWT": lambda: jwt(rng, en),
        "PRIVATE_KEY": lambda: pem(rng),
        "PASSWORD": lambda: token(rng, rng.randrange(8, 16), string.ascii_letters + string.digits + "!#$%&*"),
    }


ZH_TEMPLATES = [
    "请联系{}，谢谢。",
    "客户资料：{}。",
    "我的信息是{}，请核对",
    "备注 {} 已确认",
    "{}是新的联系方式",
]
EN_TEMPLATES = [
    "Please contact {} today.",
    "Customer record: {}.",
    "My details are {}, please check.",
    "Note: {} confirmed",
    "{} is the new one.",
]
PASSWORD_TEMPLATES = ["password={}", "密码是{}", "DB_PASSWORD: {}", '"api_key": "{}"', "口令：{}"]


def near_misses(rng: random.Random, zh: Faker, en: Faker) -> dict[str, Callable[[], str]]:
    return {
        "order_number": lambda: (
            rng.choice(["", "SO", "ORD-"])
            + f"{en.date_between('-2y'):%Y%m%d}"
            + "".join(rng.choice(string.digits) for _ in range(rng.choice([4, 6, 8])))
        ),
        "unix_ms": lambda: str(rng.randrange(1_600_000_000_000, 1_800_000_000_000)),
        "unix_s": lambda: str(rng.randrange(1_600_000_000, 1_800_000_000)),
        "iso_time": lambda: en.iso8601(),
        "date_time": lambda: f"{en.date()} {en.time()}",
        "bad_cn_id": lambda: cn_id(rng, valid=False),
        "bad_card": lambda: bad_luhn(en.credit_card_number(card_type="visa"), rng),
        "bad_unionpay": lambda: unionpay(rng, valid=False),
        "bad_iban": lambda: iban(rng, valid=False),
        "bad_uscc": lambda: uscc(rng, valid=False),
        "bad_mobile_prefix": lambda: (
            "1" + rng.choice("012") + "".join(rng.choice(string.digits) for _ in range(9))
        ),
        "long_digit_run": lambda: "".join(
            rng.choice(string.digits) for _ in range(rng.choice([12, 14, 20, 24]))
        ),
        "version": lambda: f"v{rng.randrange(10)}.{rng.randrange(30)}.{rng.randrange(100)}",
        "price": lambda: f"{rng.randrange(1, 99999):,}.{rng.randrange(100):02d}",
        "quantity": lambda: str(rng.randrange(1, 100000)),
        "tracking": lambda: "SF" + "".join(rng.choice(string.digits) for _ in range(12)),
        "invoice": lambda: f"INV-{rng.randrange(2020, 2027)}-{rng.randrange(10**5):05d}",
        "hex_hash": lambda: token(rng, 40, "0123456789abcdef"),
        "bad_ssn": lambda: (
            rng.choice(["000", "666", "912"]) + f"-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}"
        ),
        "decimal": lambda: f"{rng.randrange(100)}.{rng.randrange(10**9, 10**10)}",
    }


NONPII_TEMPLATES = [
    "订单号{}已发货",
    "Order {} shipped.",
    "时间戳 {} 记录",
    "at {} the job ran",
    "编号：{}，请查收",
    "value {} was logged",
]


def build(per_type: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    Faker.seed(seed)
    zh, en = Faker("zh_CN"), Faker("en_US")
    records = []
    gens = pii_generators(rng, zh, en)
    for type_, gen in gens.items():
        for i in range(per_type):
            value = gen()
            if type_ == "PASSWORD":
                template = rng.choice(PASSWORD_TEMPLATES)
            else:
                template = rng.choice(ZH_TEMPLATES if i % 2 == 0 else EN_TEMPLATES)
            prefix, suffix = template.split("{}")
            filler = (zh.sentence() if i % 2 == 0 else en.sentence()) + " "
            text = filler + prefix + value + suffix
            start = len(filler) + len(prefix)
            records.append(
                {
                    "text": text,
                    "lang": "zh" if i % 2 == 0 else "en",
                    "pii": [{"type": type_, "start": start, "end": start + len(value), "value": value}],
                    "nonpii": [],
                }
            )
    for kind, gen in near_misses(rng, zh, en).items():
        for i in range(per_type):
            value = gen()
            prefix, suffix = rng.choice(NONPII_TEMPLATES).split("{}")
            filler = (zh.sentence() if i % 2 == 0 else en.sentence()) + " "
            text = filler + prefix + value + suffix
            start = len(filler) + len(prefix)
            records.append(
                {
                    "text": text,
                    "lang": "zh" if i % 2 == 0 else "en",
                    "pii": [],
                    "nonpii": [{"kind": kind, "start": start, "end": start + len(value), "value": value}],
                }
            )
    rng.shuffle(records)
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="-")
    p.add_argument("--per-type", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    records = build(args.per_type, args.seed)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    with out:
        for r in records:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
