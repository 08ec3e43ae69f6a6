"""Built-in detectors and the scanner that runs all of them in one pass.

Every detector is one branch of a single compiled alternation (``...(?P<d0>)|...(?P<d1>)|...``: an
empty group at the end of each branch names it), so the text is scanned once. A branch may carry a
validator (check digit, birth date, issuer prefix); a candidate that fails it is not an entity, and
the branches after it are tried at the same position before the scan moves on. Digit entities are
fenced by lookarounds so that digits inside a longer run (a millisecond timestamp, an order number)
never match, while Chinese text directly around an entity (``手机13812345678联系``) still does: the
fences exclude only ASCII letters, digits and ``_``.
"""

from __future__ import annotations

import functools
import heapq
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import regex

try:  # stream hold-back reads a pattern's first characters (``_leading``); private in CPython 3.11+
    from re import _constants as _re_constants
    from re import _parser as _re_parser
except ImportError:  # another Python: ``_leading`` knows nothing, the hold tries every position
    _re_constants = _re_parser = None  # type: ignore[assignment]

from custos.regex import SearchText, UserRegex, UserRegexError, compile_user_regex

from . import validators as v

# Fences. Digit entities: no ASCII alnum/underscore and no decimal point on either side.
NUM_L = r"(?<![0-9A-Za-z_])(?<![0-9][.,])"
NUM_R = r"(?![0-9A-Za-z_])(?![.,][0-9])"
# Code-like entities (keys, IBAN, USCC, passports): no ASCII alnum on either side.
ALNUM_L = r"(?<![0-9A-Za-z_])"
ALNUM_R = r"(?![0-9A-Za-z_])"
# Password values: printable ASCII without space, quotes, comma, semicolon, backtick and <> (so our
# own placeholders such as <PASSWORD_1> are never taken for a value).
_PW_VALUE = r"[!#-&(-+\--:=?-_a-~]{3,200}+"
_EXT = r"(?:[ ]?(?:x|ext\.?|#)[ ]?[0-9]{1,6})?"
# The keywords a value follows (after the lead character of ``_lead("[PpSsCcAa]", ...)``).
_PW_KEYWORD = (
    r"(?i:(?<=p)(?:assword|asswd|assphrase|asscode|wd|rivate[_-]?key)"
    r"|(?<=s)ecret(?:[_-]?(?:access[_-]?)?key)?|(?<=c)lient[_-]?secret"
    r"|(?<=a)(?:pi[_-]?key|ccess[_-]?token|uth[_-]?token|ws_secret_access_key))"
)
# ``password_is``'s ``is``/``was`` up to its value (shared with the prefilter's window, ``_IS_BEFORE``).
_IS_LEAD = r"""(?i:is|was)[ \t]{1,3}+["']?"""
# Glue-tolerant fences (mobiles, ID and card numbers, international numbers): ASCII letters may touch
# the value (``13911960587Email:``, ``Tel13911960587``) unless a digit is within three characters on
# that side (``a1b13812345678`` is part of a token, not a number).
GLUE_L = r"(?<![0-9_].)(?<![0-9_][A-Za-z].)(?<![0-9_][A-Za-z]{2}.)"
GLUE_R = r"(?![0-9_])(?![.,][0-9])(?![A-Za-z]{1,3}[0-9])"

Check = Callable[[str], "str | None"]


class Entity(NamedTuple):
    type: str
    start: int
    end: int


@dataclass(frozen=True)
class Detector:
    """One branch. ``check`` returns the entity type for a valid candidate, or None to reject it."""

    name: str
    type: str
    pattern: str
    check: Check | None = None
    context: tuple[str, ...] = ()
    context_window: int = 40
    # The pattern has a group named ``value``: only that part is the entity (e.g. after ``password=``).
    has_value: bool = False
    builtin: bool = True
    description: str = ""


def _typed(type_: str, validator: v.Validator) -> Check:
    def check(value: str) -> str | None:
        return type_ if validator(value) else None

    return check


def _card(value: str) -> str | None:
    if v.cn_bank_card(value):
        return "CN_BANK_CARD"
    if v.credit_card(value):
        return "CREDIT_CARD"
    return None


def _e164(value: str) -> str | None:
    main = re.split(r"[ ]?(?:x|ext\.?|#)", value, maxsplit=1)[0]
    return "PHONE" if v.e164(main) else None


_FILLER = re.compile(r"(?i)x{4}|\*{4}|(.)\1{5}|your|example|here|token|placeholder|redacted")
# The same test for an ASCII body (every key format's): substring tests on the lower-cased body and
# one pass for a run of six; ``_FILLER`` tries its nine alternatives at every position (~4.6 µs on a
# 50-character key, ~1.7 µs this way).
_FILLER_WORDS = ("xxxx", "****", "your", "example", "here", "token", "placeholder", "redacted")
_RUN_OF_SIX = re.compile(r"(.)\1{5}")


def _filler(body: str) -> bool:
    if not body.isascii():
        return _FILLER.search(body) is not None
    low = body.lower()
    return any(map(low.__contains__, _FILLER_WORDS)) or _RUN_OF_SIX.search(low) is not None


def _secret(type_: str, prefix: int, *, digit: bool = False) -> Check:
    """A key after its ``prefix``: not a documentation placeholder (``ghp_xxxxxxxx…``, ``xoxb-xxxx…``,
    ``sk-your-key-here``): at least 4 distinct characters, no run of 6, no filler word."""

    def check(value: str) -> str | None:
        body = value[prefix:]
        if len(set(body)) < 4 or _filler(body) or (digit and not any(c.isdigit() for c in body)):
            return None
        return type_

    return check


def _mac(value: str) -> str | None:
    hexes = {c for c in value.upper() if c not in ":-."}
    return None if hexes <= {"F"} or hexes <= {"0"} else "MAC"


def _cn_id_grouped(value: str) -> str | None:
    compact = "".join(c for c in value if c not in " -")
    return "CN_ID" if v.cn_resident_id(compact) else None


def _phone(value: str) -> str | None:
    main = re.split(r"[ ]?(?:x|ext\.?|#)", value, maxsplit=1)[0]
    return "PHONE" if v.phone_number(main) else None


def _local_phone(value: str) -> str | None:
    return "PHONE" if v.local_phone(value) else None


_HEX = "[0-9A-Fa-f]"
_USCC = "[0-9A-HJ-NPQRTUWXY]"
_ALN = "[0-9A-Za-z_]"


def _lead(first: str, fence: str, rest: str, *, num: bool = False, glue: bool = False) -> str:
    """``first`` char class, then the left fence checked one character back, then the rest.

    Every branch starts with a plain character class so the regex engine can reject it at a position
    with a single table lookup; the fence (a lookbehind) runs only where the first character fits.
    """
    out = first if not fence else first + GLUE_L if glue else f"{first}(?<!{fence}.)"
    if num:
        out += r"(?<![0-9][.,].)"
    return out + rest


# Right after a lower-case TLD (``.com`` + ``B``); the stdlib engine wants fixed-width lookbehinds.
_AFTER_TLD = "(?:" + "|".join(rf"(?<=\.[a-z]{{{n}}}[A-Z])" for n in range(2, 25)) + ")"
_AREA_INTL = r"(?:\(0?[1-9][0-9]{1,2}\)|0?[1-9][0-9]{1,2})"
_NANP_AREA = r"(?:\([0-9]{3}\)[ ]?|[0-9]{3}[.-])"

BUILTIN: tuple[Detector, ...] = (
    Detector(
        "private_key",
        "PRIVATE_KEY",
        # An unterminated block (a truncated answer) still takes its base64 body.
        r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]{1,20} ){0,3}"
        r"PRIVATE KEY-----|(?:\s*+(?:[A-Za-z0-9+/=]{8,}+|Proc-Type:[^\n]*+|DEK-Info:[^\n]*+))*+)",
        description="PEM private-key block",
    ),
    Detector(
        "jwt",
        "JWT",
        _lead("e", "[A-Za-z0-9_-]", r"yJ[A-Za-z0-9_-]{4,}+\.eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"),
        description="JSON Web Token (header and payload start with eyJ)",
    ),
    Detector(
        "aws_key",
        "AWS_ACCESS_KEY",
        _lead("A", _ALN, r"(?:KIA|SIA|BIA|CCA|IDA|ROA|GPA|NPA|NVA|IPA|PKA)[A-Z0-9]{16}") + ALNUM_R,
        description="AWS access key id",
    ),
    Detector(
        "github_token",
        "GITHUB_TOKEN",
        _lead("g", _ALN, r"(?:h[pousr]_[A-Za-z0-9]{36,255}+|ithub_pat_[A-Za-z0-9_]{22,255}+)") + ALNUM_R,
        _secret("GITHUB_TOKEN", 4),
        description="GitHub token (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
    ),
    Detector(
        "slack_token",
        "SLACK_TOKEN",
        _lead("x", _ALN, r"(?:ox[abposre]|app)-[A-Za-z0-9-]{10,250}+"),
        _secret("SLACK_TOKEN", 5, digit=True),
        description="Slack token (xoxb-, xoxp-, ..., xapp- app-level tokens)",
    ),
    Detector(
        "openai_key",
        "OPENAI_KEY",
        _lead("s", "[A-Za-z0-9_-]", r"k-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,250}+"),
        _secret("OPENAI_KEY", 3),
        description="OpenAI-style secret key (sk-...)",
    ),
    Detector(
        "password",
        "PASSWORD",
        _lead(
            "[PpSsCcAa]",
            "[A-Za-z0-9]",  # DB_PASSWORD= and AWS_SECRET_ACCESS_KEY= count too
            _PW_KEYWORD
            # ``my password is: hunter2`` too: ``is``/``was`` before the colon (not before ``=``).
            + r"""["']?[ \t]*+(?:[:=：]|=>|(?<=[ \t])(?i:is|was)[ \t]*+[:：])[ \t]*+["']?"""
            + r"(?P<value>"
            + _PW_VALUE
            + ")",
        ),
        has_value=True,
        description="value of a password=/secret:/api_key= style assignment",
    ),
    Detector(
        "password_is",
        "PASSWORD",
        # ``my password is hunter2``: with no assignment character, only a value that looks like one
        # (a letter, then letters or ``. _ % + @ -``, then a digit: ``hunter2``, ``P@ssw0rd``; or five
        # digits or more: ``the passcode is 482913``), not ``the password is stored`` nor ``the secret is
        # 42.``. The digit is a trigger character, and nothing before it is sent early by a stream (the
        # value's first characters are held as a run of letters). Five digits: a stream's inert number
        # (``streaming._INERT_NUMBER``) has four at most, so none starts such a value. At most three
        # blanks around ``is``: the keyword stays within the 48 characters before the value that a
        # stream looks back at for a keyword it already sent.
        _lead(
            "[PpSsCcAa]",
            "[A-Za-z0-9]",
            _PW_KEYWORD
            + r"[ \t]{1,3}+"
            + _IS_LEAD
            + r"(?P<value>(?=[A-Za-z][A-Za-z._%+@\-]*+[0-9]|[0-9]{5})"
            + _PW_VALUE
            + ")",
        ),
        has_value=True,
        description="value after `my password is` (letters, then a digit; or five digits or more)",
    ),
    Detector(
        "password_zh",
        "PASSWORD",
        # Spaces may separate the characters (``密 码 是 …``, ``口令 ： …``).
        r"[密口](?:(?<=密)[ \t]*+码|(?<=口)[ \t]*+令)[ \t]*+(?:是|为|[:=：])[ \t]*+(?P<value>"
        + _PW_VALUE
        + ")",
        has_value=True,
        description="value after 密码是/密码：",
    ),
    Detector(
        "email",
        "EMAIL",
        # Only letters and digits fence the start: after ``-``, ``.``, ``_``, ``+`` or ``%`` the
        # address begins at its first letter (``-jangseohee@...``); an apostrophe is part of it. An
        # upper-case letter right after a lower-case TLD starts a new one too: the TLD below ends
        # there (``a@b.comBOB@EXAMPLE.COM`` is two addresses, whether scanned whole or streamed).
        r"[A-Za-z0-9](?:(?<![A-Za-z0-9].)|(?<=[a-z][A-Z])" + _AFTER_TLD + ")"
        r"[A-Za-z0-9._%+'-]{0,63}+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
        # A lower-case TLD ends where an upper-case letter starts the next word (``.comFanLetter``).
        r"\.(?:[A-Z]{2,24}(?![A-Za-z0-9-])|[A-Za-z][a-z]{1,23}(?![a-z0-9-]))",
        description="e-mail address",
    ),
    Detector(
        "iban",
        "IBAN",
        _lead("[A-Z]", _ALN, r"[A-Z][0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}+(?:[ ]?[A-Z0-9]{1,3})?") + ALNUM_R,
        _typed("IBAN", v.iban),
        description="IBAN (mod-97 check)",
    ),
    Detector(
        "cn_id",
        "CN_ID",
        _lead(
            "[1-9]",
            _ALN,
            r"[0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]",
            num=True,
            glue=True,
        )
        + GLUE_R,
        _typed("CN_ID", v.cn_resident_id),
        description="PRC resident identity number (GB 11643: birth date and check digit)",
    ),
    Detector(
        "cn_id_grouped",
        "CN_ID",
        # Written in groups (``1101 0119 9001 0112 37``, ``110101 19900101 1237``).
        _lead("[1-9]", _ALN, r"[0-9]{2,5}[ -][0-9]{2,8}(?:[ -][0-9]{1,8}){1,3}[Xx]?", num=True, glue=True)
        + GLUE_R,
        _cn_id_grouped,
        description="PRC resident identity number in groups of digits (same checks)",
    ),
    Detector(
        "cn_uscc",
        "CN_USCC",
        _lead(_USCC, _ALN, _USCC + "[0-9]{6}" + _USCC + "{10}") + ALNUM_R,
        _typed("CN_USCC", v.cn_uscc),
        description="Unified Social Credit Code (GB 32100 check character)",
    ),
    Detector(
        "card",
        "CREDIT_CARD",
        _lead(
            "[0-9]",
            _ALN,
            r"(?:[0-9]{12,18}|[0-9]{3}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{1,4}(?:\1[0-9]{1,3})?"
            r"|[0-9]{3}([ -])[0-9]{6}\2[0-9]{4,5})",
            num=True,
            glue=True,
        )
        + GLUE_R,
        _card,
        description="payment card: UnionPay 62... (CN_BANK_CARD) or international (issuer prefix + Luhn)",
    ),
    Detector(
        "mac",
        "MAC",
        _lead(
            _HEX,
            "[0-9A-Za-z:-]",
            "(?:"
            + _HEX
            + r"([:-])"
            + _HEX
            + r"{2}(?:\1"
            + _HEX
            + "{2}){4}|"
            + _HEX
            + r"{3}\."
            + _HEX
            + r"{4}\."
            + _HEX
            + "{4})",
        )
        + "(?![0-9A-Za-z:-])",
        _mac,
        description="MAC address (not the all-ones broadcast or all-zero address)",
    ),
    Detector(
        "ipv6",
        "IPV6",
        _lead(
            "[0-9A-Fa-f:]",
            "[0-9A-Za-z:.]",
            "(?:(?<=:)|" + _HEX + "{0,3}:)" + _HEX + r"{0,4}:[0-9A-Fa-f:]*+(?:\.[0-9]{1,3}){0,3}",
        )
        + "(?![0-9A-Za-z:])",
        _typed("IPV6", v.ipv6),
        description="IPv6 address",
    ),
    Detector(
        "ipv4",
        "IPV4",
        _lead("[0-9]", "[0-9A-Za-z_.]", r"[0-9]{0,2}(?:\.[0-9]{1,3}){3}") + r"(?![0-9A-Za-z_]|\.[0-9])",
        _typed("IPV4", v.ipv4),
        description="IPv4 address",
    ),
    Detector(
        "cn_phone",
        "CN_PHONE",
        _lead(
            # Letters may touch the bare number (``Tel13911960587``), not a ``+86``/``0086`` prefix.
            "[+0(1](?:(?<=1)" + GLUE_L + "|(?<![0-9A-Za-z_].))",
            "",
            r"(?:(?<=\+)86[ -]?1|(?<=0)086[ -]?1|(?<=\()\+?86\)[ -]?1|(?<=1))[3-9][0-9](?:[ .-]?[0-9]{4}){2}",
            num=True,
            glue=True,
        )
        + GLUE_R,
        description="PRC mobile number (1[3-9]x, optional +86, spaces, dots or dashes)",
    ),
    Detector(
        "cn_landline",
        "CN_LANDLINE",
        # Area codes: 010 and 02x (3 digits, local numbers of 8) may be written without a separator;
        # 4-digit codes (0[3-9]xx) need a separator or parentheses, or any 12-digit number starting
        # with 0 would be a landline.
        _lead(
            "[+0(]",
            _ALN,
            r"(?:(?<=\+)86[ -]?" + _AREA_INTL + r"[ -]?|(?<=0)086[ -]?" + _AREA_INTL + r"[ -]?"
            r"|(?<=\()0[1-9][0-9]{1,2}\)[ -]?|(?<=0)(?:10|2[0-9])[ -]?|(?<=0)[3-9][0-9]{2}[ -])"
            r"[2-9][0-9]{6,7}(?:[ ]?(?:-|转|ext\.?)[ ]?[0-9]{1,5})?",
            num=True,
        )
        + NUM_R,
        description="PRC landline with area code",
    ),
    Detector(
        "phone_intl",
        "PHONE",
        # A dangling ``x`` (an extension marker without its number) belongs to the number.
        _lead(
            r"\+",
            "[0-9A-Za-z_+]",
            r"[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,5}+\)?){2,6}" + _EXT + "(?:x(?![A-Za-z]))?",
        )
        + GLUE_R,
        _phone,
        description="international number (+country code): a possible number for its country (libphonenumber)",  # noqa: E501
    ),
    Detector(
        "phone_nanp",
        "PHONE",
        _lead(
            "[+0-9(]",
            _ALN,
            r"(?:(?<=\+)1[ .-]?"
            + _NANP_AREA
            + r"|(?<=1)[ .-]?"
            + _NANP_AREA
            + r"|(?<=0)01[ .-]?"
            + _NANP_AREA
            + r"|(?<=\()[0-9]{3}\)[ ]?|(?<=[0-9])[0-9]{2}[.-])[0-9]{3}[.-][0-9]{4}"
            + _EXT,
            num=True,
        )
        + NUM_R,
        description="North American number ((555) 123-4567, 555-123-4567, +1 ...)",
    ),
    Detector(
        "phone_nanp_bare",
        "PHONE",
        # Ten digits with no separator: a valid NANP area code and exchange (N11 excluded). Unix
        # times in seconds start with 1 and are never taken.
        _lead("[2-9]", _ALN, r"(?!11)[0-9]{2}[2-9](?!11)[0-9]{6}", num=True) + NUM_R,
        description="North American number written as ten digits (area code and exchange 2-9)",
    ),
    Detector(
        "us_ssn",
        "US_SSN",
        _lead("[0-9]", _ALN, r"[0-9]{2}([- ])[0-9]{2}\1[0-9]{4}", num=True) + NUM_R,
        _typed("US_SSN", v.us_ssn),
        description="US social security number (area, group and serial rules)",
    ),
    Detector(
        "cn_passport",
        "CN_PASSPORT",
        _lead("[EGDSP]", _ALN, r"(?:(?<=[EG])[0-9]{8}|(?<=E)[A-HJ-NP-Z][0-9]{7}|(?<=[DSP])E[0-9]{7})")
        + ALNUM_R,
        description="PRC passport number (E/G + 8 digits, EA1234567, DE/SE/PE + 7 digits)",
    ),
)

ENTITY_TYPES: tuple[str, ...] = tuple(
    dict.fromkeys([d.type for d in BUILTIN if d.name != "card"] + ["CN_BANK_CARD", "CREDIT_CARD"])
)

# -- names and addresses (PERSON, ADDRESS) and cue-word IDs (WECHAT) ----------------------------------
# A second tier: gazetteers and cue words, not checksums. It runs as its own scan (``names_finder``),
# after the first tier; policy types PERSON, ADDRESS and WECHAT.
# All data is written here or ships with the package (nothing is fetched or downloaded at run time): the
# most common Chinese surnames (covering ~95% of the population), provinces and large cities, the most
# common US/UK first names and surnames, street suffixes of the US/UK/CA postal standards, and the
# common Chinese words of ``zh_words.txt`` (bare names, below).
_ZH_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
    "常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴"
    "霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚"
    "岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
    "闻莘洪晋宣萧阎赖官封谈匡鞠惠荆冀郁胥储栗燕楚鄢劳谌奚粟冼蔺屠禹祖漆卿狄扈晁芮阙邸雍辜裘亓邰赫逯茹嵇湛戎茅揭尉檀昝衡"
    "薄慕钮郄翦厉郗"
)
_ZH_COMPOUND = (
    "欧阳|司马|诸葛|上官|东方|皇甫|尉迟|公孙|慕容|令狐|长孙|宇文|司徒|夏侯|端木|轩辕|呼延|南宫|闻人|澹台"
)
# Characters that do not occur in given names here but do right after a name (or in the words a
# surname character also starts: 项目, 全班, 高度): a candidate's given name never holds them.
_ZH_STOP = (
    "的了是在和有我你他她它这那个们说就也都而及与或但把被对从向给为于以之其中上下不很会能要可先女经老总副部长"
    "门司理室处局科组队班级校院所厂店区市省县镇村路街号楼层电手身地住性年男等已将请并让位同事业作工产品公客户"
    "目度种些每各该此只再又还更最太非没无时日月分元号码址邮箱话机证件卡银行信息资料联系人姓名称谢您好吗呢吧啊法管理看全"
)
_ZH_GIVEN = f"(?:(?![{_ZH_STOP}])[\\u4e00-\\u9fff])"
# Bare names (``感谢张伟的报告``, no cue word, title or verb): the surnames a bare name may start with. Left
# out are those that are also everyday words and, on real text, started more false names than real
# ones (高 于 向 时 应 万 马 曾 钱 白 方 金 全 连 ...: counted on the first half of the People's Daily
# 1998-01 corpus and 6 000 product reviews, see ``bench/redaction_realtext.py``); names with them
# still need a cue, a title or a verb.
_ZH_BARE_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙朱胡郭何林罗郑梁谢宋唐许韩冯邓曹彭肖田董袁潘蒋蔡余叶程魏吕丁沈姚姜崔谭陆汪范石廖贾夏韦傅邹孟熊秦邱江尹薛闫侯陶顾毛郝龚邵覃戴孔汤温康施樊葛邢安齐乔伍庞颜倪聂翟殷詹耿兰焦俞柳甘宁"
    "符舒阮柯童季裴霍苗谷盛翁冉骆辛靳鲍喻祁蒲滕屈饶牟尤穆卓缪简芦褚娄窦戚岑宫卜晏宗瞿佟臧闵苟邬卞姬仇栾隋刁荣巫寇甄丛仲虞敖巩佘迟邝莘洪宣萧阎赖匡鞠惠荆冀郁胥栗燕楚鄢谌奚粟冼蔺屠禹祖卿狄扈晁芮阙邸雍辜裘亓邰"
    "赫逯茹嵇湛戎茅尉檀昝衡"
)
# Characters a bare name's given name never holds: the stop characters and ``摄`` (a photo credit,
# ``记者王红摄``).
_ZH_BARE_NOT_GIVEN = frozenset(_ZH_STOP + "摄")
# Stop characters that are also common in given names (``钱其琛``, ``李长春``, ``尉健行``): the ones most
# often in the names the rules missed on the first half of the People's Daily corpus. One is a
# given-name character only next to a character common in given names (``*`` in the word list), the
# two making no word (``李长春``, not ``李长期``).
_ZH_SOFT_STOP = frozenset("其长中工行元全年之有先人公")
_ZH_SOFT_STOP_CLASS = "[" + "".join(sorted(_ZH_SOFT_STOP)) + "]"
_ZH_HARD_STOP = _ZH_BARE_NOT_GIVEN - _ZH_SOFT_STOP
_ZH_BARE_SURNAME_SET = frozenset(_ZH_BARE_SURNAMES)
# A second given-name character that a stop character or a word would refuse (``金大中``, ``王建新``:
# 新报 is a word) is taken right before what closes a name: a punctuation mark, ``报`` (报道) or ``说``;
# unless it is one of these function words, which end a clause there as often (``会见王明时，``), ``摄`` or
# ``作`` (credits: ``记者王红摄）``), or the last character of a place (``陈屿镇，``, ``陶然亭，``).
_ZH_NAME_CLOSE = frozenset("，。、；：！？）)》”报说")
_ZH_NEVER_LAST_GIVEN = frozenset(
    "的了是在我你他她它这那个们说就也都而及与或但把被对从向给为于以其上下不很会能要可将已并让请等时所还又再更最没无此各该每些摄作"
    "镇乡村县区市省州路街巷港湾岛寺宫殿馆院校厂店园亭阁桥庄"
)
# After a numeral or a demonstrative a surname character is a measure word (``一张光盘``, ``这张彩页``).
_ZH_BEFORE_MEASURE = frozenset("一二两三四五六七八九十百千几这那每哪某半整")
# The common words a bare name must not be taken from (``王国``, ``提高``, ``向大家``): build-time data
# from jieba's dictionary (``deploy/tools/build_zh_words.py``), read when a redactor first needs it.
ZH_WORDS_PATH = Path(__file__).with_name("zh_words.txt")

# After a cue word a given name may hold the stop characters that are common in names (``郑秋月``,
# ``陈建中``, ``叶俊男``, ``罗信宏``, ``吕品妍``), and a name may be written with a space after the surname
# (``联系人：王 小明``) or between all its characters (``王 小 明``, then no Chinese character right
# after: ``王 明 电话``).
_ZH_CUE_GIVEN = "(?:(?![" + "".join(c for c in _ZH_STOP if c not in "月中男信品") + "])[\\u4e00-\\u9fff])"
_ZH_NAME_SPACED = (
    f"(?:{_ZH_COMPOUND}|[{_ZH_SURNAMES}])"
    f"(?:(?:[ ]{_ZH_CUE_GIVEN}){{2}}(?![\\u4e00-\\u9fff])|[ ]?{_ZH_CUE_GIVEN}{{1,2}})"
)
_ZH_TITLES = (
    "先生|女士|小姐|经理|老师|总监|主任|医生|教授|律师|博士|工程师|同志|大夫|护士|会计|董事长|总经理|校长|院"
    "长"
)
# Words that follow a name in a sentence (``张伟说``, ``和黄桂芝一起``), and what may come before it.
_ZH_VERBS = (
    "说|表示|认为|提出|一起|告诉|打电话|来了|去了|的电话|的手机|的邮箱|的地址|的身份证|签字|发来"
    "|指出|强调|介绍|宣布|透露|会见|一行|等人|的《"
)
_ZH_VERB_RE = _ZH_VERBS.replace("说|", "说(?![法服话]|明(?!天))|", 1)
_ZH_NAME_LEFT = "和与跟给让请叫是我他她天上见找问对向由被，。、：:；;！!？?"
# What may come right before a foreign name at the start of a clause (``随同克林顿总统``).
_ZH_FOREIGN_LEFT = _ZH_NAME_LEFT + "的同"
# The last characters of posts and roles (``首席执行官``, ``经济学家``, ``领导人``, ``5号``, ``队员``): a name
# often comes right after them. Counted on the MSRA training part: each of these characters comes before
# more foreign names than other runs.
_ZH_POST_LAST = "长统理练席人号员将卿家相手队求锋裁援臣军官犯卫袖令师星"
# Where a bare foreign name may start besides: after the last character of a post (``首席执行官威尔``,
# ``经济学家穆萨``, ``领导人舍舍利``, ``5号罗纳尔多``) or after 而/但.
_ZH_FOREIGN_BARE_LEFT = _ZH_FOREIGN_LEFT + _ZH_POST_LAST + "而但"
_ZH_NAME_CUES = (
    "姓名|名字|联系人|联络人|收件人|收货人|寄件人|签收人|申请人|借款人|担保人|经办人|负责人|法定代表人|法人代表"
    "|持卡人|户主|开户人|委托人|受益人|投保人|被保险人|我叫|我是|叫做|签名|署名"
)
# Words that name a role, not a person: a name follows only after a colon (``客户：张三``, not 客户时间).
_ZH_ROLE_CUES = "客户|患者|病人|乘客|住户|业主|员工|被告人?|原告|当事人|本人|学生|老板"
# Titles and posts written right before a name (``记者王红``, ``外长李岚清``, ``经理李明``); the titles of
# ``_ZH_TITLES`` come before a name too.
_ZH_ROLES = (
    "记者|通讯员|主席|副主席|总理|副总理|总书记|书记|副书记|部长|副部长|省长|副省长|市长|副市长|县长|区长|局长"
    "|副局长|厂长|会长|委员|委员长|秘书长|总统|副总统|外长|大使|院士|医师|教练|选手|队长|司令员|政委|参谋长|发言人"
    "|主持人|作者|编辑|导演|总裁|董事|处长|科长|所长|站长|行长|社长|馆长|组长|班长"
)
# Foreign names written in Chinese characters (``总统克林顿``, ``教练福格茨``, ``主席阿维兰热``): the
# characters of the standard transliteration tables that names are spelled with. After a title or post,
# a run of two to six of them (parts joined by ``·``: ``约翰·西``) that is no everyday word is a name.
# Place names are spelled with the same characters (``巴基斯坦``, ``莫斯科``): a run with no cue is a
# name only at a clause start, with three letters or more, and not on the foreign place list
# (``person_zh_foreign_bare``).
_ZH_FOREIGN_CHARS = frozenset(
    "阿埃艾安昂奥巴拜班邦贝本比彼宾波伯博布采查达戴丹道德登迪蒂丁杜顿多厄恩尔法菲费芬弗福盖甘冈戈格根古哈海汉"
    "豪赫亨胡霍基吉加贾杰金卡凯坎康科克肯库奎拉莱赖兰朗劳勒雷里利莉林琳隆卢鲁伦罗洛马迈曼梅门蒙米莫姆穆纳奈南"
    "内尼涅努诺帕潘佩皮珀普齐奇乔切琼丘萨塞桑瑟森沙尚舍什施舒斯松苏索塔泰坦汤特图托瓦万旺威维韦温沃乌西希锡谢"
    "辛休雅亚扬耶伊因尤约泽扎詹兹佐京蓬茨夫翰延默麦若捷热"
)
_ZH_FOREIGN_MAX = 6
_ZH_FOREIGN_CLASS = "[" + "".join(sorted(_ZH_FOREIGN_CHARS)) + "]"
_ZH_FOREIGN_RUN = f"{_ZH_FOREIGN_CLASS}(?:·?{_ZH_FOREIGN_CLASS}){{1,{_ZH_FOREIGN_MAX - 1}}}"
# A foreign name with no cue around it (``person_zh_foreign_bare``: ``，克林顿没有正面回答``): a whole run of
# three to six transliteration characters at a clause start. Two are part of a word or a place too often
# (``西班牙``, ``沙特``); places are told apart by the foreign place list, and a run that is a place and
# one letter more (``莫斯科多``, ``科索沃阿``) is no name either.
_ZH_FOREIGN_BARE_MIN = 3
# Such a run's letters after its first, and what may not come right after it.
_ZH_FOREIGN_BARE_REST = f"(?:·?{_ZH_FOREIGN_CLASS}){{{_ZH_FOREIGN_BARE_MIN - 1},{_ZH_FOREIGN_MAX - 1}}}"
_ZH_FOREIGN_GOES_ON = f"[·{_ZH_FOREIGN_CLASS[1:]}"
# Posts and callings written before a name only, Chinese or foreign (``首相桥本``, ``前锋罗纳尔多``,
# ``作家王蒙``): after a name they are words of their own too often (``我国作家``).
_ZH_ROLES_BEFORE = (
    "首相|国王|王储|亲王|王子|公主|女王|议长|特使|将军|上校|前锋|后卫|中锋|门将|主帅|外援|名将|老将|球星|画家|作家"
    "|诗人|歌手|演员"
)
# A person's age before a name (``22岁的琼斯``, ``20岁的于金山``): the name is no word at all there
# (``40多岁的师傅``, ``10来岁的孙子``: jieba tags both as names).
_ZH_AGE = "岁的"
# How far after the name that starts it a list of names goes on (``、`` to the last item's start): within
# the left context a stream keeps (``streaming.CONTEXT_CHARS``, 64), with room for that name and its title.
_ZH_LIST_SPAN = 48
# How many reporters' names a byline may list (``记者白剑峰、赵永新报道``).
_ZH_BYLINE_MAX = 4
# What ends an item of a list of names (``张三、李四、王五等``).
_ZH_LIST_END = frozenset("、，,。；;：:）)（(等和与及 \t\n")
# After a title any surname may start the name but these two, which are words there (``总统谈内政``).
_ZH_ROLE_SURNAMES = frozenset(_ZH_SURNAMES) - frozenset("谈向")
_PROVINCES = (
    "北京|天津|上海|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东|海南|四川|贵州"
    "|云南|陕西|甘肃|青海|台湾|内蒙古|广西|西藏|宁夏|新疆|香港|澳门"
)
_CITIES = (
    "广州|深圳|杭州|南京|武汉|成都|西安|苏州|长沙|郑州|沈阳|青岛|宁波|东莞|无锡|济南|大连|福州|厦门|合肥|昆明|哈尔滨"
    "|长春|石家庄|南昌|贵阳|南宁|太原|兰州|乌鲁木齐|呼和浩特|银川|西宁|拉萨|海口|三亚|珠海|佛山|温州|绍兴|嘉兴|台州"
    "|金华|烟台|潍坊|徐州|常州|南通|扬州|泉州|漳州|惠州|中山|江门|汕头|湛江|洛阳|宜昌|襄阳|岳阳|株洲|桂林|柳州|绵阳"
    "|遵义|大同|唐山|保定|廊坊|秦皇岛|邯郸|淄博|临沂|济宁|盐城|镇江|湖州|芜湖|赣州|九江|包头|鄂尔多斯|吉林|大庆"
)
# Prefecture- and county-level names (``朝阳区``, ``浦东新区``, ``昆山市``): an address may start with one
# (``朝阳区建国路88号``). Build-time data from cpca's administrative divisions
# (``deploy/tools/build_zh_places.py``); 3 000 names, read once when this module is imported.
ZH_PLACES_PATH = Path(__file__).with_name("zh_places.txt")
# Places outside China spelled with ``_ZH_FOREIGN_CHARS`` (``格鲁吉亚``, ``伊朗``; also ``亚特兰大``, one
# other character after the run): such a run is a place, not a name, before a post or a verb and with no
# cue (``deploy/tools/build_zh_foreign_places.py``; read with the word list, when first needed).
ZH_FOREIGN_PLACES_PATH = Path(__file__).with_name("zh_foreign_places.txt")
# The Chinese names of well-known people (``鲁迅``, ``李鹏``, ``温家宝``, ``马克思``), from CC-CEDICT's
# entries with a life span (``deploy/tools/build_zh_known_names.py``): taken where a word keeps the
# bare-name rules off them (``李鹏`` is a dictionary word, ``温家`` starts ``温家宝``); and CC-CEDICT's
# Japanese surnames. 1 398 names and 108 surnames, read once when this module is imported.
ZH_KNOWN_NAMES_PATH = Path(__file__).with_name("zh_known_names.txt")


def _data_lines(path: Path) -> list[str]:
    """The lines of a generated data file, without its ``#`` header."""
    with path.open(encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if not line.startswith("#")]


_ZH_PLACES = tuple(_data_lines(ZH_PLACES_PATH))
_ZH_KNOWN_LINES = _data_lines(ZH_KNOWN_NAMES_PATH)
_ZH_KNOWN_NAMES = tuple(line for line in _ZH_KNOWN_LINES if not line.endswith(" +"))
# Japanese surnames (``桥本``, ``池田``; ``+`` in the same file): a Japanese name before a post, a title or
# a verb starts with one (``person_zh_japanese``).
_ZH_JAPANESE_SURNAMES = frozenset(line[:-2] for line in _ZH_KNOWN_LINES if line.endswith(" +"))
_ZH_PLACE_SET = frozenset(_ZH_PLACES)
# A name's last two characters -> the lengths of the names that end so, longest first (most suffix
# characters in prose end no name: ``的市``, one lookup).
_ZH_PLACE_TAILS: dict[str, tuple[int, ...]] = {}
for _name in _ZH_PLACES:
    _ZH_PLACE_TAILS[_name[-2:]] = tuple(
        sorted({*_ZH_PLACE_TAILS.get(_name[-2:], ()), len(_name)}, reverse=True)
    )
_ZH_UNIT = (
    "省|自治区|特别行政区|市|自治州|州|盟|地区|区|县|旗|镇|乡|街道|村|社区|路|段|街|大道|道|巷|弄|里|胡同|小区|花园|家园"
    "|公寓|大厦|广场|新村|苑|园区|开发区|工业区|新区"
)
# Each unit and number may follow a space (``北京市 海淀区 中关村大街 27号``: a full-width space folds to
# one too); the address never ends in one. A unit's name holds no ``的`` (U+7684): ``友谊路150号梁军的家里``
# is no unit ``里``.
_CJK_BUT_DE = "\\u4e00-\\u7683\\u7685-\\u9fff"
_ZH_ADDR_UNIT = f"(?:[ ]?[{_CJK_BUT_DE}0-9]{{0,8}}?(?:{_ZH_UNIT}))"
_ZH_ADDR_NUM = (
    "(?:[ ]?[0-9A-Za-z一二三四五六七八九十百零〇甲乙丙丁\\-]{1,6}"
    "(?:号院|号楼|号|弄|栋|幢|座|单元|室|楼|层|户|期|组)){0,6}(?:[ ]?[0-9]{6}(?![0-9]))?"
)
# What names a housing estate or a building after a house number.
_ZH_BUILDING = "小区|花园|家园|公寓|大厦|广场|新村|苑|园区|大楼|中心|商城|市场"
# After a space, what goes on with the address: a unit or a number within the next few characters.
_ZH_ADDR_GOES_ON = f"[\\u4e00-\\u9fff0-9A-Za-z\\-]{{0,8}}?(?:{_ZH_UNIT}|号|楼|室|单元|栋|幢|层)"
_ZH_ADDR = f"(?:{_ZH_ADDR_UNIT}{{1,7}}{_ZH_ADDR_NUM})"
_ZH_ADDR_TAIL = re.compile(_ZH_ADDR)
# Where an address ends after its house number or room when anything but another unit follows
# (``住在北横东街9号楼的老订户``, ``来到友谊路150号梁军的家里``): what follows is no longer the address.
_ZH_ADDR_NUMBER_END = (
    "(?:(?<=[0-9〇零一二三四五六七八九十百][号室层户])|(?<=号楼|号院))"
    f"(?![0-9A-Za-z号楼院栋幢座单元室层户线之\\-]|[ ](?={_ZH_ADDR_GOES_ON}))"
    # A housing estate or a building may follow the number (``幸福路5号阳光小区3栋``).
    f"(?![{_CJK_BUT_DE}]{{0,8}}?(?:{_ZH_BUILDING}))"
)
# What follows a cue word or verb: the address up to punctuation, the next field or the end of its
# house number.
_ZH_ADDR_AFTER_CUE = (
    "(?:是|为|在|[：:])?[ \\t]*"
    f"(?P<value>(?:[\\u4e00-\\u9fff0-9A-Za-z#\\-（）()]|[ ](?={_ZH_ADDR_GOES_ON})){{4,60}}?"
    "(?:[ ]?[0-9]{6}(?![0-9]))?)"
    f"(?=[，,。；;！!？?、\\t\\n\\r\\f\\v]|[ ](?!{_ZH_ADDR_GOES_ON})|$|电话|手机|联系|邮编|收件人|姓名"
    f"|{_ZH_ADDR_NUMBER_END})"
)
_ZH_ADDR_CUES = "地址|住址|居住地|收货地址|通讯地址|户籍地|户籍|籍贯|住所地|所在地"
# Verbs before an address: what follows them is one only when it has a street-level part or starts
# with a place (``住在这里``, ``送到灾民手中`` are not).
_ZH_ADDR_VERBS = "住在|家住|居住在|现住|寄到|寄往|送到|发往"
# Not an address cue after these (``邮件地址``, ``IP地址``).
_ZH_ADDR_NOT_AFTER = "(?<!邮件)(?<!邮箱)(?<![Ii][Pp])(?<!网络)(?<!MAC)(?<!服务器)"
# Without a cue word an address needs a street-level part: a digit, a road, a number, a building.
_ZH_FINE = re.compile(r"[0-9路街巷弄号栋幢室]|大道|小区|胡同|大厦|单元|社区|新村")
# A road and a house number with no district or city before them (``约在中关村大街27号见面``): the road's
# name starts after one of these (or after no Chinese character) and is 1-6 characters long. Not 道 or
# 里 as the road's kind (知道3号, 这里3号楼).
_ZH_ROAD_FENCE = "在到于往至去住约是的了和与及从向"
_ZH_ROAD_KIND = "大街|大道|路|街|巷|弄|胡同"
# Where an address without a province or city may be (one search for both): the suffix of a
# county-level name before more of an address, or a road's kind before a house number (the same
# kinds as ``_ZH_ROAD_KIND``). One class first: ``re`` skips to candidates at C speed (a top-level
# alternation is tried at every position). The empty group ``place`` tells the suffix from a road.
_ZH_ADDR_ANCHOR = re.compile(
    "[区县市旗州盟路街巷弄大胡]"
    "(?:(?<=[区县市旗州盟])(?P<place>)(?=[\\u4e00-\\u9fff0-9])"
    "|(?:(?<=[路街巷弄])|(?<=大)[街道]|(?<=胡)同)(?:[一二三四五六七八九十]段)?[0-9]{1,5}号(?!线))"
)

_EN_FIRST = frozenset(
    """James John Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel Matthew
    Anthony
    Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy Ronald Edward Jason Jeffrey Ryan Jacob
    Gary Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin Samuel Gregory Alexander Frank
    Patrick
    Raymond Jack Dennis Jerry Tyler Aaron Jose Adam Nathan Henry Douglas Zachary Peter Kyle Ethan Walter Noah
    Jeremy Christian Keith Roger Terry Gerald Harold Sean Austin Carl Arthur Lawrence Dylan Jesse Jordan Bryan
    Billy Joe Bruce Gabriel Logan Albert Willie Alan Juan Wayne Elijah Randy Roy Vincent Ralph Eugene Russell
    Bobby Mason Philip Louis Travis Bradley Luis Carlos Manuel Victor Shawn Derek Dustin Cody Curtis Todd
    Allen
    Marcus Mario Alex Evan Luke Ian Cameron Caleb Hunter Isaac Colin Trevor Craig Chad Erik Brett Corey Jared
    Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Margaret Sandra
    Ashley Kimberly Emily Donna Michelle Carol Amanda Dorothy Melissa Deborah Stephanie Rebecca Sharon Laura
    Cynthia Kathleen Amy Angela Shirley Anna Brenda Pamela Emma Nicole Helen Samantha Katherine Christine
    Debra
    Rachel Carolyn Janet Catherine Maria Heather Diane Ruth Julie Olivia Joyce Virginia Victoria Kelly Lauren
    Christina Joan Evelyn Judith Megan Andrea Cheryl Hannah Jacqueline Martha Gloria Teresa Ann Sara Madison
    Frances Kathryn Janice Jean Abigail Alice Judy Sophia Denise Amber Doris Marilyn Danielle Beverly Isabella
    Theresa Diana Natalie Brittany Charlotte Marie Kayla Alexis Lori Tiffany Crystal Erin Kristen Kristina
    Courtney Allison Tammy Vanessa Monica Erica Tara Leslie Dana Jill Holly Tracy Wendy Kristin Alicia Jenna
    Brooke Sabrina Natasha Caitlin Morgan Katie Mia Chloe Ava Grace Lily Zoe Ella Aria Harper Ellie Nora Lucy
    Claire Sophie Oliver Harry Jake Charlie Thomas Freddie Alfie Archie Oscar Leo Jamie Lewis Callum Connor
    Rhys Liam Owen Declan Fiona Siobhan Aoife Niamh Eleanor Molly Poppy Isla Freya Imogen Amelia Jessica
    Wei Ming Jun Hui Yan Li Xin Mohammed Muhammad Ahmed Ali Omar Fatima Aisha Priya Rahul Amit Anil Raj Sanjay
    Hiroshi Yuki Kenji Akira Haruto Sakura Min Ji Hyun Seo Jin Carlos Javier Miguel Alejandro Sofia Lucia
    Valentina Camila Diego Pablo Pedro Ricardo Fernando Ana Rosa Elena Francesca Giulia Marco Luca Hans Klaus
    Stefan Pierre Jean Marie Sophie Lukas Anton Ivan Dmitri Olga Natalia Sergei Andrei Yusuf Mehmet Ayse""".split()  # noqa: E501
)
_EN_LAST = frozenset(
    """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez
    Wilson
    Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis
    Robinson
    Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera
    Campbell
    Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris
    Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox
    Ward
    Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo
    Sanders Patel
    Myers Long Ross Foster Jimenez Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes
    Gonzales Fisher Vasquez Simmons Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace
    Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall
    Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen Freeman Webb Tucker
    Guzman
    Burns Crawford Olson Simpson Porter Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks
    Holmes
    Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels
    Ferguson
    Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce Vazquez
    Hansen
    Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson Carroll Lane Riley Andrews
    Alvarado
    Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena Richards Contreras Willis Carpenter Lawrence
    Sandoval
    Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo Lin He Gao Luo Singh Kumar Sharma Khan
    Tanaka Suzuki Sato Watanabe Park Choi Jung Muller Schneider Fischer Weber Becker Dubois Rossi Russo
    Ferrari
    Murray O'Brien O'Connor O'Neill Walsh Byrne Evans Davies Jones Hughes Roberts Lloyd Price Morgan Thomson""".split()  # noqa: E501
)
_EN_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam|Rev|Capt|Sgt|Lt|Col|Judge|Officer|Nurse)\.?"
# A name word: ``Smith``, ``O'Brien``, ``Smith-Jones``, ``McElroy``, ``LaSalle``.
_EN_NAME_WORD = r"[A-Z](?:[a-z]+(?:['-]?[A-Z]?[a-z]+)?|'[A-Z][a-z]+)"
# Particles inside a name (``Andries van Dam``, ``Mario De La Guardia``) and a middle initial.
_EN_PARTICLES = r"(?:[ ](?:van|von|der|den|de|da|del|di|du|la|le|Van|Von|De|Da|Del|Di|Du|La|Le)){0,2}"
_EN_NAME = (
    _EN_NAME_WORD + r"(?:[ ][A-Z]\.?)?(?:" + _EN_PARTICLES + r"[ ]" + _EN_NAME_WORD + r"){0,2}(?![A-Za-z'])"
)
# In capitals (``VANCE WALKER``, ``STEPHEN H DYSON``): only after a cue or a title.
_EN_NAME_UP = r"[A-Z]{2,}(?:[ ][A-Z]\.?)?(?:[ ][A-Z]{2,}(?:-[A-Z]{2,})?){1,2}(?![A-Za-z])"
_EN_NAME_CUES = (
    r"(?:[Mm]y name is|[Mm]y name's|[Nn]ame[ ]?:|[Ff]ull [Nn]ame[ ]?:|[Dd]ear|[Cc]ontact(?: person)?:|[Ss]in"
    r"cerely,"
    r"|[Rr]egards,|[Cc]heers,|[Tt]hanks,|[Pp]atient:|[Cc]ustomer:|[Cc]lient:|[Ss]igned(?: by)?:?|[Cc]ardhold"
    r"er:"
    r"|[Aa]ttn\.?:?|[Aa]ttention:|[Ss]pouse:|[Ee]mployee:|[Aa]pplicant:|[Tt]enant:|[Bb]orrower:|[Rr]ecipient:"
    r"|[Cc]alled|[Nn]amed|[Ff]rom:|[Tt]o:|[Cc]c:)"
)
_EN_STREET = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir"
    "|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Close|Crescent|Cres|Row|Mews|Gardens|Grove|Hill|Hills|Park"
    "|Alley|Bridge|Brook|Brooks|Burg|Burgs|Bypass|Camp|Canyon|Cape|Causeway|Center|Centre|Cliff|Club|Common"
    "|Corner|Corners|Course|Courts|Cove|Coves|Creek|Crest|Crossing|Crossroad|Curve|Dale|Dam|Divide|Drives|Estate"
    "|Estates|Expressway|Extension|Falls|Ferry|Field|Fields|Flat|Flats|Ford|Fords|Forest|Forge|Forges|Fork|Forks"
    "|Fort|Freeway|Garden|Gateway|Glen|Glens|Green|Greens|Harbor|Harbors|Haven|Heights|Hollow|Inlet|Island"
    "|Islands|Isle|Junction|Junctions|Key|Keys|Knoll|Knolls|Lake|Lakes|Land|Landing|Light|Lights|Loaf|Lock|Locks"
    "|Lodge|Loop|Mall|Manor|Manors|Meadow|Meadows|Mill|Mills|Mission|Motorway|Mount|Mountain|Mountains|Neck"
    "|Orchard|Oval|Overpass|Pass|Passage|Path|Pike|Pine|Pines|Plain|Plains|Plaza|Point|Points|Port|Ports|Prairie"
    "|Radial|Ramp|Ranch|Rapid|Rapids|Rest|Ridge|Ridges|River|Roads|Route|Shoal|Shoals|Shore|Shores|Skyway|Spring"
    "|Springs|Spur|Spurs|Station|Stravenue|Stream|Streets|Summit|Throughway|Trace|Track|Trafficway|Tunnel|Turnpike"
    "|Underpass|Union|Unions|Valley|Valleys|Via|Viaduct|View|Views|Village|Villages|Ville|Vista|Walk|Walks|Wall"
    "|Ways|Well|Wells|Wharf|Wynd"
)
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH"
    "|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|AS|GU|MP|VI|MH|PW|FM|AA|AE|AP|AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC"
    "|SK|YT"
)
_POSTCODE = (
    r"(?:[0-9]{5}(?:-[0-9]{4})?|[A-Z]{1,2}[0-9][A-Z0-9]?[ ][0-9][A-Z]{2}|[A-Z][0-9][A-Z][ ]?[0-9][A-Z][0-9])"
)
_EN_CITY = r"[A-Z][a-z]+(?:[ ][A-Z][a-z]+){0,2}"
# Street addresses as written in the US, UK and Canada (real ones: usaddress's labelled set, see
# bench/redaction_realtext.py): a house number (``6257A``, ``8938-40``), a direction (``N.``,
# ``Southwest``), one to five words in any case (``LaSalle``, ``DR MARTIN LUTHER KING JR``), a street
# type (``Drive``, ``PLACE``) and a direction after it; or a numbered road (``US Highway 278``,
# ``Route 309``); or, without a street type, a direction or a city with state and postcode after the
# words (``10 S. LaSalle, Ste. 1050``, ``1585 Broadway, New York, NY 10036``). Then a unit and a city.
_EN_DIR = (
    r"(?:[NS]\.[EW]\.|[NSEW]\.?|NE|NW|SE|SW|North|South|East|West|Northeast|Northwest|Southeast|Southwest"
    r"|NORTH|SOUTH|EAST|WEST)"
)
_EN_WORD = r"(?:[A-Z][a-z]*[A-Z]?[a-z]+|[0-9]{1,3}(?:st|nd|rd|th)|[A-Z](?=[ ]))"
_EN_STREET_TYPE = f"(?:{_EN_STREET})s?\\.?(?![A-Za-z])"
# All in capitals (``3849 W 69TH PLACE``): only with the street type in capitals too (``3 USB Ports``).
_EN_WORD_UP = r"(?:[A-Z]{2,}|[0-9]{1,3}(?:ST|ND|RD|TH)|[A-Z](?=[ ]))"
_EN_STREET_TYPE_UP = f"(?:{_EN_STREET.upper()})S?\\.?(?![A-Za-z])"
_EN_HOUSE = r"[0-9]{1,6}(?:-[0-9]{1,6})?[A-Za-z]?"
# Where a digit run that ends in a street's number goes on (``289 15th Street``).
_ORDINAL_ENDS = frozenset(("st", "nd", "rd", "th", "ST", "ND", "RD", "TH"))
_EN_ROUTE = (
    r"(?:(?:US|U\.S\.|State|County|Old|STATE|COUNTY|OLD|us|state|county|old|[A-Z][A-Za-z])[ ])?"
    r"(?:Highway|Hwy|Route|Rte|Rt|Road|HIGHWAY|HWY|ROUTE|ROAD|RTE|RT|highway|hwy|route|rte|rt|road|rd)\.?[ ]"
    # Wisconsin's county roads are letters (``COUNTY ROAD MM``).
    r"(?:No\.?[ ]|#[ ]?)?(?:[0-9]{1,4}[A-Z]?|[A-Z]{1,2})(?![A-Za-z0-9])"
    r"|(?:SR|CR|FM|US|I)[ -][0-9]{1,4}(?![A-Za-z0-9])"
)
_EN_UNIT = (
    r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Room|Rm|Fl|Flr|Floor|APT|SUITE|STE|UNIT|FLOOR|FL|#|apt|suite|ste"
    r"|unit|rm|flr|bldg)\.?[ ]?#?"
    r"[0-9A-Za-z-]{1,6}|[0-9]{1,3}(?:st|nd|rd|th|ST|ND|RD|TH)[ ](?:Floor|Fl|Flr|FLOOR|FL)\.?"
)
_EN_CITY_TAIL = (
    r"[ \n]+" + _EN_CITY + r"(?:,[ ]?|[ ])(?:(?:" + _US_STATES + r")[ ]" + _POSTCODE + r"|" + _POSTCODE + r")"
)
# All in lower case (``1407 herron dr``, ``303 s loudoun st``): the street types that are no everyday
# word in lower case, after words that are no function word or unit of time or distance (``a 2 hour
# drive``, ``5 train to the street``).
_EN_DIR_LOW = r"(?:[ns]\.?[ew]\.|[nsew]\.?|ne|nw|se|sw|north|south|east|west)"
_EN_NOT_STREET_WORD = (
    "the|a|an|of|to|in|on|at|by|for|and|or|is|are|was|were|be|been|with|from|that|this|these|those|it|as"
    "|per|my|our|your|his|her|their|its|more|less|than|then|not|no|new|old|other|each|every|all|any|some"
    "|hour|hours|hr|hrs|minute|minutes|min|mins|second|seconds|sec|day|days|week|weeks|month|months|year"
    "|years|mile|miles|mi|km|kilometer|kilometers|kilometre|kilometres|meter|meters|metre|metres|feet|foot"
    "|ft|yard|yards|block|blocks|lane|lanes|times|way|ways|test|tests"
)
_EN_WORD_LOW = f"(?:(?!(?:{_EN_NOT_STREET_WORD})[ ,.])[a-z][a-z'-]*[a-z]|[0-9]{{1,3}}(?:st|nd|rd|th))"
# What follows ``N.`` or ``S.`` in prose, not a street's name.
_EN_REGIONS = (
    r"(?:Korea|Dakota|Carolina|Ireland|Africa|America|Vietnam|Sudan|Cyprus|Macedonia|Ossetia|Wales|Pole|Side"
    r"|Atlantic|Pacific|Island|KOREA|DAKOTA|CAROLINA)"
)
_EN_STREET_ABBR_LOW = r"(?:st|ave|rd|blvd|ln|dr|ct|pl|ter|cir|pkwy|hwy|fwy|expwy|cswy|trl)\.?(?![A-Za-z])"
# Spelled out only after a house number of two characters or more (``4 wheel drive``, ``8 ball court``).
_EN_STREET_FULL_LOW = (
    r"(?:street|avenue|road|boulevard|lane|drive|court|place|terrace|circle|parkway|highway|freeway"
    r"|expressway|causeway|trail|plaza|way)(?![A-Za-z])"
)
_EN_ADDR = (
    _EN_HOUSE
    + r"[ ](?:"
    + f"(?:{_EN_DIR}[ ])?(?:{_EN_ROUTE})"  # first: ``State Road 75`` is no street called State
    + f"|(?:{_EN_DIR_LOW}[ ])?(?:{_EN_WORD_LOW}[ ]){{1,3}}{_EN_STREET_ABBR_LOW}"
    + f"(?:[ ]{_EN_DIR_LOW}(?![A-Za-z]))?"  # with the one after the group: ``5th street n. e.``
    + f"|(?<=[0-9][0-9A-Za-z][ ])(?:{_EN_DIR_LOW}[ ])?(?:{_EN_WORD_LOW}[ ]){{1,3}}{_EN_STREET_FULL_LOW}"
    + f"(?:[ ]{_EN_DIR_LOW}(?![A-Za-z]))?"
    + f"|(?:{_EN_DIR}[ ])?(?:{_EN_WORD}\\.?[ ]){{1,5}}{_EN_STREET_TYPE}"
    + f"|(?:{_EN_DIR}[ ])?(?:{_EN_WORD_UP}[ ]){{1,5}}{_EN_STREET_TYPE_UP}"
    + f"|{_EN_DIR}[ ][0-9]{{1,5}}[ ]{_EN_DIR}(?![A-Za-z])"  # a grid address: ``239 South 500 East``
    + f"|{_EN_DIR}[ ](?:{_EN_WORD}[ ]){{0,2}}{_EN_WORD}(?=,?[ ](?:{_EN_UNIT})|,?{_EN_CITY_TAIL})"
    # A one-letter direction and a name, as Chicago writes its addresses (``10 S. Dearborn``); not a
    # region (``2 N. Korean cities``).
    + f"|(?:[NSEW]\\.|So\\.|[NSEW](?=[ ][A-Z]))[ ](?!{_EN_REGIONS})(?:St\\.?[ ])?(?:{_EN_WORD}|[A-Z]{{2,}})"
    + "(?![A-Za-z0-9])"
    + f"|(?:{_EN_WORD}[ ]){{0,2}}{_EN_WORD}(?=,[ ](?:{_EN_UNIT}),{_EN_CITY_TAIL}|,{_EN_CITY_TAIL})"
    + r")"
    + f"(?:,?[ ](?:{_EN_DIR}|{_EN_DIR_LOW})(?![A-Za-z]))?"
    + f"(?:,?[ ](?:{_EN_UNIT}))?"
    + f"(?:,?{_EN_CITY_TAIL})?"
)


def trie_regex(words: Iterable[str]) -> str:
    """A regex for a set of literal words, factored by common prefixes (``re`` tries an alternation
    branch by branch; a trie tries one branch per character)."""
    root: dict = {}
    for w in set(words):
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        optional = "" in node
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 and len(alts[0]) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if optional else body

    return build(root)


def _char_class(chars: Iterable[str]) -> str:
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"


def pair_filtered_regex(words: Iterable[str]) -> str:
    """The same matches as ``trie_regex(words)`` (the longest word at a position), for a search
    through text where many characters start some word.

    ``trie_regex`` starts with one alternative per first character, and ``re`` tries all of them at
    every position whose character starts a word: with ~170 first characters ~320 ns a position, and in
    Chinese prose one character in seven starts a trigger word (一, 的, 发, 业, ...). Here the first
    character is a class and the second must be in the class of second characters (a lookahead), two
    table lookups that reject most of those positions; the rest try one alternative per second
    character, each checking the first character with a lookbehind, then the rest of the word as a
    trie. Alternatives exclude each other (each first and second character appear in one), so the
    longest word wins as in the trie."""
    words = set(words)
    singles = {w for w in words if len(w) == 1}
    by_second: dict[str, dict[str, set[str]]] = {}
    for w in words - singles:
        by_second.setdefault(w[1], {}).setdefault(w[0], set()).add(w[2:])
    alts = []
    for second, by_first in sorted(by_second.items()):
        # First characters whose pair is a whole word and starts no longer one share one lookbehind.
        pair_only = [first for first, rests in by_first.items() if rests == {""}]
        branches = [
            f"(?<={re.escape(first)}.){trie_regex(rests)}"
            for first, rests in sorted(by_first.items())
            if rests != {""}
        ]
        if pair_only:
            branches.append(f"(?<={_char_class(pair_only)}.)")
        alts.append(re.escape(second) + (branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"))
    body = f"(?={_char_class(by_second)})(?:{'|'.join(alts)})" if alts else "(?!)"
    if singles:  # a one-character word, when no longer word starts there
        body = f"(?:{body}|(?<={_char_class(singles)}))"
    return _char_class(w[0] for w in words) + body


def _words(alternation: str) -> list[str]:
    return [w for w in alternation.replace("?", "").split("|") if w]


# The second tier does not run its alternation over the text: a few C-speed passes find the words a
# name or an address must hold (a title, a cue word, a province or city, a gazetteer name, a house
# number), and only the detectors that word belongs to are tried, only where they can start.
_ZH_KIND: dict[str, str] = {
    **{w: "title" for w in _words(_ZH_TITLES)},
    **{w: "name_cue" for w in (*_words(_ZH_NAME_CUES), *_words(_ZH_ROLE_CUES))},
    **{w: "place" for w in (*_words(_PROVINCES), *_words(_CITIES))},
    **{w: "addr_cue" for w in _words(_ZH_ADDR_CUES)},
    **{w: "addr_verb" for w in _words(_ZH_ADDR_VERBS)},
    **{w: "verb" for w in _words(_ZH_VERBS)},
    **{w: "role" for w in _words(_ZH_ROLES)},
    **{w: "role_before" for w in _words(_ZH_ROLES_BEFORE)},
    _ZH_AGE: "age",
    # The look-alikes and short forms people write to get past filters (薇信, 加微, wx) too.
    **{
        w: "wechat"
        for w in ("微信", "V信", "薇信", "威信", "徽信", "加微", "加V", "加v", "加我微", "加我V", "加我v")
    },
    **{w: "wechat" for w in ("wechat", "WeChat", "Wechat", "WECHAT", "weixin", "Weixin", "vx", "VX", "Vx")},
    **{w: "wechat" for w in ("wx", "WX", "Wx")},
}
_ZH_TRIGGER = re.compile(pair_filtered_regex(_ZH_KIND))
# The one one-character trigger word (``说``; the unpacking fails when there are more: test for each
# then). Text that does not hold it (most text) is searched with ``_zh_trigger_pairs``.
(_ZH_SINGLE,) = (w for w in _ZH_KIND if len(w) == 1)


@functools.cache
def _zh_trigger_pairs() -> re.Pattern[str]:
    """``_ZH_TRIGGER`` without ``_ZH_SINGLE``: the search then does not try its lookbehind after every
    start that fails (~14% of the pass). Compiled when a names finder is built (~15 ms), not at import."""
    return re.compile(pair_filtered_regex(w for w in _ZH_KIND if w != _ZH_SINGLE))


# The kinds of words a name may follow.
_ZH_BEFORE_NAME = frozenset(("role", "title", "role_before", "age"))
# The kinds of words a foreign name may come before (``person_zh_foreign``), as its pattern has them
# (``说`` not before ``法``: ``说法``).
_ZH_AFTER_FOREIGN = frozenset(("role", "title", "verb"))
_ZH_AFTER_FOREIGN_AT = re.compile(f"{_ZH_ROLES}|{_ZH_TITLES}|{_ZH_VERB_RE}")
# A Japanese name may also come before a post that is written before other names (``桥本首相``).
_ZH_AFTER_NAME_ABROAD = _ZH_AFTER_FOREIGN | {"role_before"}
_ZH_AFTER_JAPANESE_AT = re.compile(f"{_ZH_AFTER_FOREIGN_AT.pattern}|{_ZH_ROLES_BEFORE}")
# The run a bare foreign name is taken from: the whole run (no transliteration character or joining ``·``
# on either side; at most ``_ZH_FOREIGN_MAX`` letters). The character class comes first, so that ``re``
# skips to candidates at C speed (a lookbehind first made the pass ~10% of the names tier's time on news);
# ``_zh_foreign_bare_name`` checks the clause start.
_ZH_FOREIGN_BARE_RUN = re.compile(
    f"{_ZH_FOREIGN_CLASS}(?<!{_ZH_FOREIGN_GOES_ON}[\\s\\S]){_ZH_FOREIGN_BARE_REST}(?!{_ZH_FOREIGN_GOES_ON})"
)
# A well-known person's name (``zh_known_names.txt``), the longest one starting at a character. Tried
# only where one of the names' first two characters are (``_zh_name_starts``): this trie's alternation of
# ~400 first characters, in the order of the code points, at every position cost four times as much on
# news.
_ZH_KNOWN_NAME = re.compile(trie_regex(_ZH_KNOWN_NAMES))
_ZH_KNOWN_FIRST = frozenset(name[0] for name in _ZH_KNOWN_NAMES)
_ZH_KNOWN_PAIRS = frozenset(name[:2] for name in _ZH_KNOWN_NAMES)
# On ASCII-only text (most English lines) only the ASCII cue words can match: substring tests (C speed,
# no regex state) tell whether any occurs, and only then does the pass run. Most of them hold an ``x``,
# which most lines do not: one test for it spares the tests for those words.
_ZH_ASCII_NEEDLES = tuple(sorted({w.lower() for w in _ZH_KIND if w.isascii()}))
_ZH_ASCII_NO_X = tuple(w for w in _ZH_ASCII_NEEDLES if "x" not in w)


def _has_zh_ascii_cue(text: str) -> bool:
    """Whether ASCII text holds one of ``_ZH_KIND``'s ASCII words, in any case (``WX``, ``WeChat``)."""
    low = text.lower()
    return _has_any(low, _ZH_ASCII_NEEDLES if "x" in low else _ZH_ASCII_NO_X)


_MILITARY = frozenset(("USNS", "USNV", "USS", "USCGC", "PSC"))
_EN_TITLES = frozenset(
    "Mr Mrs Ms Miss Mx Dr Prof Sir Dame Madam Rev Capt Sgt Lt Col Judge Officer Nurse".split()
)
_EN_GAZETTEER = frozenset((*_EN_FIRST, *_EN_LAST, *_EN_TITLES, *_MILITARY))


def _en_gazetteer_rest(capital: str) -> str | None:
    """What may follow ``capital`` in a gazetteer word (names, titles, military ship prefixes), as a
    trie; None when no word starts with it. The words with an apostrophe after their capital
    (``O'Brien``) are tried after every capital, as when one trie of every word's rest was tried after
    every capital: ``X'Connor`` stays one word, not a name, and ``Connor`` in it is not tried alone."""
    rests = {w[1:] for w in _EN_GAZETTEER if w[0] == capital}
    if not rests:
        return None
    rests |= {w[1:] for w in _EN_GAZETTEER if w[1:2] == "'"}
    return trie_regex(rests) + r"(?![A-Za-z])"


# Which rule the group that closes last in ``_en_capitals``'s match names: ``word`` (a gazetteer word),
# ``cue`` (a capital after a word, where a cue word may end), ``both``.
_EN_RULE = {f"{rule}_{c}": rule for rule in ("word", "cue", "both") for c in string.ascii_uppercase}


@functools.cache  # building the 26 tries takes ~10 ms, and every policy's names finder asks
def _en_capitals(words: bool, cues: bool) -> re.Pattern[str] | None:
    """One pass over the capitals for both English rules: a gazetteer word (``words``) and a capital
    after a word that ends in a lower-case letter, ``:`` or ``,`` (``cues``: ``Dear John``). One
    alternative per capital, each a literal first: ``re`` skips to the capitals at C speed and tries the
    one alternative of that capital, whose trie holds only the words that start with it (one trie of
    every word's rest tried after every capital cost ~8% more instructions). A match takes the gazetteer
    word, or the capital alone; ``_EN_RULE`` tells the rule from ``lastgroup``."""
    if not (words or cues):
        return None
    alternatives = []
    for c in string.ascii_uppercase:
        rest = _en_gazetteer_rest(c) if words else None
        after = f"(?<=[a-z:,][ ]{c})"
        if rest is None:
            if cues:
                alternatives.append(f"{c}{after}(?P<cue_{c}>)")
        elif cues:
            alternatives.append(f"{c}(?:{after}(?:{rest}(?P<both_{c}>)|(?P<cue_{c}>))|{rest}(?P<word_{c}>))")
        else:
            alternatives.append(f"{c}{rest}(?P<word_{c}>)")
    return re.compile("|".join(alternatives))


# A cue word (``Dear``, ``Name:``) and the spaces after it, right before a capital after a word.
_EN_CUE_BEFORE = re.compile(_EN_NAME_CUES + r"[ ]+\Z")
# Numbers: a house number, or a number that needs a cue word (QQ, SSN, national-format phones).
# Written with one leading class (``re`` then skips to candidates at C speed; a top-level alternation is
# tried at every position): ``[0-9(]A|[0-9]{1,4}+B`` as ``[0-9(](?:A|(?<=[0-9])[0-9]{0,3}+B)``.
_DIGIT_RUN = re.compile(
    r"[0-9(](?:[0-9 ().\-]{4,}+(?:[A-Za-z]?[ ])?|(?<=[0-9])[0-9]{0,3}+[A-Za-z]?[ ](?=[A-Za-z0-9]))"
)
# Every digit run starts with one of these, every English name with one of ``_CAPITALS``.
_DIGIT_RUN_FIRST = b"0123456789("
_CAPITALS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _holds_any(data: bytes, chars: bytes) -> bool:
    """Whether ``data`` holds any of ``chars``: one C pass (``bytes.translate`` deleting them), cheaper
    than a regex class (~65 instructions a character) or a substring test for each."""
    return len(data.translate(None, chars)) != len(data)


def _has_any(text: str, needles: Iterable[str]) -> bool:
    # A plain loop: ``any(map(text.__contains__, needles))`` costs ~2 500 instructions more a call.
    for needle in needles:
        if needle in text:
            return True
    return False


def _finditer(pattern: re.Pattern[str], text: str, pos: int) -> Iterable[re.Match[str]]:
    """``pattern.finditer(text, pos)``. Most lines hold no match: a ``search`` that finds nothing costs
    less than an iterator that yields nothing, and the iterator then starts at the first match (the same
    matches: it is the first one found from ``pos``)."""
    first = pattern.search(text, pos)
    return () if first is None else pattern.finditer(text, first.start())


_EN_CUE_LAST = frozenset(
    "is Name name Dear dear person Sincerely Regards Cheers Thanks Patient patient Customer customer Client "
    "client "
    "Signed signed by Cardholder cardholder Attn Attention attention Spouse spouse Employee employee Applica"
    "nt "
    "applicant Tenant tenant Borrower borrower Recipient recipient called named From To Cc Contact contact".split()  # noqa: E501
)
# Capitalized words that start sentences, greetings and places, never a first name here.
_EN_NOT_NAME = frozenset(
    """Dear Hi Hello Hey The A An This That These Those And But Or If When Then Mr Mrs Ms Dr Prof Sir Madam
    Contact Call Email Name From To Cc Attn Regards Sincerely Thanks Cheers Patient Customer Client Signed
    Called Named My Our Your His Her Their In On At For With By Of As Is Was Please Yes No Mount Lake Port
    East West North South New Saint St Fort Street Road Avenue Apt Suite Unit Dept Team Best Kind Warm""".split()  # noqa: E501
)
_PREV_NAME_WORDS = re.compile(
    r"(?:(?!(?:" + "|".join(sorted(_EN_NOT_NAME)) + r")\b)" + _EN_NAME_WORD + r"[ ](?:[A-Z]\.[ ])?){1,2}\Z"
)


# US military mail: ``USNS Knapp, FPO AA 60870``, ``PSC 1234, Box 5678\nAPO AE 12345``.
_EN_MILITARY = (
    r"(?:(?:USNS|USNV|USS|USCGC)[ ][A-Z][a-z]+|PSC[ ][0-9]{4},?[ ]Box[ ][0-9]{4})"
    r",?[ \n]+(?:APO|FPO|DPO)[ ](?:AA|AE|AP)[ ][0-9]{5}"
)


@functools.cache
def _zh_place_start() -> re.Pattern[str]:
    """A province, city or county-level name at the start of a value (compiled when first needed)."""
    return re.compile(trie_regex([*_words(_PROVINCES), *_words(_CITIES), *_ZH_PLACES]))


def _zh_addr_after_verb(value: str) -> str | None:
    return "ADDRESS" if _ZH_FINE.search(value) or _zh_place_start().match(value) else None


# A Chinese name in pinyin after a Chinese cue word (``联系人：Wang Xiaoming``, ``姓名：ZHANG SAN``): each
# word one or two pinyin syllables (not ``联系人：Microsoft Teams``).
_PINYIN_FINALS = (
    "iang|iong|uang|ueng|iao|ian|ing|uai|uan|ang|eng|ong|ai|ei|ao|ou|an|en|er|ia|ie|iu|in|ua|uo|ui|un|ue"
    "|a|o|e|i|u|v"
)
_PINYIN_SYLLABLE = f"(?:zh|ch|sh|[bpmfdtnlgkhjqxrzcsyw])?(?:{_PINYIN_FINALS})"
_PINYIN_WORD = re.compile(f"(?:{_PINYIN_SYLLABLE}){{1,2}}")
_PINYIN_NAME = (
    r"[A-Z][a-z]{0,11}(?:[ ][A-Z][a-z]{1,11}){1,2}(?![A-Za-z])|[A-Z]{2,12}(?:[ ][A-Z]{2,12}){1,2}(?![A-Za-z])"
)


def _zh_cue_name(value: str) -> str | None:
    if "\u4e00" <= value[0] <= "\u9fff":
        return "PERSON"
    words = value.lower().split(" ")
    return "PERSON" if all(_PINYIN_WORD.fullmatch(w) for w in words) else None


def _zh_context_name(value: str) -> str | None:
    # A very common word is no name (``发言人解释说``: 解 is a surname too), nor a doubled surname
    # (``薄薄的《``, ``高高的``).
    if value[:2] in _zh_words().common or value[1] == value[0]:
        return None
    return _zh_title_name(value)


def _zh_title_name(value: str) -> str | None:
    # A soft stop character starts the given name only next to a character common in given names, the
    # two making no word (``郑其伟``, ``李长春``; not ``王长期``).
    words = _zh_words()
    given = value[2:] if value[:2] in words.compounds else value[1:]
    if given[:1] in _ZH_SOFT_STOP and (given[1:] not in words.given or given in words.words):
        return None
    return "PERSON"


def _zh_addr(value: str) -> str | None:
    # Without a cue word, a province or city alone is not an address: a road, number or building is.
    return "ADDRESS" if _ZH_FINE.search(value) else None


def _en_name(value: str) -> str | None:
    words = value.split(" ")
    if len(words) < 2 or words[0] in _EN_NOT_NAME:
        return None
    return "PERSON" if words[0] in _EN_FIRST or words[-1] in _EN_LAST else None


NAMES_ADDRESSES: tuple[Detector, ...] = (
    # Numbers that are ambiguous without their cue word (run from digit runs, see names_finder).
    Detector(
        "cn_landline_cue",
        "CN_LANDLINE",
        # After a cue word: a 4-digit area code without separator (``电话057788285332``) or a local
        # number without area code (``座机 85570230``).
        _lead("[0-9]", _ALN, r"(?:(?<=0)[3-9][0-9]{2}[2-9][0-9]{6,7}|(?<=[2-9])[0-9]{6,7})", num=True)
        + NUM_R,
        context=("电话", "座机", "固话", "tel", "传真", "fax", "热线", "办公室", "总机"),
        context_window=10,
        description="PRC landline without separator after a cue word (电话, 座机, Tel)",
    ),
    Detector(
        "phone_local_cue",
        "PHONE",
        # National formats after a cue word: UK ``020 7946 0958``, Taiwan ``0912-345-678``, Hong Kong
        # ``2345 6789``; libphonenumber decides whether it is a valid number of a region.
        _lead(
            "[0-9(]",
            _ALN,
            r"(?:(?<=\()0?[1-9][0-9]{0,3}\)[ ]?|(?<=[0-9])[0-9]{0,4}[ .-]?)[0-9]{2,4}(?:[ .-]?[0-9]{3,4}){1,2}",  # noqa: E501
            num=True,
        )
        + GLUE_R,
        _local_phone,
        context=(
            "tel",
            "phone",
            "call",
            "mobile",
            "cell",
            "电话",
            "手机",
            "致电",
            "联系",
            "whatsapp",
            "fax",
            "传真",
        ),
        context_window=16,
        description="national-format number after a cue word (valid in HK/TW/GB/US/... per libphonenumber)",
    ),
    Detector(
        "qq",
        "QQ",
        _lead("[1-9]", _ALN, r"[0-9]{4,10}", num=True, glue=True) + NUM_R,
        context=("qq", "扣扣"),
        context_window=8,
        description="QQ number after its cue word (QQ：, QQ号)",
    ),
    Detector(
        "us_ssn_bare",
        "US_SSN",
        _lead("[0-8]", _ALN, r"[0-9]{8}", num=True) + NUM_R,
        _typed("US_SSN", v.us_ssn),
        context=("ssn", "social security", "社会安全", "社保号"),
        context_window=24,
        description="US social security number without dashes, after a cue word (SSN)",
    ),
    Detector(
        "wechat",
        "WECHAT",
        r"(?:[微薇威徽]信号?|加我?[微Vv]信?|(?i:wechat)(?:[ ]?(?i:id))?|(?i:weixin)|V信"
        r"|(?<![A-Za-z])[VvWw][Xx])(?:是|为|号|[：:])?[ \t]*"
        r"(?P<value>[A-Za-z][-_A-Za-z0-9]{5,19}|wxid_[a-z0-9]{6,24})(?![-_A-Za-z0-9])",
        has_value=True,
        description="WeChat ID after its cue word (微信号：, WeChat ID)",
    ),
    Detector(
        "address_zh_cue",
        "ADDRESS",
        f"{_ZH_ADDR_NOT_AFTER}(?:{_ZH_ADDR_CUES}){_ZH_ADDR_AFTER_CUE}",
        has_value=True,
        description="Chinese address after a cue word (地址：, 住址)",
    ),
    Detector(
        "address_zh_verb",
        "ADDRESS",
        f"(?:{_ZH_ADDR_VERBS}){_ZH_ADDR_AFTER_CUE}",
        _zh_addr_after_verb,
        has_value=True,
        description="Chinese address after a verb (住在, 寄到): a road, number or building, or a place first",
    ),
    Detector(
        "address_zh_road",
        "ADDRESS",
        f"(?:(?<![\\u4e00-\\u9fff])|(?<=[{_ZH_ROAD_FENCE}]))"
        f"(?:(?![{_ZH_ROAD_FENCE}])[\\u4e00-\\u9fff]){{1,6}}?(?:{_ZH_ROAD_KIND})(?:[一二三四五六七八九十]段)?"
        f"[0-9]{{1,5}}(?:号院|号楼|号)(?!线){_ZH_ADDR_NUM}",
        description="Chinese road and house number without district or city (约在中关村大街27号见面)",
    ),
    Detector(
        "address_zh",
        "ADDRESS",
        f"(?:{trie_regex(_words(_PROVINCES))}(?:省|市|自治区|特别行政区|壮族自治区|回族自治区|维吾尔自治区)?"
        f"|{trie_regex(_words(_CITIES))}市?){_ZH_ADDR}",
        _zh_addr,
        description="Chinese address: province or city, then district/road/number units",
    ),
    Detector(
        "address_zh_county",
        "ADDRESS",
        # Found by ``names_finder`` (the longest name of ``_ZH_PLACE_SET`` before its suffix, then
        # ``_ZH_ADDR_TAIL``); this pattern is what a stream holds back for it.
        f"{trie_regex(_ZH_PLACES)}{_ZH_ADDR}",
        _zh_addr,
        description="Chinese address that starts with a county-level division (朝阳区建国路88号)",
    ),
    Detector(
        "person_zh_cue",
        "PERSON",
        f"(?:(?:{_ZH_NAME_CUES})(?:是|为|[：:])?|(?:{_ZH_ROLE_CUES})(?:姓名)?[：:])[ \\t]*"
        f"(?P<value>{_ZH_NAME_SPACED}|{_PINYIN_NAME})",
        _zh_cue_name,
        has_value=True,
        description="Chinese name after a cue word (姓名：, 联系人, 我叫)",
    ),
    Detector(
        "person_zh_context",
        "PERSON",
        # A name at the start of a clause, after 和/跟/给/是... or a post's last character (``队员``,
        # ``学生``: ``三年级学生高磊说``), before a verb (说, 表示, 一起) or right before a number
        # (``李静 16236410931``). The finder takes a number of seven characters or more (``_DIGIT_RUN``);
        # the lookahead asks for them too, so that a stream holds the name until they have arrived
        # (``请查收13`` + ``911960587``).
        f"(?:(?<![\\u4e00-\\u9fff0-9０-９])|(?<=[{_ZH_NAME_LEFT}{_ZH_POST_LAST}生]))(?:{_ZH_COMPOUND}|[{_ZH_SURNAMES}])"
        f"(?:{_ZH_GIVEN}{{1,2}}|{_ZH_SOFT_STOP_CLASS}{_ZH_GIVEN})"
        f"(?={_ZH_VERB_RE}|[ \\t]*[:：,，]?[ \\t]*\\+?[0-9][0-9 ().\\-]{{6}})",
        _zh_context_name,
        description="Chinese name before a verb (说, 表示, 一起) or a number, at a clause start",
    ),
    Detector(
        "person_zh_title",
        "PERSON",
        # A second given-name character may be one of the stop characters common in names (``陈建中先生``;
        # the first only when it is one of the soft ones and a character common in given names follows,
        # the two making no word, see ``_zh_title_name``: ``郑其伟大夫``, not ``高中老师``, ``商品经理``).
        f"(?:{_ZH_COMPOUND}|[{_ZH_SURNAMES}])"
        f"(?:{_ZH_GIVEN}{_ZH_CUE_GIVEN}?|{_ZH_SOFT_STOP_CLASS}{_ZH_GIVEN})?(?={_ZH_TITLES})",
        _zh_title_name,
        description="Chinese surname (and given name) before a title (王先生, 李明经理)",
    ),
    Detector(
        "person_zh_role",
        "PERSON",
        # Found by ``names_finder`` (``_zh_name_after_role_end``); held back in a stream as a title, a
        # surname and a Chinese character until the three characters after them have arrived (a byline:
        # ``记者许立群报道``), and a byline's list of names (``_zh_byline_names``) until its ``报道``.
        # A foreign name (``_zh_foreign_name_end``) is held until a character that is not in it.
        f"(?:{_ZH_ROLES}|{_ZH_TITLES}|{_ZH_ROLES_BEFORE}|{_ZH_AGE})(?P<value>(?:{_ZH_COMPOUND}|[{_ZH_SURNAMES}])[\\u4e00-\\u9fff](?=[\\s\\S]{{3}})"
        f"|(?:(?:{_ZH_COMPOUND}|[{_ZH_SURNAMES}])[\\u4e00-\\u9fff]{{1,2}}、){{1,{_ZH_BYLINE_MAX - 1}}}"
        f"(?:{_ZH_COMPOUND}|[{_ZH_SURNAMES}])[\\u4e00-\\u9fff]{{1,2}}报道"
        f"|{trie_regex(_ZH_JAPANESE_SURNAMES)}(?=[\\s\\S]{{4}})"
        f"|{_ZH_FOREIGN_RUN}(?=[^·{_ZH_FOREIGN_CLASS[1:]}))",
        has_value=True,
        description="Chinese or foreign name after a title or post (记者王红, 外长李岚清, 总统克林顿)",
    ),
    Detector(
        "person_zh_post",
        "PERSON",
        # Found by ``names_finder`` (``_zh_name_before_post_start``); held back in a stream as a surname
        # and given-name characters until the post after them has arrived.
        f"(?:{_ZH_COMPOUND}|[{_ZH_SURNAMES}])[\\u4e00-\\u9fff]{{1,2}}(?={_ZH_ROLES})",
        description="Chinese name right before a post (江泽民主席, 李鹏总理)",
    ),
    Detector(
        "person_zh_foreign",
        "PERSON",
        # Found by ``names_finder`` (``_zh_foreign_name_before_start``); held back in a stream as a run
        # of transliteration characters at a clause start until the post, title or verb after it (or a
        # character that is none of them) has arrived.
        f"(?:(?<![\\u4e00-\\u9fff])|(?<=[{_ZH_FOREIGN_LEFT}])){_ZH_FOREIGN_RUN}"
        f"(?={_ZH_AFTER_FOREIGN_AT.pattern})",
        description="Foreign name written in Chinese before a post, title or verb, at a clause start "
        "(克林顿总统, 奥尔布赖特说)",
    ),
    Detector(
        "person_zh_japanese",
        "PERSON",
        # Found by ``names_finder`` (``_zh_japanese_name_before_start``); held back in a stream as a Japanese
        # surname and up to two characters until the post, title or verb after them has arrived (also a
        # post written before names: ``首相``).
        f"{trie_regex(_ZH_JAPANESE_SURNAMES)}[\\u4e00-\\u9fff]{{0,2}}(?={_ZH_AFTER_JAPANESE_AT.pattern})",
        description="Japanese name written in Chinese before a post, title or verb (桥本首相, 池田大作先生)",
    ),
    Detector(
        "person_zh_foreign_bare",
        "PERSON",
        # Found by ``names_finder`` (``_ZH_FOREIGN_BARE_RUN``, ``_zh_foreign_bare_name``); held back in a
        # stream as a run of transliteration characters at a clause start until a character that is not
        # in it has arrived.
        f"(?:(?<![\\u4e00-\\u9fff·])|(?<=[{_ZH_FOREIGN_BARE_LEFT}])){_ZH_FOREIGN_CLASS}{_ZH_FOREIGN_BARE_REST}"
        f"(?!{_ZH_FOREIGN_GOES_ON})(?=[\\s\\S])",
        description="Foreign name written in Chinese, with no cue: three to six transliteration characters "
        "at a clause start that are no place and no everyday word (，克林顿没有正面回答)",
    ),
    Detector(
        "person_zh_list",
        "PERSON",
        # Found by ``names_finder`` (``list_names``) after a name; held back in a stream from the
        # ``、`` until the item's end has arrived (today ``person_zh_title``'s pattern holds the same
        # tails: a surname and given-name characters may still meet a title).
        f"、(?P<value>(?:{_ZH_COMPOUND}|[{_ZH_SURNAMES}])[\\u4e00-\\u9fff]{{1,3}})"
        f"(?={_char_class(_ZH_LIST_END)})",
        has_value=True,
        description="Chinese names listed after a name (记者张三、李四、王五)",
    ),
    Detector(
        "person_zh_known",
        "PERSON",
        # Found by ``names_finder`` (``_ZH_KNOWN_NAME``, ``_zh_known_name``); held back in a stream until
        # the two characters after the name have arrived (a longer name may start with it: ``马克``,
        # ``马克思``; a run of transliteration characters must end with it).
        f"{_ZH_KNOWN_NAME.pattern}(?=[\\s\\S]{{2}})",
        description="Name of a well-known person, from CC-CEDICT's people (鲁迅, 李鹏, 温家宝, 马克思), "
        "where no word runs over it from the left",
    ),
    Detector(
        "person_zh_bare",
        "PERSON",
        # Found by ``names_finder`` with a look at the words around (``_zh_bare_name_end``); this
        # pattern is what a stream holds back for it: a surname and a Chinese character, until the
        # two characters after them have arrived.
        f"(?:{_ZH_COMPOUND}|{_char_class(_ZH_ROLE_SURNAMES)})[\\u4e00-\\u9fff](?=[\\s\\S]{{2}})",
        description="Chinese name without cue word: a common surname and a given name that no common "
        "word around claims (感谢张伟的报告; 钱其琛 with an everyday surname and given-name characters)",
    ),
    Detector(
        "address_en",
        "ADDRESS",
        r"(?<![0-9A-Za-z])" + _EN_ADDR,
        description="US/UK/CA street address (number, street, suffix; unit, city, state/postcode)",
    ),
    Detector(
        "address_military",
        "ADDRESS",
        r"(?<![A-Za-z])" + _EN_MILITARY,
        description="US military mail address (USNS/USS ship or PSC box, APO/FPO/DPO)",
    ),
    Detector(
        "person_en_title",
        "PERSON",
        f"(?<![A-Za-z]){_EN_TITLE}[ ](?P<value>{_EN_NAME}|{_EN_NAME_UP})",
        has_value=True,
        description="English name after a title (Mr., Dr., Ms.)",
    ),
    Detector(
        "person_en_cue",
        "PERSON",
        f"(?<![A-Za-z]){_EN_NAME_CUES}[ ]+(?P<value>{_EN_NAME}|{_EN_NAME_UP})",
        has_value=True,
        description="English name after a cue (my name is, Dear, Name:, Regards,)",
    ),
    Detector(
        "person_en",
        "PERSON",
        r"(?<![A-Za-z])" + _EN_NAME_WORD + r"(?:[ ][A-Z]\.)?(?:[ ]" + _EN_NAME_WORD + r"){1,2}(?![A-Za-z])",
        _en_name,
        description="English first name + surname from the gazetteers (Jennifer Smith)",
    ),
)

ENTITY_TYPES = tuple(dict.fromkeys([*ENTITY_TYPES, *(d.type for d in NAMES_ADDRESSES)]))


# Between a cue word and its number: separators and a few filler words only (``电话：``, ``Tel. no.``,
# ``QQ号码``); ``电话会议 2024`` or a cue word earlier in the sentence is not enough.
_CUE_GAP = re.compile(
    r"[\s:：,，.#()（）\-]*(?:(?:number|no|num|nr|是|为|号码|号|码)[\s:：,，.#\-]*)?\Z", re.IGNORECASE
)


def _cue_adjacent(window: str, words: tuple[str, ...]) -> bool:
    for w in words:
        i = window.rfind(w)
        if i >= 0 and _CUE_GAP.match(window, i + len(w)):
            return True
    return False


class _ZhWords(NamedTuple):
    """The common Chinese words of ``zh_words.txt``, as the name rules look them up."""

    # Where a bare name may start: a surname, or a compound surname's first character (``_zh_name_starts``
    # says what must follow each).
    start_chars: frozenset[str]
    words: frozenset[str]  # no name starts here or inside
    common: frozenset[str]  # no given name starts here
    inside: frozenset[str]  # no name starts inside (``words`` and ``~``: names)
    person_words: frozenset[str]  # two-character words jieba tags as names (李鹏, but also 阳光)
    # Two-character words jieba tags as names or as transliterated names (李鹏, 科尔): a foreign name
    # after a title may start with one.
    name_words: frozenset[str]
    compounds: frozenset[str]
    given: frozenset[str]  # characters common in given names (``*``: 琛, 峰)
    foreign_places: frozenset[str]  # ``zh_foreign_places.txt``: 格鲁吉亚, 莫斯科


@functools.cache
def _zh_words() -> _ZhWords:
    words: set[str] = set()
    common: set[str] = set()
    names: set[str] = set()
    person_words: set[str] = set()
    foreign_words: set[str] = set()
    given: set[str] = set()
    with ZH_WORDS_PATH.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            word, _, mark = line.rstrip("\n").partition(" ")
            if mark == "*":
                given.add(word)
                continue
            (names if mark == "~" else words).add(word)
            if "+" in mark:
                common.add(word)
            if "=" in mark:
                person_words.add(word)
            if "^" in mark:
                foreign_words.add(word)
    # A compound surname that is also a very common word (东方, the east) starts no bare name.
    compounds = frozenset(c for c in _words(_ZH_COMPOUND) if c not in common)
    firsts = frozenset({*_ZH_ROLE_SURNAMES, *(c[0] for c in compounds)})
    return _ZhWords(
        firsts,
        frozenset(words),
        frozenset(common),
        frozenset(words | names),
        frozenset(person_words),
        frozenset(person_words | foreign_words),
        compounds,
        frozenset(given),
        frozenset(_data_lines(ZH_FOREIGN_PLACES_PATH)),
    )


def _person_ends_at(found: list[Entity], end: int) -> bool:
    """Whether the last entity found is a name that ends at ``end``."""
    return bool(found) and found[-1].end == end and found[-1].type == "PERSON"


# How many of the well-known names' first characters ``_zh_name_starts`` checks one by one, the most
# common ones (in the most very common words of ``zh_words.txt``). Each costs every start that reaches
# it a few instructions, and spares the finder's loop the starts where it goes on with no name of its
# (``中``, ``大``, ``全``); with 32 the pass needed the fewest instructions on the throughput mix (with
# 16, 3% more; with 64, 4%).
_ZH_KNOWN_ALONE = 32


def _zh_name_starts(known: bool, bare: bool, words: _ZhWords) -> re.Pattern[str] | None:
    """One pass for the two rules that try every start of a name (each match takes one character): a
    well-known name (``known``: its first two characters may be there) and a bare name (``bare``: a
    compound surname's first two characters, a bare surname before a Chinese character, or another
    surname before two given-name characters; ``_zh_bare_name_end`` tells them apart). A match with a
    group (``lastindex``) is a bare name's start, and may also be a well-known name's; one without, only a
    well-known name's. Both are checked again in full: the pattern only rules starts out.

    A class of every first character comes first, so that ``re`` skips to candidates at C speed. A
    lookbehind reads that character again through one alternative per kind of start: a class for each
    bare-name condition, then, behind a class of the well-known names' first characters, the
    ``_ZH_KNOWN_ALONE`` most common of those one by one, each a literal (``re`` rejects an alternative by
    its literal in a few instructions) before the second characters of its own names, and the others
    in one class before all of theirs. One class of every second character after every first character
    let through nine starts in ten on Chinese prose (``中`` before ``国``) that start no name."""
    seconds: dict[str, set[str]] = {}
    for name in _ZH_KNOWN_NAMES if known else ():
        seconds.setdefault(name[0], set()).add(name[1])
    starts = words.start_chars if bare else frozenset()
    if not seconds and not starts:
        return None
    kinds = []
    if starts:
        if words.compounds:
            firsts, after = (_char_class(c[i] for c in words.compounds) for i in (0, 1))
            kinds.append(f"{firsts}(?={after})()")
        if bare_surnames := starts & _ZH_BARE_SURNAME_SET:
            kinds.append(f"{_char_class(bare_surnames)}(?=[\\u4e00-\\u9fff])()")
        if (everyday := starts & _ZH_ROLE_SURNAMES - _ZH_BARE_SURNAME_SET) and words.given:
            kinds.append(f"{_char_class(everyday)}(?={_char_class(words.given)}{{2}})()")
    if seconds:
        # The most common first characters (in the most very common words) one by one, each a literal
        # before the second characters of its names; the others in one class, before all of theirs.
        common = Counter(c for word in words.common for c in word)
        order = sorted(seconds, key=lambda c: (-common[c], c))
        alone, rest = order[:_ZH_KNOWN_ALONE], order[_ZH_KNOWN_ALONE:]
        pairs = [f"{re.escape(c)}(?={_char_class(seconds[c])})" for c in alone]
        if rest:
            pairs.append(f"{_char_class(rest)}(?={_char_class(d for c in rest for d in seconds[c])})")
        kinds.append(f"(?={_char_class(seconds)})(?:{'|'.join(pairs)})")
    if not kinds:
        return None
    return re.compile(f"{_char_class(starts | seconds.keys())}(?<={'|'.join(kinds)})")


def _zh_bare_name_end(text: str, s: int, bare: _ZhWords) -> int:
    """Where a bare Chinese name starting at ``s`` (a surname) ends, or 0 when there is none.

    A look at the words around it, as a dictionary segmenter would: no common word starts at the
    surname (``王国``, ``林业``) or runs over it from the left (``提高``, ``森林``), the given name
    starts no very common word (``向大家``), no numeral or demonstrative comes right before
    (``那张彩页``: a measure word), and a second given-name character is taken unless a word
    starts there (``李鹏会见``: ``会见``). Reads at most three characters before ``s`` and four after
    (five after a compound surname): the stream hold-back of ``person_zh_bare`` waits for them."""
    words = bare.words
    everyday = False  # an everyday surname (钱, 高, 于): only before two given-name characters
    if text[s : s + 2] in bare.compounds:
        g = s + 2
    elif text[s] not in _ZH_ROLE_SURNAMES:
        return 0
    else:
        g = s + 1
        if text[s : s + 2] in words or text[s : s + 3] in words or text[s : s + 4] in words:
            return 0
        everyday = text[s] not in _ZH_BARE_SURNAME_SET
        # Not before a common surname: ``会见时江泽民`` (时, then a name).
        if everyday and (
            text[g : g + 1] in _ZH_BARE_SURNAME_SET
            or text[g : g + 1] not in bare.given
            or text[g + 1 : g + 2] not in bare.given
            or text[g : g + 2] in words
            or text[g + 1 : g + 3] in words
        ):
            return 0
    if g >= len(text) or not "\u4e00" <= text[g] <= "\u9fff":
        return 0
    if (s and text[s - 1] in _ZH_BEFORE_MEASURE) or _zh_word_over(text, s, bare.inside):
        return 0
    end = _zh_given_name_end(text, g, bare)
    return end if not everyday or end == g + 2 else 0


def _zh_known_name(text: str, s: int, e: int, bare: _ZhWords) -> bool:
    """Whether the well-known name ``text[s:e]`` is one here:

    - no word runs over its first character from the left (``国王震怒``: not ``王震``);
    - it is no foreign place, and none runs over it or goes on after it (``阿巴斯港``: not ``阿巴斯``);
    - the last character of a two-character name starts no very common word (``三连战士``: not
      ``连战``; but ``郎平和``);
    - a name spelled only with transliteration characters is a whole run of them (``穆尔西亚``: not
      ``穆尔西``).

    Reads from ``s - 3`` to ``e + 2``."""
    if _zh_word_over(text, s, bare.inside):
        return False
    places = bare.foreign_places
    for b in range(max(0, s - 3), s + 1):
        for x in range(max(e, b + 2), e + 3):
            if text[b:x] in places:
                return False
    if e - s == 2 and text[e - 1 : e + 1] in bare.common:
        return False
    if all(c in _ZH_FOREIGN_CHARS or c == "·" for c in text[s:e]):
        if s and (text[s - 1] in _ZH_FOREIGN_CHARS or text[s - 1] == "·"):
            return False
        if e < len(text) and (text[e] in _ZH_FOREIGN_CHARS or text[e] == "·"):
            return False
    return True


def _zh_word_over(text: str, s: int, inside: frozenset[str]) -> bool:
    """Whether a word of ``inside`` runs over ``s`` from the left (``提高``, ``黄金周``, ``格鲁吉亚``).
    Reads from ``s - 3`` to ``s + 2``."""
    if not s:
        return False
    if text[s - 1 : s + 1] in inside or text[s - 1 : s + 2] in inside or text[s - 1 : s + 3] in inside:
        return True
    if s > 1 and (text[s - 2 : s + 1] in inside or text[s - 2 : s + 2] in inside):
        return True
    return s > 2 and text[s - 3 : s + 1] in inside


def _zh_given_name_end(text: str, g: int, bare: _ZhWords) -> int:
    """Where a given name starting at ``g`` ends (one or two characters), or 0: a Chinese character
    that is no stop character and starts no very common word, then a second one unless a word starts
    there; a character common in given names (``*``) is taken where a word that is not very common
    starts (``吴亚明报道``: 明报), the two making no word. A soft stop character (``_ZH_SOFT_STOP``) is
    taken only next to a ``*`` character, the two making no word (``钱其琛``, ``尉健行``). Any second
    character but ``_ZH_NEVER_LAST_GIVEN`` is taken right before ``_ZH_NAME_CLOSE`` (``金大中。``). Reads up
    to ``g + 3``."""
    if g >= len(text) or not "\u4e00" <= text[g] <= "\u9fff":
        return 0
    first = text[g]
    soft = first in _ZH_SOFT_STOP
    if (first in _ZH_BARE_NOT_GIVEN and not soft) or text[g : g + 2] in bare.common:
        return 0
    e = g + 1
    if e >= len(text) or not "\u4e00" <= text[e] <= "\u9fff":
        return 0 if soft else e
    second, pair, following = text[e], text[g : e + 1], text[e : e + 2]
    if second not in _ZH_BARE_NOT_GIVEN:
        if soft:
            taken = second in bare.given and pair not in bare.words and following not in bare.common
            return e + 1 if taken else 0
        if following not in bare.words:
            return e + 1
        if second in bare.given and following not in bare.common and pair not in bare.words:
            return e + 1
    elif (
        not soft
        and second in _ZH_SOFT_STOP
        and first in bare.given
        and pair not in bare.words
        and following not in bare.words
    ):
        return e + 1
    if (
        not soft
        and second not in _ZH_NEVER_LAST_GIVEN
        and text[e + 1 : e + 2] in _ZH_NAME_CLOSE
        and pair not in bare.words
    ):
        return e + 1  # 王建新报道, 金大中。
    return 0 if soft else e


def _zh_name_after_role_end(text: str, s: int, bare: _ZhWords) -> int:
    """Where a name right after a title (``记者王红``, ``外长李岚清``) ends, or 0. Any surname but
    ``_ZH_ROLE_SURNAMES``'s two; a name that is also a word counts when jieba tags that word as a name
    (``总理李鹏``), not otherwise (``作者简介``, ``总理府``). Reads up to ``s + 4`` (``s + 5`` after a
    compound surname)."""
    if text[s : s + 2] in bare.compounds:
        return _zh_given_name_end(text, s + 2, bare)
    if text[s : s + 1] not in _ZH_ROLE_SURNAMES:
        return 0
    pair = text[s : s + 2]
    if (pair in bare.words and pair not in bare.person_words) or pair in bare.common:
        return 0
    if len(text) > s + 2 and text[s : s + 3] in bare.words:
        return 0
    return _zh_given_name_end(text, s + 1, bare)


# After a post, what follows a name the role rule refuses (``_zh_name_after_post_cued_end``): a verb, a
# time word or a rank, and (when the name is no word) a comma, ``、``, ``。``, ``在`` or a digit.
_ZH_AFTER_POST_NAME = re.compile(
    "今天|昨天|日前|近日|最近|会见|一行|等|说|表示|认为|指出|强调|介绍|宣布|透露|告诉|提出|上将|中将|少将"
)
_ZH_AFTER_POST_NAME_WEAK = frozenset("在、，。0123456789")


def _zh_name_after_post_cued_end(text: str, s: int, bare: _ZhWords) -> int:
    """Where a name right after a post ends that ``_zh_name_after_role_end`` refuses, or 0: a surname and
    one or two Chinese characters, whatever stop characters they hold (``总参谋长傅全有今天``,
    ``书记姜大明在``), when a verb, a time word or a rank follows (``_ZH_AFTER_POST_NAME``: then a word
    that is not very common counts too, ``国务委员罗干今天``), or a comma, ``、``, ``。``, ``在`` or a digit
    and the name makes no word (``作者应当在``, ``总统官邸。``). Its last character is none that never ends
    a given name (``副委员长谢非时表示``). Reads up to ``s + 5`` (``s + 6`` after a compound surname)."""
    if text[s : s + 2] in _ZH_JAPANESE_SURNAMES:
        return _zh_japanese_name_after_post_end(text, s)
    g = s + 2 if text[s : s + 2] in bare.compounds else s + 1
    if g == s + 1 and text[s : s + 1] not in _ZH_ROLE_SURNAMES:
        return 0
    for e in (g + 1, g + 2):
        name = text[s:e]
        if e > len(text) or not all("\u4e00" <= c <= "\u9fff" for c in text[g:e]):
            return 0
        if text[e - 1] in _ZH_NEVER_LAST_GIVEN:
            return 0
        if name[:2] in bare.common or name[-2:] in bare.common:
            return 0
        if _ZH_AFTER_POST_NAME.match(text, e):
            return e
        if text[e : e + 1] in _ZH_AFTER_POST_NAME_WEAK and not (
            (name[:2] in bare.words and name[:2] not in bare.person_words) or name in bare.words
        ):
            return e
    return 0


def _zh_japanese_name_after_post_end(text: str, s: int) -> int:
    """Where a Japanese name right after a post ends (``行长佐藤光夫在``, ``会长木村一三等``), or 0: a
    Japanese surname and up to two Chinese characters, none of them ``_JA_NOT_GIVEN``, then what
    ``_zh_name_after_post_cued_end`` asks for (a verb, a time word, a rank; a comma, ``、``, ``。``,
    ``在`` or a digit), the shortest such name. Reads up to ``s + 6``."""
    for e in (s + 2, s + 3, s + 4):
        if e > len(text) or any(c in _JA_NOT_GIVEN or not "\u4e00" <= c <= "\u9fff" for c in text[s + 2 : e]):
            return 0
        if _ZH_AFTER_POST_NAME.match(text, e) or text[e : e + 1] in _ZH_AFTER_POST_NAME_WEAK:
            return e
    return 0


def _zh_byline_names(text: str, s: int) -> list[tuple[int, int]]:
    """The reporters' names of a byline (``记者许立群报道``, ``记者江山报道``, ``记者白剑峰、赵永新报道``),
    or none: after ``记者``, one to ``_ZH_BYLINE_MAX`` names joined by ``、``, each a surname and one or two
    Chinese characters, the last right before ``报道``, whatever words they make (a name there is often
    a dictionary word: ``江山``; jieba lists reporters: ``许立群``; ``永新`` is a county). Reads up to
    ``s + 5 * _ZH_BYLINE_MAX + 1``."""
    names: list[tuple[int, int]] = []
    for _ in range(_ZH_BYLINE_MAX):
        if text[s : s + 2] in _ZH_COMPOUND_SET:
            g = s + 2
        elif text[s : s + 1] in _ZH_SURNAME_SET:
            g = s + 1
        else:
            return []  # not the first character of a compound alone (``上将``: 上官 is one)
        for e in (g + 1, g + 2):
            if not all("\u4e00" <= c <= "\u9fff" for c in text[g:e]):
                return []
            if text[e : e + 2] == "报道":
                names.append((s, e))
                return names
            if text[e : e + 1] == "、":
                names.append((s, e))
                s = e + 1
                break
        else:
            return []
    return []


def _zh_foreign_name_end(text: str, s: int, bare: _ZhWords) -> int:
    """Where a foreign name right after a title (``总统克林顿``) ends, or 0: two to ``_ZH_FOREIGN_MAX``
    transliteration characters (``_ZH_FOREIGN_CHARS``; a ``·`` between two of them joins parts), then
    none of them (or the end of the text); not an everyday word (``巴西``), nor starting with one that
    jieba does not tag as a name. Reads up to ``s + 8``."""
    e = s
    letters = 0
    n = len(text)
    while e < n and letters <= _ZH_FOREIGN_MAX:
        char = text[e]
        if char in _ZH_FOREIGN_CHARS:
            letters += 1
        elif char == "·" and e > s and e + 1 < n and text[e + 1] in _ZH_FOREIGN_CHARS:
            pass
        elif char == "·":
            # Not between two of them: no name ends here (``person_zh_role``'s pattern asks for a
            # character after the name that is neither ``·`` nor one of them), and at the end of a
            # stream's text so far, another part may still follow.
            return 0
        else:
            break
        e += 1
    if not 2 <= letters <= _ZH_FOREIGN_MAX or _zh_everyday_run(text[s:e], bare):
        return 0
    return e


def _zh_everyday_run(run: str, bare: _ZhWords) -> bool:
    """Whether a run of transliteration characters is, or starts with, an everyday word that jieba
    tags neither as a name nor as a transliterated name (``基本``, ``巴西``; not ``科尔``)."""
    named = bare.name_words
    head = run[:2]
    return (
        head in bare.common
        or (head in bare.words and head not in named)
        or (run in bare.words and run not in named)
    )


def _zh_foreign_place_or_word(run: str, bare: _ZhWords) -> bool:
    """Whether a run of transliteration characters is a place outside China (``格鲁吉亚``; with or without
    its ``·``) or an everyday word (``_zh_everyday_run``): no foreign name then."""
    places = bare.foreign_places
    return run in places or run.replace("·", "") in places or _zh_everyday_run(run, bare)


def _zh_clause_start(text: str, b: int, lo: int, left_chars: str) -> bool:
    """Whether a run starting at ``b`` starts a clause: the text's start, or after a character that is
    not Chinese or is one of ``left_chars``. Never at ``lo`` (``lo`` itself only as the text's start):
    what comes before is not known there (a stream's context starts there)."""
    if b == 0:
        return True
    if b == lo:
        return False
    left = text[b - 1]
    return not "\u4e00" <= left <= "\u9fff" or left in left_chars


def _zh_foreign_name_before_start(text: str, s: int, lo: int, bare: _ZhWords) -> int:
    """Where a foreign name right before the post, title or verb at ``s`` starts (``克林顿总统``,
    ``奥尔布赖特说``), or -1: the whole run of transliteration characters before ``s`` (two to
    ``_ZH_FOREIGN_MAX``; ``·`` joins parts), at a clause start or after ``_ZH_FOREIGN_LEFT``; not a place
    outside China (``格鲁吉亚总统``, ``伊朗表示``) nor an everyday word (``巴西``), nor starting with one
    that jieba does not tag as a name. Reads from ``s - 12``; nothing before ``lo`` (``lo`` itself
    only as the text's start)."""
    b = s
    letters = 0
    while b > lo and letters <= _ZH_FOREIGN_MAX:
        char = text[b - 1]
        if char in _ZH_FOREIGN_CHARS:
            letters += 1
        elif not (char == "·" and b < s and b - 2 >= lo and text[b - 2] in _ZH_FOREIGN_CHARS):
            break
        b -= 1
    if not 2 <= letters <= _ZH_FOREIGN_MAX or not _zh_clause_start(text, b, lo, _ZH_FOREIGN_LEFT):
        return -1
    return -1 if _zh_foreign_place_or_word(text[b:s], bare) else b


# What a Japanese given name never holds: function words, the places' suffixes (``石川县知事``: Ishikawa
# prefecture's governor; ``中山市长``: Zhongshan's mayor) and institutions' (``中山大学教授``).
_JA_NOT_GIVEN = frozenset(
    "的了是在和与及或但把被对从向给为于以之其也都就还又再很最更不没已将会能要可这那各每该此我你他她它们"
    "市县区镇町村省州岛府道学院校司厂所部局馆"
)
# Prepositions of place: the surname is then a place (``在田中说``: in the field, ``从山口来``).
_JA_NOT_AFTER = frozenset("在从到于往向自至由朝")


def _zh_japanese_name_before_start(text: str, s: int, lo: int, bare: _ZhWords) -> int:
    """Where a Japanese name right before the post (also one written before names), title or verb at
    ``s`` starts (``桥本首相``, ``池田大作先生``, ``中岛宏说``), or -1: a Japanese surname
    (``_ZH_JAPANESE_SURNAMES``) and up to two more Chinese characters (the longest such name), none of
    them ``_JA_NOT_GIVEN`` nor the post's first character a place's suffix (``中山市长``), no word
    running over the surname from the left nor a preposition of place before it (``在田中说``). Reads
    from ``s - 5``; nothing before ``lo``."""
    if text[s : s + 1] in _JA_NOT_GIVEN:
        return -1
    for b in range(max(lo, s - 4), s - 1):
        if text[b : b + 2] not in _ZH_JAPANESE_SURNAMES:
            continue
        given = text[b + 2 : s]
        if any(c in _JA_NOT_GIVEN or not "\u4e00" <= c <= "\u9fff" for c in given):
            continue
        if not _zh_word_over(text, b, bare.inside) and text[b - 1 : b] not in _JA_NOT_AFTER:
            return b
    return -1


def _zh_foreign_bare_name(text: str, b: int, s: int, lo: int, bare: _ZhWords) -> bool:
    """Whether the run ``text[b:s]`` of ``_ZH_FOREIGN_BARE_RUN`` is a foreign name: no place outside
    China, alone (``巴勒斯坦``), with the character after it (``亚特兰大``) or less its last letter
    (``莫斯科多``: Moscow, then ``多``); no Chinese county-level place less its last letter; no everyday
    word and not starting with one (``_zh_everyday_run``); no amount (``5万卢布``: a digit before it) and
    no doubled letter at its start (``恩恩恩``). At a clause start: the text's start, a character that is
    not Chinese, or one of ``_ZH_FOREIGN_BARE_LEFT``. Reads from ``b - 1`` to ``s`` (the character after the
    run, which a stream holds it for). A run that starts at ``lo`` is not taken: what comes before it is
    not known (a stream's context starts there)."""
    if not _zh_clause_start(text, b, lo, _ZH_FOREIGN_BARE_LEFT) or (b and "0" <= text[b - 1] <= "9"):
        return False
    if text[b] == text[b + 1]:
        return False
    run = text[b:s]
    less_one = run.replace("·", "")[:-1]
    return not (
        _zh_foreign_place_or_word(run, bare)
        or text[b : s + 1] in bare.foreign_places
        or less_one in bare.foreign_places
        or less_one in _ZH_PLACE_SET
    )


def _zh_name_before_post_start(text: str, s: int, lo: int, bare: _ZhWords) -> int:
    """Where a name right before the post at ``s`` starts (``江泽民主席``, ``李鹏总理``), or -1: a surname
    (any but ``_ZH_ROLE_SURNAMES``'s two) and one or two given-name characters, the longest that is
    no word (unless jieba tags it as a name: ``李鹏``), starts inside none from the left (``全国委员``,
    ``格鲁吉亚总统``) and holds no stop character (a soft one only next to a ``*`` character). Reads from
    ``s - 7``; nothing before ``lo``."""
    for b in range(max(lo, s - 4), s - 1):
        if text[b : b + 2] in bare.compounds:
            g = b + 2
        elif text[b] in _ZH_ROLE_SURNAMES:
            g = b + 1
        else:
            continue
        given = text[g:s]
        if not 1 <= len(given) <= 2 or any(not "\u4e00" <= c <= "\u9fff" for c in given):
            continue
        name = text[b:s]
        head = text[b : g + 1]  # the surname and the first given-name character
        if any(w in bare.words and w not in bare.person_words for w in {name, head}):
            continue
        if given in bare.common:  # 马卫生部长: the ministry's name
            continue
        if _zh_word_over(text, b, bare.inside):
            continue
        soft = [c in _ZH_SOFT_STOP for c in given]
        if any(c in _ZH_BARE_NOT_GIVEN and not k for c, k in zip(given, soft, strict=True)):
            continue
        if any(soft) and (len(given) == 1 or all(soft) or given in bare.words):
            continue
        if any(soft) and not any(c in bare.given for c, k in zip(given, soft, strict=True) if not k):
            continue
        return b
    return -1


def _zh_list_item_end(text: str, j: int, bare: _ZhWords) -> int:
    """Where the list item starting at ``j`` (right after ``、``) ends when it is a name, or 0: two to
    three characters (four with a compound surname), a surname first, no stop character, ended by
    ``_ZH_LIST_END`` (not by the end of the text: a stream waits for it), and not a word unless jieba
    tags it as a name (``甘草、桂皮`` after a name are not names)."""
    t = j
    while t < len(text) and t - j <= 4 and text[t] not in _ZH_LIST_END:
        t += 1
    if t >= len(text) or text[t] not in _ZH_LIST_END:
        return 0
    item = text[j:t]
    compound = item[:2] in bare.compounds
    if not 2 <= len(item) <= (4 if compound else 3) or not (compound or item[0] in _ZH_NAME_FIRST):
        return 0
    given = item[2:] if compound else item[1:]
    if any(not "\u4e00" <= c <= "\u9fff" or c in _ZH_HARD_STOP for c in given):
        return 0
    if any(c in _ZH_SOFT_STOP for c in given) and not any(
        c in bare.given and c not in _ZH_SOFT_STOP for c in given
    ):
        return 0
    if item in bare.words and item not in bare.person_words:
        return 0
    return t


# A Chinese name starts with one of these (a surname): other positions are not tried.
_ZH_NAME_FIRST = frozenset(_ZH_SURNAMES + "".join(w[0] for w in _words(_ZH_COMPOUND)))
_ZH_SURNAME_SET = frozenset(_ZH_SURNAMES)
_ZH_COMPOUND_SET = frozenset(_words(_ZH_COMPOUND))

# Every second-tier match starts with one of these (stream hold-back: other positions are not tried).
NAMES_FIRST_CHARS = frozenset(
    string.ascii_letters
    + string.digits
    + "(+"
    + _ZH_SURNAMES
    + "".join(w[0] for w in _words(_ZH_COMPOUND))
    + "".join(w[0] for w in _ZH_KIND)
)
# A road's name (``address_zh_road``) may start with any Chinese character, and so may a county-level
# name (``address_zh``).
_CJK = frozenset(map(chr, range(0x4E00, 0xA000)))


def names_first_chars(detectors: Sequence[Detector]) -> frozenset[str]:
    """Where a match of ``detectors`` (the second tier, as a policy leaves it) can start: a stream
    holds back from no other position. Every Chinese character when addresses are looked for, the
    transliteration characters when foreign names are, the first characters of well-known names and of
    Japanese surnames when those are."""
    if any(d.type == "ADDRESS" for d in detectors):
        return NAMES_FIRST_CHARS | _CJK
    first = NAMES_FIRST_CHARS
    if any(d.name in ("person_zh_foreign", "person_zh_foreign_bare") for d in detectors):
        first |= _ZH_FOREIGN_CHARS
    if any(d.name == "person_zh_known" for d in detectors):
        first |= _ZH_KNOWN_FIRST
    if any(d.name == "person_zh_japanese" for d in detectors):
        first |= {name[0] for name in _ZH_JAPANESE_SURNAMES}
    return first


def names_finder(detectors: Sequence[Detector]) -> Callable[[str, int], list[Entity]]:
    """The second tier's scan (see ``_ZH_KIND``): entities starting at ``pos`` or later, left to right,
    non-overlapping (the earlier start wins, then the longer)."""
    pats = {d.name: (d, re.compile(d.pattern)) for d in detectors}
    cued = [(d, pat, tuple(w.lower() for w in d.context)) for d, pat in pats.values() if d.context]
    any_cue = re.compile("|".join(re.escape(w) for _, _, ws in cued for w in ws) or "(?!)", re.IGNORECASE)
    # Any cue word in the lower-cased text before a number: one search of the literal alternation (a
    # charset of first letters, then the words; ~0.1-0.4 µs on 24 characters, ~1 µs for 23 ``in`` tests).
    cue_word = re.compile(
        "|".join(re.escape(w) for w in sorted({w for _, _, ws in cued for w in ws})) or "(?!)"
    )
    # Only the passes the enabled detectors need (PERSON/ADDRESS/WECHAT off: the digit pass alone).
    zh_pass = _ZH_TRIGGER if {n for n in pats if "_zh" in n or n == "wechat"} else None
    zh_pairs = _zh_trigger_pairs() if zh_pass is not None else None
    en_pass = _en_capitals(
        bool({"person_en_title", "person_en", "address_military"} & set(pats)), "person_en_cue" in pats
    )
    # The word list behind bare names, names after a title and lists of names (``_zh_words``).
    zh_rules = {
        "person_zh_bare",
        "person_zh_role",
        "person_zh_post",
        "person_zh_list",
        "person_zh_foreign",
        "person_zh_foreign_bare",
        "person_zh_known",
        "person_zh_japanese",
    }
    zh_words = _zh_words() if zh_rules & set(pats) else None
    known_pass = "person_zh_known" in pats
    name_starts = (
        _zh_name_starts(known_pass, "person_zh_bare" in pats, zh_words) if zh_words is not None else None
    )
    place_pass = "address_zh_county" in pats
    road_pass = "address_zh_road" in pats
    role_names = "person_zh_role" in pats
    post_names = "person_zh_post" in pats
    foreign_names = "person_zh_foreign" in pats
    japanese_names = "person_zh_japanese" in pats
    foreign_bare_pass = "person_zh_foreign_bare" in pats
    list_pass = "person_zh_list" in pats

    def attempt(
        name: str, text: str, at: int, pos: int, out: list[Entity], early: list[Entity] | None = None
    ) -> None:
        """Try detector ``name`` at ``at``; an entity starting before ``pos`` goes to ``early`` (a list's
        seed in a stream's context) when given, or nowhere."""
        entry = pats.get(name)
        if entry is None or at < 0:
            return
        det, pat = entry
        m = pat.match(text, at)
        if m is None:
            return
        start, stop = m.span("value") if det.has_value else m.span()
        if start == stop or (start < pos and early is None):
            return
        type_ = det.type if det.check is None else det.check(text[start:stop])
        if type_ is not None:
            (out if start >= pos else early).append(Entity(type_, start, stop))  # type: ignore[union-attr]

    def list_names(text: str, pos: int, out: list[Entity], early: list[Entity], words: _ZhWords) -> None:
        """The items of a list after a name (``记者张三、李四、王五等``), left to right: a name found by
        another rule that ends at a ``、`` starts a chain, and each item that is a name continues it,
        up to ``_ZH_LIST_SPAN`` characters after that name. The bound keeps what decides an item inside
        the left context a stream keeps (``early``: the names before ``pos``), so a stream finds the
        items the whole text does, and no text makes the pass look back further."""
        # Chinese names only: ``early`` (a stream's context) keeps no others.
        seeds = {
            e.end for e in (*early, *out) if e.type == "PERSON" and "\u4e00" <= text[e.start] <= "\u9fff"
        }
        chain = -1  # where the name that started the current chain ended (-1: no chain)
        item_end = -1  # where the last item of the chain ended
        k = text.find("、", max(0, pos - _ZH_LIST_SPAN - 1))
        while k >= 0:
            if k in seeds:
                chain = k
            elif k != item_end:
                chain = -1
            end = (
                _zh_list_item_end(text, k + 1, words) if chain >= 0 and k + 1 - chain <= _ZH_LIST_SPAN else 0
            )
            if end:
                if k + 1 >= pos:
                    out.append(Entity("PERSON", k + 1, end))
                item_end = end
            k = text.find("、", k + 1)

    def find(text: str, pos: int = 0) -> list[Entity]:
        out: list[Entity] = []
        early: list[Entity] = []  # Chinese names starting before ``pos``: seeds of ``list_names``
        # The passes start before ``pos`` (a stream's context), so that words and digit runs are cut
        # as in the whole text; what starts before ``pos`` is dropped.
        lo = max(0, pos - 64)
        ascii_text = text.isascii()
        # The passes for digit runs and capitals start at an ASCII character: the text's ASCII characters
        # (a copy of ASCII text; a C pass over other text) tell whether to run them.
        ascii_chars = text.encode("ascii", "ignore")
        if zh_pass is None or zh_pairs is None or (ascii_text and not _has_zh_ascii_cue(text)):
            zh_iter: Iterable[re.Match[str]] = ()
        else:
            zh_iter = _finditer(zh_pass if _ZH_SINGLE in text else zh_pairs, text, lo)
        for m in zh_iter:
            kind, s = _ZH_KIND.get(m.group()), m.start()
            if role_names and zh_words is not None and kind in _ZH_BEFORE_NAME:  # a name after a title
                after = m.end()
                # A byline's reporters first: a name there may be a word or run on (``记者赵永新报道``).
                byline = _zh_byline_names(text, after) if m.group() == "记者" else []
                for b, e in byline:
                    (out if b >= pos else early).append(Entity("PERSON", b, e))
                end = 0
                if not byline:
                    if not (kind == "age" and text[after : after + 2] in zh_words.words):
                        end = _zh_name_after_role_end(text, after, zh_words)
                    end = end or _zh_foreign_name_end(text, after, zh_words)
                    if not end and kind == "role":
                        end = _zh_name_after_post_cued_end(text, after, zh_words)
                if end:
                    (out if after >= pos else early).append(Entity("PERSON", after, end))
            if post_names and zh_words is not None and kind == "role":  # a name before a post
                b = _zh_name_before_post_start(text, s, lo, zh_words)
                if b >= 0:
                    (out if b >= pos else early).append(Entity("PERSON", b, s))
            if kind == "title":
                for b in range(max(lo, s - 4), s):  # surname (1-2) + given name (0-2) before the title
                    if text[b] not in _ZH_NAME_FIRST:
                        continue
                    before = len(out)
                    attempt("person_zh_title", text, b, pos, out, early)
                    if len(out) > before and out[-1].end == s:
                        break
                    del out[before:]
            elif kind == "name_cue":
                attempt("person_zh_cue", text, s, pos, out, early)
            elif kind == "addr_cue":
                attempt("address_zh_cue", text, s, pos, out)
            elif kind == "addr_verb":
                attempt("address_zh_verb", text, s, pos, out)
            elif kind == "place":
                attempt("address_zh", text, s, pos, out)
            elif kind == "wechat":
                attempt("wechat", text, s, pos, out)
            elif kind == "verb":
                for b in range(max(lo, s - 4), s - 1):  # surname (1-2) + given name (1-2) before the verb
                    if text[b] not in _ZH_NAME_FIRST:
                        continue
                    before = len(out)
                    attempt("person_zh_context", text, b, pos, out, early)
                    if len(out) > before and out[-1].end == s:
                        break
                    del out[before:]
            if (foreign_names or japanese_names) and zh_words is not None and kind in _ZH_AFTER_NAME_ABROAD:
                # A foreign or Japanese name before a post, a title or a verb (``克林顿总统``, ``克林顿说``;
                # ``桥本首相``: a Japanese one also before a post written before names), where no Chinese
                # name ends there.
                if not (_person_ends_at(out, s) or _person_ends_at(early, s)):
                    b = -1
                    # The word found here is a post, a title or a verb, so ``_ZH_AFTER_FOREIGN_AT`` (and
                    # ``_ZH_AFTER_JAPANESE_AT``) match at ``s``, unless the one word they hold with a
                    # condition, ``说``, fails it (``说法``): only that word is matched again.
                    at_word = m.group() != "说" or _ZH_AFTER_FOREIGN_AT.match(text, s) is not None
                    if foreign_names and kind in _ZH_AFTER_FOREIGN and at_word:
                        b = _zh_foreign_name_before_start(text, s, lo, zh_words)
                    if b < 0 and japanese_names and at_word:
                        b = _zh_japanese_name_before_start(text, s, lo, zh_words)
                    if b >= 0:
                        (out if b >= pos else early).append(Entity("PERSON", b, s))
        if (place_pass or road_pass) and not ascii_text:
            # Addresses without a province or city, not from inside one found already (by a province,
            # a city or a cue); one found later that starts inside a county-level name
            # (``虹口区四川北路``, where 四川 started one) loses to the name's earlier start.
            anchors = _finditer(_ZH_ADDR_ANCHOR, text, lo)
            spans = [(e.start, e.end) for e in out if e.type == "ADDRESS"] if anchors else []
            for m in anchors:
                i = m.start()
                if any(s0 <= i < e0 for s0, e0 in spans):
                    continue
                before = len(out)
                if m.lastgroup == "place":  # the longest county-level name ending at i
                    for n in _ZH_PLACE_TAILS.get(text[i - 1 : i + 1], ()) if place_pass else ():
                        b = i + 1 - n
                        if b >= lo and text[b : i + 1] in _ZH_PLACE_SET:
                            tail = _ZH_ADDR_TAIL.match(text, i + 1)
                            if b >= pos and tail is not None and _zh_addr(text[b : tail.end()]):
                                out.append(Entity("ADDRESS", b, tail.end()))
                            break
                elif road_pass:  # the road's name: up to six characters after a fence
                    b = i
                    while (
                        b > max(lo, i - 6)
                        and "\u4e00" <= text[b - 1] <= "\u9fff"
                        and text[b - 1] not in _ZH_ROAD_FENCE
                    ):
                        b -= 1
                    if b < i:
                        attempt("address_zh_road", text, b, pos, out)
                spans.extend((e.start, e.end) for e in out[before:])
        if foreign_bare_pass and zh_words is not None and not ascii_text:
            for m in _finditer(_ZH_FOREIGN_BARE_RUN, text, lo):
                b, s = m.span()
                if _zh_foreign_bare_name(text, b, s, lo, zh_words):
                    (out if b >= pos else early).append(Entity("PERSON", b, s))
        if name_starts is not None and zh_words is not None and not ascii_text:
            # Every start (the pattern takes one character), so that a stream's pass (from ``lo``) and the
            # whole text's try the same names.
            for m in _finditer(name_starts, text, lo):
                s, bare_start = m.start(), m.lastindex is not None
                if known_pass and text[s : s + 2] in _ZH_KNOWN_PAIRS:
                    name = _ZH_KNOWN_NAME.match(text, s)
                    if name is not None and _zh_known_name(text, s, name.end(), zh_words):
                        (out if s >= pos else early).append(Entity("PERSON", s, name.end()))
                if bare_start:
                    end = _zh_bare_name_end(text, s, zh_words)
                    if end:
                        (out if s >= pos else early).append(Entity("PERSON", s, end))
        # Most lines of prose hold no digit: one pass over the text's ASCII characters says so faster than
        # the pass finding nothing.
        for run in _finditer(_DIGIT_RUN, text, lo) if _holds_any(ascii_chars, _DIGIT_RUN_FIRST) else ():
            rs, re_ = run.span()
            if (
                text[re_ - 1] == " "
                and re_ < len(text)
                and ("A" <= text[re_] <= "Z" or "0" <= text[re_] <= "9" or "a" <= text[re_] <= "z")
            ) or (text[re_ : re_ + 2] in _ORDINAL_ENDS and " " in text[rs:re_]):  # ``289 15th Street``
                if text[rs] != "(":
                    attempt("address_en", text, rs, pos, out)
            t = rs
            while re_ - rs >= 7 and t > lo and text[t - 1] in " \t:：,，":
                t -= 1
            if re_ - rs >= 7 and t and "\u4e00" <= text[t - 1] <= "\u9fff":  # a name right before a number
                for b in range(max(lo, t - 4), t - 1):
                    if text[b] not in _ZH_NAME_FIRST:
                        continue
                    before = len(out)
                    attempt("person_zh_context", text, b, pos, out, early)
                    if len(out) > before and out[-1].end == t:
                        break
                    del out[before:]
            if re_ - rs < 5 or not cued:
                continue
            near = text[max(0, rs - 24) : rs].lower()
            # Without a cue word in ``near`` no detector below would run: substring tests first, the
            # case-insensitive regex (a few µs on 24 characters of prose) only where one is there.
            if cue_word.search(near) is None or any_cue.search(text, max(0, rs - 24), rs) is None:
                continue
            for det, pat, words in cued:
                if not any(w in near for w in words):  # the cue word must come first (cheap)
                    continue
                hit = False
                for m in pat.finditer(text, rs):
                    if m.start() >= re_:
                        break
                    window = text[max(0, m.start() - det.context_window) : m.start()].lower()
                    if m.start() >= pos and _cue_adjacent(window, words):
                        type_ = det.type if det.check is None else det.check(m.group())
                        if type_ is not None:
                            out.append(Entity(type_, m.start(), m.end()))
                            hit = True
                if hit:
                    break
        capitals = ascii_text or _holds_any(ascii_chars, _CAPITALS)
        for m in _finditer(en_pass, text, lo) if en_pass is not None and capitals else ():
            s, rule = m.start(), _EN_RULE[m.lastgroup]  # type: ignore[index]
            if rule != "cue" and not (s and ("A" <= text[s - 1] <= "Z" or "a" <= text[s - 1] <= "z")):
                word = m.group()
                if word in _MILITARY:
                    attempt("address_military", text, s, pos, out)
                elif word in _EN_TITLES:
                    attempt("person_en_title", text, s, pos, out)
                elif word in _EN_FIRST:
                    attempt("person_en", text, s, pos, out)
                if word in _EN_LAST and s > 0:
                    prev = _PREV_NAME_WORDS.search(text, max(0, s - 40), s)
                    if prev is not None:
                        attempt("person_en", text, prev.start(), pos, out)
            if rule != "word" and s >= lo + 2:  # a cue word ends before the space (after ``lo``)
                k = text.rfind(" ", max(0, s - 30), s - 1)
                if text[k + 1 : s - 1].rstrip(":,.") in _EN_CUE_LAST:
                    cue = _EN_CUE_BEFORE.search(text, max(0, s - 40), s)
                    if cue is not None:
                        attempt("person_en_cue", text, cue.start(), pos, out)
        if list_pass and zh_words is not None and not ascii_text and "、" in text:
            list_names(text, pos, out, early, zh_words)
        if not out:
            return out
        out.sort(key=lambda e: (e.start, -e.end))
        found: list[Entity] = []
        end = -1
        for e in out:
            if e.start >= end:
                found.append(e)
                end = e.end
        return found

    return find


# Prefilter for the built-ins: a trigger character and the cluster of entity characters around it
# (spaces only where a digit group or an upper-case group follows, or after an assignment, ``=``,
# ``：``, ``密码是``, whose value may start with any character: ``密码是 hunter2``).
_TRIGGER = re.compile(
    r"[0-9@:=：_\-密口<](?:[!-~码令是为]++|[ \t]++(?=[0-9A-Z(+\"'码令是为：])|(?<=[:=：是为])[ \t]++)*+"
)
# ASCII text translated for ``_scan_windows``: its trigger characters become 0 and the characters outside
# ``[!-~]`` (spaces, controls) 1, so that ``bytes.find`` and ``rfind`` find them with ``memchr``. A search
# of ``_TRIGGER``'s class costs ~50-60 instructions a character, this translation ~10, and most lines of
# English prose are long and hold few triggers.
_TRIGGER_MARKS = bytes.maketrans(bytes(range(0x21)) + b"\x7f0123456789@:=_-<", b"\x01" * 0x22 + b"\x00" * 16)
# How far before its first trigger character an entity may begin (keywords, key prefixes, IBAN letters).
_BACK = {":": 40, "=": 40, "：": 40, "密": 0, "口": 0, "<": 0}
_TOKSTART = re.compile(r"[!-~]*+\Z")
# The prefilter's side of ``password_is``: its ``is`` right before a word (the value's).
_IS_BEFORE = re.compile(r"[ \t]" + _IS_LEAD + r"\Z")


def _window_start(text: str, pos: int, start: int, marks: bytes | None = None) -> int:
    """Where the window around the trigger cluster at ``start`` begins (not before ``pos``). ``marks``:
    ASCII text as ``_TRIGGER_MARKS`` translates it."""
    back = _BACK.get(text[start])
    if back is not None:
        return max(pos, start - back)
    if start > pos and "!" <= text[start - 1] <= "~":
        # Digits, @, - and _: the entity starts within the same run of ASCII characters (IBAN
        # letters, key prefixes, the local part of an e-mail address)...
        lo = max(pos, start - 64)
        if marks is None:
            start = max(pos, _TOKSTART.search(text, lo, start).start())
        else:  # after the last character outside ``[!-~]`` (the search tries every start from ``lo``)
            start = max(lo, marks.rfind(1, lo, start) + 1)
    # ...or its keyword is before ``is``/``was`` (``my password is hunter2``).
    if start > pos and _IS_BEFORE.search(text, max(pos, start - 6), start) is not None:
        return max(pos, start - 40)
    return start


# Response side only: our own placeholders, so they can be put back in one pass with the detection.
PLACEHOLDER_TYPE = "__placeholder__"


_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")

# Custom detectors are the policy author's regexes: RE2 scans with them (linear time, whatever the
# pattern). RE2 has no partial matches, so the streaming hold-back uses the regex module, reading
# \d \w \s \b as RE2 does (ASCII); it backtracks, so one hold-back gets this long, then holds the rest.
_USER_PARTIAL_FLAGS = regex.V0 | regex.ASCII
_USER_HOLD_BUDGET_S = 0.025


def compile_custom_pattern(pattern: str, what: str) -> tuple[UserRegex, Any]:
    """A custom detector's pattern (or the alternation of all of them) as the scanner runs it: RE2 to
    detect, the regex module for the hold-back. ``UserRegexError`` naming ``what`` when either refuses."""
    compiled = compile_user_regex(pattern, what=what)
    try:
        return compiled, regex.compile(pattern, flags=_USER_PARTIAL_FLAGS)
    except regex.error as exc:
        raise UserRegexError(
            f"{what}: {pattern!r} uses RE2 syntax that streaming cannot follow ({exc}); "
            "write it without \\Q...\\E, (?U) and \\x{...}"
        ) from None


class _TimeBoxed:
    """A regex-module pattern whose calls share one deadline, then raise ``TimeoutError``."""

    def __init__(self, pattern: Any, deadline: float) -> None:
        self._pattern = pattern
        self._deadline = deadline

    def _left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def match(self, text: str, pos: int, *, partial: bool = False) -> Any:
        return self._pattern.match(text, pos, partial=partial, timeout=self._left())

    def fullmatch(self, text: str, pos: int, *, partial: bool = False) -> Any:
        return self._pattern.fullmatch(text, pos, partial=partial, timeout=self._left())


def scoped_flags(pattern: str) -> str:
    """``(?i)abc`` -> ``(?i:abc)``: global flags are only allowed at the start of the whole alternation."""
    m = _GLOBAL_FLAGS.match(pattern)
    return f"(?{m.group(1)}:{pattern[m.end() :]})" if m else pattern


def _numbered_groups_to_named(pattern: str, prefix: str) -> str:
    """Give every group a unique name so many detectors can share one alternation.

    Numbered groups and ``\\1`` references become named ones (numbers would shift when the branches
    are concatenated), and named groups get the branch prefix (``value`` -> ``d3_value``).
    """
    out: list[str] = []
    index = 0
    i = 0
    n = len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if not in_class and nxt.isdigit() and nxt != "0":
                out.append(f"(?P={prefix}_{nxt})")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
            if i + 1 < n and pattern[i + 1] == "^":
                out.append("^")
                i += 1
            if i + 1 < n and pattern[i + 1] == "]":
                out.append("]")
                i += 1
        elif ch == "(" and not pattern.startswith("(?", i):
            index += 1
            out.append(f"(?P<{prefix}_{index}>")
        elif pattern.startswith("(?P<", i) or pattern.startswith("(?P=", i):
            # Named groups get the branch prefix too: two custom detectors may both use (?P<value>).
            kind = pattern[i + 3]
            out.append(f"(?P{kind}{prefix}_")
            i += 4
            continue
        elif pattern.startswith("(?<", i) and pattern[i + 3 : i + 4] not in ("=", "!"):
            out.append(f"(?P<{prefix}_")  # RE2's other spelling of a named group, (?<name>...)
            i += 3
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


@dataclass
class Scanner:
    """All detectors compiled into one alternation; ``scan`` returns validated, non-overlapping entities."""

    detectors: Sequence[Detector]
    placeholder_pattern: str | None = None
    # Only for detectors that all hold a trigger character (the built-ins); custom ones scan in full.
    windowed: bool = False
    # Second tier (names, addresses): its own finder (``names_finder``); the alternation is used only
    # for the stream hold-back.
    finder: Callable[[str, int], list[Entity]] | None = None
    # Characters a match can start with (for the stream hold-back); None: the built-ins' or any.
    first_chars: frozenset[str] | None = None
    _branches: list[str] = field(init=False, repr=False)
    # ``scan`` without its dispatch: the function that does the scan, for callers on the hot path.
    run: Callable[[str, int], list[Entity]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.detectors = list(self.detectors)
        # Custom detectors (the policy's regexes) run on RE2; built-in ones, ours, on ``re``.
        self._user = any(not d.builtin for d in self.detectors)
        if self._user and any(d.builtin for d in self.detectors):
            raise ValueError("custom and built-in detectors need separate scanners")
        self._branches = []
        for i, det in enumerate(self.detectors):
            branch = _numbered_groups_to_named(det.pattern, f"d{i}")
            if self._user:
                branch = f"(?:{branch})"  # RE2 keeps a flag set mid-pattern (a(?i)b) to the rest of its group
            # The empty group at the end names the branch: it closes last, so it is ``lastgroup``.
            self._branches.append(f"{branch}(?P<d{i}>)")
        if self.placeholder_pattern is not None:
            self._branches.insert(0, f"{self.placeholder_pattern}(?P<ph>)")
        source = "|".join(self._branches) or "(?!)"
        self.source = source
        partial_flags = _USER_PARTIAL_FLAGS if self._user else regex.V0
        if self._user:
            self._re, self._partial = compile_custom_pattern(source, "custom detectors")
        else:
            self._re = re.compile(self._search_source())
            # The same alternation for streaming: the ``regex`` module reports partial matches at the
            # end of the text, which tells exactly how short a tail must be held back.
            self._partial = regex.compile(source, flags=partial_flags)
        values = [
            b
            for d, b in zip(
                self.detectors, self._branches[-len(self.detectors) :] if self.detectors else [], strict=True
            )
            if d.has_value
        ]
        self._values_partial = regex.compile("|".join(values), flags=partial_flags) if values else None
        self._single: dict[str, Any] = {}
        self._rest: dict[int, re.Pattern[str]] = {}  # alternation of the branches from index i on
        self._index = {f"d{i}": i for i in range(len(self.detectors))}
        self._order = [b.rsplit("(?P<", 1)[1][:-2] for b in self._branches]
        self._markers = [(name, self._re.groupindex[name]) for name in self._order]
        self._lower_context = [tuple(w.lower() for w in d.context) for d in self.detectors]
        if self.finder is not None:
            self.run = self.finder
        else:
            self.run = self._scan_windows if self.windowed else self._scan_all
        # Stream hold-back state, made on its first use or at a server's start-up (``prepare_hold``):
        # most scanners (the request side's) never hold back, and building it takes a while.
        self._hold_ready = False
        self._hold_starts: re.Pattern[str] | None = None
        self._hold_could: re.Pattern[str] | None = None

    def prepare_hold(self) -> None:
        if self._hold_ready:
            return
        self._hold_starts = self._hold_start_pattern()
        self._hold_could = None if self._user else _could_hold_pattern(self._branches)
        self._hold_ready = True

    def _hold_start_pattern(self) -> re.Pattern[str] | None:
        """The positions ``hold_from`` tries, found at C speed (one ``finditer`` instead of a Python
        test per position; a partial match costs ~1-4 µs a position). None: every position (custom
        detectors may start with anything).

        The built-ins get the guard of ``_search_source``: it refuses a position by the character
        there and the one before, both already in the text whatever arrives later, so no match can
        ever start there, partial or not. The second tier gets the same from its detectors'
        patterns (``_leading``). ``tests/redaction/test_stream_hold_guard.py`` compares both with
        the first-character test they replace. Our placeholders are tried where their first
        character is: ``<`` by default, any of ``<[{(`` by the policy's format."""
        if self._user:
            return None
        first = self.first_chars or (_FIRST_CHARS if self.windowed else None)
        if first is None:
            return None
        placeholder = frozenset[str]()
        if self.placeholder_pattern is not None:
            found = _leading(self.placeholder_pattern)
            if found is None:
                return None
            # Not only ``first``: with ``[{type}_{n}]`` a ``[CN_PHONE_`` went out before its ``1]``.
            placeholder = found[0]
        alternatives = [_char_class(placeholder)] if placeholder else []
        if self.first_chars is None and all(d in _BUILTIN_SET for d in self.detectors):
            alternatives.insert(0, f"(?!{_MID_WORD})[{_BUILTIN_FIRST}]")
            return re.compile("|".join(alternatives))
        # The second tier's ``first_chars`` cover every detector it may hold (letters for names); the
        # detectors a policy leaves in it may start with fewer (by default, in answers: a digit or
        # ``(`` after no letter or digit), and any other position costs a failed partial match.
        leading = [_leading(d.pattern) for d in self.detectors]
        if any(start is None for start in leading):
            alternatives.insert(0, _char_class(first))
        else:
            for chars, refused in dict.fromkeys(start for start in leading if start is not None):
                chars = chars & first
                if chars:
                    fence = f"(?<!{_char_class(refused)})" if refused else ""
                    alternatives.append(fence + _char_class(chars))
        return re.compile("|".join(alternatives) or "(?!)")

    def _search_source(self) -> str:
        """The alternation the scan searches with. For the built-in detectors it is guarded: none of
        them starts at a character outside ``_FIRST_CHARS``, at a lower-case letter after a letter or
        digit, at an upper-case letter after an upper-case letter or digit, or at a digit after a digit
        (their left fences, ``_lead``; the e-mail branch starts inside a word only at an upper-case
        letter after a lower-case one). These positions, most of a window of prose or of a long number,
        are rejected by one lookahead instead of by trying every branch: the same matches
        (``tests/redaction/test_scan_guard.py`` checks it branch by branch). Not our placeholders: a
        policy's format may start with any character."""
        if self.finder is not None or not self.detectors:
            return self.source
        builtin = [
            b
            for d, b in zip(self.detectors, self._branches[-len(self.detectors) :], strict=True)
            if d in _BUILTIN_SET
        ]
        if len(builtin) != len(self.detectors):
            return self.source
        guarded = f"(?=[{_BUILTIN_FIRST}])(?!{_MID_WORD})(?:{'|'.join(builtin)})"
        return guarded if self.placeholder_pattern is None else f"{self._branches[0]}|{guarded}"

    def _user_branch(self, m: Any) -> str | None:
        """The branch an RE2 match took (``d3``). RE2's ``lastgroup`` is the group that ends last,
        which may be one inside the branch; ``re``'s is the marker, which closes last."""
        return next((name for name, index in self._markers if m.start(index) >= 0), None)

    def _subject(self, text: str) -> str | SearchText:
        """What the scan searches: RE2 takes the text encoded once for all its searches."""
        return SearchText(text) if self._user else text

    def _compile_branch(self, source: str) -> Any:
        return compile_user_regex(source, what="custom detector") if self._user else re.compile(source)

    # -- one pass ------------------------------------------------------------------------------
    def scan(self, text: str, pos: int = 0) -> list[Entity]:
        """All entities in ``text`` that start at ``pos`` or later, left to right, non-overlapping.
        Text before ``pos`` is still seen by the lookbehind fences."""
        return self.run(text, pos)

    def _scan_all(self, text: str, pos: int) -> list[Entity]:
        found: list[Entity] = []
        self._scan_range(text, pos, len(text), found)
        return found

    def scan_started_before(self, text: str, lo: int, hi: int) -> list[Entity]:
        """Entities of matches that start in ``[lo, hi)`` (they may end anywhere)."""
        found: list[Entity] = []
        search = self._re.search
        subject = self._subject(text)
        pos = lo
        while pos < hi:
            m = search(subject, pos)
            if m is None or m.start() >= hi:
                break
            accepted = self._accept(self._user_branch(m) if self._user else m.lastgroup, m, text)
            if accepted is None:
                pos = m.start() + 1
                continue
            found.append(accepted[0])
            pos = max(accepted[1], accepted[0].start + 1)
        return found

    def _scan_windows(self, text: str, pos: int) -> list[Entity]:
        # Prefilter: every built-in entity holds a trigger character (a digit, @, :, =, -, _, 密, 口
        # or <) or starts with a literal anchor (eyJ for JWTs, AKIA/ASIA for AWS keys that happen
        # to hold no digit). A C-speed scan finds the clusters around them, and the full alternation
        # runs only on a short window around each; prose between them is never tried branch by branch.
        found: list[Entity] = []
        # ASCII text (``密``, ``口`` and ``：`` are not): the trigger characters' positions from one
        # translation, each cluster matched where it starts. The same clusters as the search finds.
        marks = text.encode("ascii").translate(_TRIGGER_MARKS) if text.isascii() else None
        if marks is None:
            first = _TRIGGER.search(text, pos)
        else:
            at = marks.find(0, pos)
            first = None if at < 0 else _TRIGGER.match(text, at)
        # Both AWS prefixes end in ``IA``: one substring test spares the two for most lines.
        anchored = "eyJ" in text or ("IA" in text and ("AKIA" in text or "ASIA" in text))
        if first is None:
            if not anchored:  # most lines of prose: no window, and no iterator built for none
                return found
            windows: Iterable[tuple[int, int]] = _anchor_windows(text, pos)
        else:
            if marks is None:
                alone = _TRIGGER.search(text, first.end()) is None
            else:
                alone = marks.find(0, first.end()) < 0
            if not anchored and alone:
                # One cluster (most lines that hold a value): its window, without the generator and
                # the merging below (which would scan from ``pos`` a window that starts before 16).
                start = _window_start(text, pos, first.start(), marks)
                self._scan_range(text, pos if start <= 15 else start, min(len(text), first.end() + 2), found)
                return found
            windows = self._trigger_windows(text, pos, first.start(), marks)
            if anchored:
                windows = heapq.merge(windows, _anchor_windows(text, pos))
        n = len(text)
        done = pos  # end of the last entity: nothing before it can start a new one
        lo = hi = -1
        for start, stop in windows:
            if start <= hi + 16:  # close windows are scanned as one: fewer calls, same result
                hi = max(hi, stop)
                continue
            if hi > done:
                # Windows may overlap: a candidate cut short by a window's end is tried again.
                self._scan_range(text, max(done, lo), min(n, hi), found)
                if found:
                    done = found[-1].end
            lo, hi = start, stop
        if hi > done:
            self._scan_range(text, max(done, lo), min(n, hi), found)
        return found

    @staticmethod
    def _trigger_windows(text: str, pos: int, first: int, marks: bytes | None) -> Iterator[tuple[int, int]]:
        """Windows around the trigger clusters from ``first``, where the first one after ``pos`` starts
        (the same clusters as from ``pos``). ``marks``: ASCII text's trigger characters (``_TRIGGER_MARKS``);
        every trigger character starts a cluster, so the next one after a cluster starts the next."""
        if marks is None:
            for t in _TRIGGER.finditer(text, first):
                yield _window_start(text, pos, t.start()), t.end() + 2
            return
        at = first
        while at >= 0:
            end = _TRIGGER.match(text, at).end()  # type: ignore[union-attr]
            yield _window_start(text, pos, at, marks), end + 2
            at = marks.find(0, end)

    def _scan_range(self, text: str, pos: int, end: int, found: list[Entity]) -> None:
        """Add the entities that start in ``[pos, end)``; a candidate may run past ``end``."""
        n = len(text)
        search = self._re.search
        match = self._re.match
        subject = self._subject(text)
        while pos < end:
            m = search(subject, pos, end)
            if m is None:
                return
            start = m.start()
            if end < n and m.end() >= end - 2:
                # The window's end may have cut this candidate short: look again without the limit.
                m = match(subject, start)
                if m is None:
                    pos = start + 1
                    continue
            group = self._user_branch(m) if self._user else m.lastgroup
            accepted = self._accept(group, m, text)
            if accepted is None:
                accepted = self._fallback(group, text, start, n, subject)
            if accepted is None:
                pos = start + 1
                continue
            found.append(accepted[0])
            pos = max(accepted[1], accepted[0].start + 1)

    def _accept(self, group: str | None, m: Any, text: str) -> tuple[Entity, int] | None:
        """The entity for one match and where the scan goes on, or None when the candidate is invalid."""
        if group == "ph":
            return Entity(PLACEHOLDER_TYPE, m.start(), m.end()), m.end()
        i = self._index[group]  # type: ignore[index]
        det = self.detectors[i]
        start, stop = m.start(), m.end()
        if det.has_value:
            start, stop = m.span(f"{group}_value")
        value = text[start:stop]
        type_ = det.type
        if det.context and not self._has_context(i, text, m.start()):  # cheaper than most checks
            return None
        if det.check is not None:
            type_ = det.check(value)
            if type_ is None:
                return None
        return Entity(type_, start, stop), m.end()

    def _has_context(self, i: int, text: str, start: int) -> bool:
        window = text[max(0, start - self.detectors[i].context_window) : start].lower()
        return any(w in window for w in self._lower_context[i])

    def _fallback(
        self, group: str | None, text: str, start: int, end: int, subject: str | SearchText
    ) -> tuple[Entity, int] | None:
        """The first branch's candidate failed validation: try the later branches at the same spot."""
        try:
            after = self._order.index(group) + 1  # type: ignore[arg-type]
        except ValueError:
            return None
        if not self._user:
            # One ``match`` of the alternation of the later branches finds the first of them that
            # matches here, with the span it has alone (nothing follows the alternation to backtrack
            # into): one call instead of one per branch. RE2's group numbers would differ per suffix.
            while after < len(self._order):
                pat = self._rest.get(after)
                if pat is None:
                    pat = self._rest[after] = re.compile("|".join(self._branches[after:]))
                m = pat.match(subject, start, end)  # type: ignore[arg-type]
                if m is None:
                    return None
                ent = self._accept(m.lastgroup, m, text)
                if ent is not None:
                    return ent
                after = self._order.index(m.lastgroup) + 1  # type: ignore[arg-type]
            return None
        for name in self._order[after:]:
            pat = self._single.get(name)
            if pat is None:
                pat = self._single[name] = self._compile_branch(self._branches[self._order.index(name)])
            m = pat.match(subject, start, end)
            if m is not None:
                ent = self._accept(name, m, text)
                if ent is not None:
                    return ent
        return None

    # -- streaming ------------------------------------------------------------------------------
    def value_open(self, text: str) -> bool:
        """Streaming: whether a value entity whose keyword is in the last 48 characters of ``text`` (text
        already sent) could still take characters that arrive after it. Built-in detectors only."""
        values_partial = self._values_partial
        if values_partial is None:
            return False
        if self._user:
            return True  # the policy's patterns: not reasoned about
        lo = max(0, len(text) - 48)
        return _ASSIGN.search(text, lo) is not None and _value_open(values_partial, text, lo, len(text))

    def hold_from(self, text: str, floor: int, stop: int | None = None) -> int:
        """Where the tail that could still grow into an entity begins (``len(text)`` when none).

        A position is held when a branch matches there partially up to the end of the text, when a
        candidate from there reaches the end or is followed only by separators (``DE89 3704 0044``
        + `` 0532``), when a longer candidate could still grow from there (``+2024-11`` complete,
        ``+2024-11-2`` the start of a longer number), or for a private-key block without its END
        line. The result is never below ``floor`` (text before it was already sent).

        Positions are tried one by one with ``match``: the regex module's ``search`` prefers a
        complete match anywhere over an earlier partial one, which would let a growing entity out.
        """
        n = len(text)
        partial, values_partial = self._partial, self._values_partial
        if self._user:  # the policy's patterns may backtrack for ever: a deadline, then hold the rest
            deadline = time.monotonic() + _USER_HOLD_BUDGET_S
            partial = _TimeBoxed(partial, deadline)
            values_partial = values_partial and _TimeBoxed(values_partial, deadline)
        match = partial.match
        fullmatch = partial.fullmatch
        # A keyword already sent (``password=``) whose value is still arriving.
        if floor and values_partial is not None and _ASSIGN.search(text, max(0, floor - 48), floor):
            try:
                if _value_open(values_partial, text, max(0, floor - 48), floor, builtin=not self._user):
                    return floor
            except TimeoutError:
                return floor
        # Nothing but a private-key block grows longer than this.
        lo = max(floor, n - _MAX_GROWING)
        begin = text.rfind("-----BEGIN", floor)
        if begin >= 0 and not _PEM_END.search(text, begin):
            return begin
        # ``stop``: another scanner already holds from there; positions after it cannot matter.
        last = n if stop is None else min(n, stop)
        if not self._hold_ready:
            self.prepare_hold()
        starts = self._hold_starts
        # ``finditer`` from ``lo``: the guard's lookbehind still sees the character before ``lo``.
        positions = range(lo, last) if starts is None else map(_match_start, starts.finditer(text, lo, last))
        could = self._hold_could
        for p in positions:
            if could is not None and could.match(text, p) is None:
                continue  # no branch takes the characters from p to the end: nothing here can be held
            try:
                m = match(text, p, partial=True)
                if m is None:
                    continue
                end = m.end()
                if m.partial or end >= n or _SEPARATORS.fullmatch(text, end):
                    return p
                if text.startswith("-----BEGIN", p):
                    if not _PEM_END.search(m.group()):
                        return p
                    # A block ends at its first END line (the body is lazy): it cannot grow, though a
                    # partial fullmatch would take the rest of the stream as its body.
                    continue
                if fullmatch(text, p, partial=True) is not None:
                    return p
            except TimeoutError:  # nothing before p can grow into an entity; from p on, not known
                return p
        return n


_BUILTIN_SET = frozenset(BUILTIN)


def _value_open(values_partial: Any, text: str, lo: int, hi: int, builtin: bool = True) -> bool:
    """Whether a value entity (``password=…``, ``密码是…``) whose keyword starts in ``text[lo:hi]`` could
    still take characters that arrive after ``text``: its partial match runs to the end, or it is
    complete there, or only separators follow it. ``builtin``: only the built-in value detectors, whose
    keywords start where ``_KEYWORD_AT`` finds (a C-speed scan instead of a test per character)."""
    vmatch = values_partial.match
    n = len(text)
    if builtin:
        positions: Iterable[int] = map(_match_start, _KEYWORD_AT.finditer(text, lo, hi))
    else:
        positions = (p for p in range(lo, hi) if text[p] in _KEYWORD_FIRST)
    for p in positions:
        m = vmatch(text, p, partial=True)
        if m is not None and (m.partial or m.end() >= n or _SEPARATORS.fullmatch(text, m.end())):
            return True
    return False


def _could_hold_pattern(branches: Sequence[str]) -> re.Pattern[str] | None:
    """A cheap necessary condition for ``hold_from`` at a position (one ``re`` match, ~1 µs, where the
    partial match of the whole alternation costs 2-10 µs). A position is held when a branch's partial
    match reached the end of the text, or a complete match is followed by separators only, or a
    longer match could still grow over the rest; so the text from there to the end is, for some
    branch, either (1) characters the branch takes (or looks ahead at, inside it) followed by what
    one of its final positive lookaheads may be part-way through, or (2) a complete match followed
    by separators or by what one of its final negative lookaheads may be part-way through (``re``
    finds a complete match there, since a negative lookahead cut short by the end of the text does
    not refuse it). At ``2024 the`` no number's branch takes `` the`` and none matches ``2024``
    whole, so a number in a streamed answer costs no partial match once a word follows it. None when
    a branch with no known first character may take any character (every position is tried)."""
    alternatives: list[str] = []
    for branch in branches:
        lead = _leading(branch)
        shape = _branch_chars(branch)
        if shape is None:  # any character: the position is tried wherever the first one fits
            if lead is None:
                return None
            alternatives.append(_char_class(lead[0]) + "(?s:.)*+")
            continue
        taken, final_positive, final_negative = shape
        first = _char_class(lead[0]) if lead is not None else _piece_class(taken)
        stops = "".join(f"|{_piece_class(chars)}*+" for chars in dict.fromkeys(map(tuple, final_positive)))
        after = "".join(f"|{_piece_class(chars)}*+" for chars in dict.fromkeys(map(tuple, final_negative)))
        alternatives.append(f"{first}{_piece_class(taken)}*+(?:{stops[1:]})?")
        alternatives.append(
            f"(?:{branch}){_SEPARATOR_CLASS}*+"
            if not after
            else f"(?:{branch})(?:{_SEPARATOR_CLASS}*+{after})"
        )
    return re.compile(f"(?:{'|'.join(dict.fromkeys(alternatives))})\\Z")


def _branch_chars(pattern: str) -> tuple[list[str], list[list[str]], list[list[str]]] | None:
    """What ``_could_hold_pattern`` needs of one branch: the characters (class pieces, ``re`` syntax)
    its matches can take or look ahead at inside it, and those of its final positive and negative
    lookaheads longer than one character (one character is decided at once, or examines nothing at
    the end of the text); None when the branch may take any character (a negated class, ``.``,
    ``\\d``-like categories, case-insensitive items, lazy repeats: not spelled out). Lookbehinds only
    read what is behind."""
    parsed = _parsed_case_sensitive(pattern)
    if parsed is None:
        return None
    items = list(parsed)
    final = len(items)  # the trailing zero-width items: lookarounds, anchors, empty marker groups
    while final and (
        items[final - 1][0] in (*_ASSERTS, _re_constants.AT)
        or (items[final - 1][0] is _re_constants.SUBPATTERN and not list(items[final - 1][1][3]))
    ):
        final -= 1
    taken: list[str] = []
    if not _collect_chars(items[:final], taken, False):
        return None
    ends: tuple[list[list[str]], list[list[str]]] = ([], [])
    for op, av in items[final:]:
        if op in _ASSERTS and av[0] == 1 and av[1].getwidth()[1] > 1:
            chars: list[str] = []
            if not _collect_chars(list(av[1]), chars, False):
                return None
            ends[op is _re_constants.ASSERT_NOT].append(chars)
    return taken, ends[0], ends[1]


def _collect_chars(items: list[tuple[Any, Any]], taken: list[str], fold: bool) -> bool:
    """Add what ``items`` can take (and look ahead at, past one character) to ``taken``; False when
    that may be any character."""
    k = _re_constants
    for op, av in items:
        if op is k.LITERAL:
            if fold:
                return False
            taken.append(_class_piece(av))
        elif op is k.IN:
            if fold:
                return False
            for item, value in av:
                if item is k.LITERAL:
                    taken.append(_class_piece(value))
                elif item is k.RANGE:
                    taken.append(f"{_class_piece(value[0])}-{_class_piece(value[1])}")
                else:  # NEGATE, CATEGORY
                    return False
        elif op is k.MIN_REPEAT:
            # The regex module's partial match holds more after a lazy repeat than it can take
            # (``<[A-Z][A-Z0-9_]*?_[0-9]{1,6}>`` holds ``<EMAIL_s``): not spelled out, so that the
            # hold-back stays exactly what the partial match decides.
            return False
        elif op in (k.MAX_REPEAT, k.POSSESSIVE_REPEAT):
            if not _collect_chars(list(av[2]), taken, fold):
                return False
        elif op is k.SUBPATTERN:
            _group, add, remove, body = av
            scoped = (fold or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
            if not _collect_chars(list(body), taken, scoped):
                return False
        elif op is k.ATOMIC_GROUP:
            if not _collect_chars(list(av), taken, fold):
                return False
        elif op is k.BRANCH:
            if not all(_collect_chars(list(alt), taken, fold) for alt in av[1]):
                return False
        elif op in _ASSERTS:
            direction, body = av
            if direction == 1 and body.getwidth()[1] > 1 and not _collect_chars(list(body), taken, fold):
                return False
        elif op is k.GROUPREF_EXISTS:
            _group, yes, no = av
            if not _collect_chars(list(yes), taken, fold):
                return False
            if no is not None and not _collect_chars(list(no), taken, fold):
                return False
        elif op not in (k.AT, k.GROUPREF):  # zero-width, or what a group already took
            return False
    return True


def _piece_class(pieces: Sequence[str]) -> str:
    return "[" + "".join(dict.fromkeys(pieces)) + "]" if pieces else "(?!)"


def _class_piece(code: int) -> str:
    """One character, escaped for a ``re`` character class."""
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_match_start = re.Match.start
_ASSERTS = (_re_constants.ASSERT, _re_constants.ASSERT_NOT) if _re_constants is not None else ()


def _class_chars(op: Any, av: Any) -> frozenset[str] | None:
    """The characters one parsed item takes: a literal or a class of literals and ranges."""
    if op is _re_constants.LITERAL:
        return frozenset(chr(av))
    if op is not _re_constants.IN:
        return None
    chars: set[str] = set()
    for item, value in av:
        if item is _re_constants.LITERAL:
            chars.add(chr(value))
        elif item is _re_constants.RANGE and value[1] - value[0] < 0x10000:
            chars.update(map(chr, range(value[0], value[1] + 1)))
        else:
            return None
    return frozenset(chars)


def _parsed_case_sensitive(pattern: str) -> Any:
    """``pattern`` parsed by ``re``'s own parser; None when that parser is not there, refuses the
    pattern, or the whole pattern is case-insensitive (its characters are then not simply read off)."""
    if _re_parser is None:
        return None
    try:
        parsed = _re_parser.parse(pattern)
    except (re.error, RecursionError):
        return None
    return None if parsed.state.flags & re.IGNORECASE else parsed


def _leading(pattern: str) -> tuple[frozenset[str], frozenset[str]] | None:
    """Where a match of ``pattern`` can start: the characters its first item that consumes one
    takes (lookbehinds and anchors before it only restrict), and the characters that a negative
    lookbehind right after it refuses just before the start (``[0-9](?<![0-9A-Za-z_].)``: no digit
    or letter before). None when not known that simply (alternation, group, repeat, negated class,
    ``\\d``, a lookahead first, case-insensitive). A match, complete or partial, is impossible at a
    position whose character is not a first one or whose previous character is refused: both are
    already in the text whatever arrives later."""
    parsed = _parsed_case_sensitive(pattern)
    if parsed is None:
        return None
    flags = parsed.state.flags
    items = list(parsed)
    for i, (op, av) in enumerate(items):
        if op is _re_constants.AT or (op in _ASSERTS and av[0] == -1):
            continue
        first = _class_chars(op, av)
        if first is None:
            return None
        refused: set[str] = set()
        # ``.`` takes no newline (without DOTALL): then ``[X].`` would not refuse before one.
        if "\n" not in first or flags & re.DOTALL:
            for op2, av2 in items[i + 1 :]:
                if op2 is not _re_constants.ASSERT_NOT or av2[0] != -1:
                    break
                body = list(av2[1])
                if len(body) == 2 and body[1][0] is _re_constants.ANY:
                    before = _class_chars(*body[0])
                    if before is not None:
                        refused |= before
        return first, frozenset(refused)
    return None


# Where no built-in detector starts (see ``Scanner._search_source``): a lower-case letter after a letter or
# digit, an upper-case letter after an upper-case letter or digit, a digit after a digit. Each alternative
# starts with its class, so that ``re`` skips those that cannot match at once (one that starts with a
# lookbehind is entered every time: ~7% more in the windows' scan).
_MID_WORD = "[a-z](?<=[0-9A-Za-z].)|[A-Z](?<=[0-9A-Z].)|[0-9](?<=[0-9].)"

_ANCHORS = ("eyJ", "AKIA", "ASIA")
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]*+")


def _anchor_windows(text: str, pos: int) -> Iterator[tuple[int, int]]:
    starts = []
    for anchor in _ANCHORS:
        i = text.find(anchor, pos)
        while i >= 0:
            starts.append(i)
            i = text.find(anchor, i + 1)
    starts.sort()
    token_end = -1
    for i in starts:
        if i >= token_end:  # anchors inside one long token share its end (no quadratic rescans)
            token_end = _TOKEN.match(text, i).end()
        yield i, token_end + 2


_MAX_GROWING = 2048
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----")
# Characters a match can start with (built-ins, placeholders); custom detectors add theirs.
_FIRST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+(-:<密口")
# The same without ``<`` (our placeholders), as a regex class.
_BUILTIN_FIRST = "".join(re.escape(c) for c in sorted(_FIRST_CHARS - {"<"}))
_KEYWORD_FIRST = frozenset("PpSsCcAa密口")
# Where a built-in value detector's keyword can start: ``password``'s first letters where no ASCII letter
# or digit is before them (its fence), ``密码``/``口令`` anywhere.
_KEYWORD_AT = re.compile("[\u5bc6\u53e3]|(?<![A-Za-z0-9])[PpSsCcAa]")
# What may come between a keyword and its value: an assignment character, or ``is``/``was`` as a word.
_ASSIGN = re.compile(r"[:=：是为]|(?<![A-Za-z])(?i:is|was)(?![A-Za-z])")
# Only separators after a candidate: more text may still extend it (``+2024-11`` + ``-28``).
_SEPARATORS = re.compile(r"[\s\-.()+:/=_@%#：'\"]*")
_SEPARATOR_CLASS = _SEPARATORS.pattern.removesuffix("*")
