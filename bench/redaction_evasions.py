"""Labelled evaluation set for issue 15: adversarial variants of every evasion (Unicode look-alikes,
invisible characters, separators, glued values, cue-word formats), removed false alarms, and the
name/address tier (PERSON, ADDRESS; zh + en), with and without cue words.

    ~/.cache/custos/venv/bin/python -m bench.redaction_evasions --per-kind 200 --seed 11

Leak = a value keeps at least one letter/digit outside every detected span; altered = a detection
overlaps a non-PII value. Numbers per evasion kind, per PII type, per non-PII kind, and pooled. The
generators re-implement their check digits (bench/redaction_data.py) and build names and addresses
from Faker and from component lists of their own, so the set is not the detectors' gazetteers.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from collections import defaultdict
from collections.abc import Callable

from faker import Faker

from bench.redaction_data import cn_id, luhn_digit, unionpay
from bench.redaction_eval import altered, leaked, pct, total

FW = {ord(c): ord(c) + 0xFEE0 for c in string.digits + string.ascii_letters + "@.-_+"}
ZW = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def fullwidth(s: str) -> str:
    return s.translate(FW)


def sprinkle(s: str, rng: random.Random) -> str:
    """Zero-width characters at 1-3 places inside the value."""
    chars = list(s)
    for _ in range(rng.randint(1, 3)):
        chars.insert(rng.randrange(1, len(chars)), rng.choice(ZW))
    return "".join(chars)


def mobile(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice(string.digits) for _ in range(9))


def card(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return body + luhn_digit(body)


def landline(rng: random.Random, four: bool = True) -> tuple[str, str]:
    area = rng.choice(["0577", "0755", "0571", "0512", "0731"]) if four else rng.choice(["010", "021", "020"])
    local = str(rng.randrange(2, 9)) + "".join(rng.choice(string.digits) for _ in range(7))
    return area, local


def ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}{rng.randrange(1, 100):02d}{rng.randrange(1, 10000):04d}"


def evasion_generators(rng: random.Random, zh: Faker, en: Faker) -> dict[str, tuple[str, Callable]]:
    """kind -> (PII type, () -> (prefix, value, suffix))."""

    def wrap(pre: list[str], post: list[str]) -> Callable[[str], tuple[str, str, str]]:
        return lambda v: (rng.choice(pre), v, rng.choice(post))

    zh_ctx = wrap(["请联系", "手机号码：", "备注 ", "客户电话 "], ["，谢谢。", " 已确认", "。"])
    en_ctx = wrap(["Please call ", "Contact: ", "note "], [" today.", ", thanks.", "."])
    mail_ctx = wrap(["邮箱：", "mail to ", "联系 "], ["，谢谢", " ok.", "。"])
    id_ctx = wrap(["身份证号：", "证件号码 ", "ID "], ["。", "，请核对", " ok"])
    card_ctx = wrap(["卡号：", "card ", "银行卡 "], ["。", " ok", "，谢谢"])

    def g(type_: str, ctx: Callable, value: Callable[[], str]) -> tuple[str, Callable]:
        return type_, lambda: ctx(value())

    email = lambda: rng.choice([zh, en]).email()  # noqa: E731
    return {
        "fullwidth_mobile": g("CN_PHONE", zh_ctx, lambda: fullwidth(mobile(rng))),
        "fullwidth_id": g("CN_ID", id_ctx, lambda: fullwidth(cn_id(rng))),
        "fullwidth_card": g("CN_BANK_CARD", card_ctx, lambda: fullwidth(unionpay(rng))),
        "fullwidth_at": g("EMAIL", mail_ctx, lambda: email().replace("@", "＠")),
        "fullwidth_email": g("EMAIL", mail_ctx, lambda: fullwidth(email())),
        "zero_width_mobile": g("CN_PHONE", zh_ctx, lambda: sprinkle(mobile(rng), rng)),
        "zero_width_id": g("CN_ID", id_ctx, lambda: sprinkle(cn_id(rng), rng)),
        "zero_width_card": g("CREDIT_CARD", card_ctx, lambda: sprinkle(card(rng, "4", 16), rng)),
        "zero_width_email": g("EMAIL", mail_ctx, lambda: sprinkle(email(), rng)),
        "bidi_wrapped_mobile": g("CN_PHONE", zh_ctx, lambda: "\u202d" + mobile(rng) + "\u202c"),
        "small_hyphen_landline": g(
            "CN_LANDLINE", zh_ctx, lambda: "{}\ufe63{}".format(*landline(rng, rng.random() < 0.5))
        ),
        "fullwidth_hyphen_landline": g(
            "CN_LANDLINE", zh_ctx, lambda: "{}－{}".format(*landline(rng, rng.random() < 0.5))
        ),
        "en_dash_landline": g(
            "CN_LANDLINE", zh_ctx, lambda: "{}\u2013{}".format(*landline(rng, rng.random() < 0.5))
        ),
        "nbsp_grouped_card": g(
            "CREDIT_CARD",
            card_ctx,
            lambda: (lambda c: "\u00a0".join(c[i : i + 4] for i in range(0, 16, 4)))(
                card(rng, rng.choice(["51", "52", "53", "54", "55", "4"]), 16)
            ),
        ),
        "dotted_mobile": g("CN_PHONE", zh_ctx, lambda: (lambda m: f"{m[:3]}.{m[3:7]}.{m[7:]}")(mobile(rng))),
        "grouped_id_4": g(
            "CN_ID", id_ctx, lambda: " ".join((lambda i: [i[k : k + 4] for k in range(0, 18, 4)])(cn_id(rng)))
        ),
        "grouped_id_684": g(
            "CN_ID",
            id_ctx,
            lambda: (lambda i: f"{i[:6]}{rng.choice(' -')}{i[6:14]}{rng.choice(' -')}{i[14:]}")(cn_id(rng)),
        ),
        "landline_after_cue": g(
            "CN_LANDLINE",
            wrap(["电话", "座机", "电话：", "Tel "], ["，谢谢", "。", " 转总机"]),
            lambda: "".join(landline(rng, True)),
        ),
        "bare_landline_after_cue": g(
            "CN_LANDLINE",
            wrap(["座机 ", "电话：", "固话"], ["，谢谢", "。"]),
            lambda: landline(rng, False)[1],
        ),
        "glued_right_mobile": g(
            "CN_PHONE", wrap(["手机", "电话："], ["Email:", "Tel", "QQ", "Fax"]), lambda: mobile(rng)
        ),
        "glued_left_mobile": g(
            "CN_PHONE", wrap(["Tel", "Mobile:", "Phone", "TEL"], ["。", " ok"]), lambda: mobile(rng)
        ),
        "glued_right_id": g("CN_ID", wrap(["身份证"], ["Name", "Addr", "Tel"]), lambda: cn_id(rng)),
        "email_after_punct": g(
            "EMAIL",
            lambda v: (rng.choice(["-", ".", "_", "+", "%", "'", "--"]), v, rng.choice([" ok", "。"])),
            email,
        ),
        "email_apostrophe": g(
            "EMAIL",
            mail_ctx,
            lambda: (
                f"{rng.choice(['sean', 'mary', 'liam', 'd'])}.o'{en.last_name().lower()}@{en.free_email_domain()}"  # noqa: E501
            ),
        ),
        "email_tld_glued": g(
            "EMAIL",
            lambda v: (rng.choice(["邮箱", "mail "]), v, rng.choice(["FanLetter", "Tel", "Name:", "QQ"])),
            lambda: (
                f"{en.user_name()}@{rng.choice(['126.com', '163.com', 'qq.com', 'gmail.com', 'sina.cn'])}"
            ),
        ),
        "intl_taiwan": g(
            "PHONE",
            en_ctx,
            lambda: (
                f"+886 {rng.choice(['2', '9'])}{rng.randrange(10, 99)} {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}"  # noqa: E501
            ),
        ),
        "intl_hong_kong": g(
            "PHONE",
            en_ctx,
            lambda: f"+852 {rng.choice('2359')}{rng.randrange(100, 999)} {rng.randrange(1000, 9999)}",
        ),
        "intl_uk_ext": g(
            "PHONE",
            en_ctx,
            lambda: (
                f"+44 20 7{rng.randrange(100, 999)} {rng.randrange(1000, 9999)}"
                + rng.choice(["x", "x12", " ext. 4", ""])
            ),
        ),
        "national_after_cue": g(
            "PHONE",
            wrap(["Tel: ", "Phone ", "电话：", "call "], [" today", "。", "."]),
            lambda: rng.choice(
                [
                    f"020 7{rng.randrange(100, 999)} {rng.randrange(1000, 9999)}",
                    f"09{rng.randrange(10, 99)}-{rng.randrange(100, 999)}-{rng.randrange(100, 999)}",
                    f"(02) 2{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
                    f"{rng.choice('2356')}{rng.randrange(100, 999)} {rng.randrange(1000, 9999)}",
                ]
            ),
        ),
        "qq_after_cue": g(
            "QQ",
            wrap(["QQ：", "QQ号 ", "qq:", "加QQ"], ["，谢谢", " ok", "。"]),
            lambda: str(rng.randrange(10**4, 10**10)),
        ),
        "wechat_after_cue": g(
            "WECHAT",
            wrap(["微信号：", "微信 ", "WeChat ID: ", "vx："], ["，谢谢", " ok", "。"]),
            lambda: (
                rng.choice(string.ascii_letters)
                + "".join(
                    rng.choice(string.ascii_lowercase + string.digits + "_-")
                    for _ in range(rng.randint(5, 15))
                )
            ),
        ),
        "ssn_without_dashes": g(
            "US_SSN", wrap(["SSN ", "SSN: ", "social security number "], [".", " ok"]), lambda: ssn(rng)
        ),
        "maestro_card": g(
            "CREDIT_CARD",
            card_ctx,
            lambda: card(rng, rng.choice(["6759", "5018", "5020", "6304"]), rng.choice([16, 19])),
        ),
        "mir_card": g("CREDIT_CARD", card_ctx, lambda: card(rng, rng.choice(["2200", "2201", "2204"]), 16)),
        "slack_xapp": g(
            "SLACK_TOKEN",
            wrap(["SLACK_APP_TOKEN=", "token "], ["", " ok"]),
            lambda: (
                f"xapp-1-A{rng.randrange(10**9, 10**10)}-{rng.randrange(10**12, 10**13)}-"
                + "".join(rng.choice("0123456789abcdef") for _ in range(64))
            ),
        ),
    }


# -- names and addresses ---------------------------------------------------------------------------
_PROV_CITY = [
    ("北京市", "", ["海淀区", "朝阳区", "东城区", "丰台区"]),
    ("上海市", "", ["浦东新区", "徐汇区", "静安区", "闵行区"]),
    ("广东省", "深圳市", ["南山区", "福田区", "宝安区"]),
    ("广东省", "广州市", ["天河区", "越秀区", "番禺区"]),
    ("浙江省", "杭州市", ["西湖区", "滨江区", "余杭区"]),
    ("江苏省", "南京市", ["鼓楼区", "玄武区", "江宁区"]),
    ("四川省", "成都市", ["武侯区", "锦江区", "高新区"]),
    ("湖北省", "武汉市", ["洪山区", "江汉区", "武昌区"]),
    ("山东省", "青岛市", ["市南区", "崂山区"]),
    ("河南省", "郑州市", ["金水区", "二七区"]),
    ("福建省", "厦门市", ["思明区", "湖里区"]),
    ("陕西省", "西安市", ["雁塔区", "碑林区"]),
]
_ROADS = [
    "中关村大街",
    "建国路",
    "南京西路",
    "深南大道",
    "文三路",
    "人民路",
    "解放路",
    "中山北路",
    "科技园南路",
    "长安街",
    "滨河路",
    "学院路",
    "和平里东街",
    "光华路",
    "天府大道",
]


def zh_address(rng: random.Random, zh: Faker) -> str:
    if rng.random() < 0.25:
        return zh.address().replace("\n", " ")
    prov, city, districts = rng.choice(_PROV_CITY)
    parts = [prov if rng.random() < 0.7 or not city else "", city, rng.choice(districts)]
    parts.append(rng.choice(_ROADS) + f"{rng.randrange(1, 999)}号")
    r = rng.random()
    if r < 0.4:
        parts.append(f"{rng.randrange(1, 30)}号楼{rng.randrange(1, 6)}单元{rng.randrange(101, 2999)}室")
    elif r < 0.6:
        parts.append(
            f"{rng.choice(['阳光', '金地', '万科', '碧桂园'])}小区{rng.randrange(1, 20)}栋{rng.randrange(101, 999)}室"  # noqa: E501
        )
    return "".join(parts)


def zh_address_local(rng: random.Random) -> str:
    """An address as people write it in a city everyone knows: no province or city, a district (or
    only the road: ``road_only``), a road, a number, sometimes a segment or a building."""
    _, _, districts = rng.choice(_PROV_CITY)
    road = rng.choice(_ROADS)
    if rng.random() < 0.2:
        road += rng.choice(["一段", "二段", "三段", "四段"])
    parts = [rng.choice(districts), road + f"{rng.randrange(1, 999)}号"]
    if rng.random() < 0.4:
        parts.append(f"{rng.randrange(1, 30)}号楼{rng.randrange(101, 2999)}室")
    return "".join(parts)


def name_generators(rng: random.Random, zh: Faker, en: Faker) -> dict[str, tuple[str, str, Callable]]:
    """kind -> (type, lang, () -> (prefix, value, suffix))."""

    def pick(*options: str) -> str:
        return rng.choice(options)

    return {
        "zh_name_cue": (
            "PERSON",
            "zh",
            lambda: (
                pick("姓名：", "联系人：", "收件人", "我叫", "客户", "申请人："),
                zh.name(),
                pick("，电话见附件。", "。", "，身份证已核对"),
            ),
        ),
        "zh_name_title": (
            "PERSON",
            "zh",
            lambda: (
                pick("请转告", "今天", "联系"),
                zh.name(),
                pick("先生", "女士", "经理", "老师") + pick("，谢谢。", "明天到。"),
            ),
        ),
        "zh_name_bare": (
            "PERSON",
            "zh",
            lambda: (
                pick("昨天", "我和", "会上"),
                zh.name(),
                pick("说明天再来。", "一起去了公司。", "提出了新方案。"),
            ),
        ),
        # Contexts the detectors were not written for (no cue, title or listed verb): a recall floor.
        "zh_name_unseen": (
            "PERSON",
            "zh",
            lambda: (
                pick("感谢", "这是", "他把文件交给了", "经过讨论，"),
                zh.name(),
                pick("的报告写得很好。", "在会上发言。", "，请查收。", "的建议被采纳了。"),
            ),
        ),
        "en_name_unseen": (
            "PERSON",
            "en",
            lambda: (
                pick("Thanks to ", "Report by ", "We hired "),
                en.first_name() + " " + en.last_name(),
                pick(" for the help.", " last week.", "."),
            ),
        ),
        "zh_name_next_to_pii": (
            "PERSON",
            "zh",
            lambda: ("", zh.name(), " " + mobile(rng) + pick("，", "。")),
        ),
        "zh_address_cue": (
            "ADDRESS",
            "zh",
            lambda: (
                pick("地址：", "收货地址：", "家住", "寄到", "住址 "),
                zh_address(rng, zh),
                pick("，电话联系。", "。", "，谢谢"),
            ),
        ),
        "zh_address_bare": (
            "ADDRESS",
            "zh",
            lambda: (
                pick("我们在", "会议地点", "公司搬到了"),
                zh_address(rng, zh),
                pick("。", "，欢迎来访。"),
            ),
        ),
        "en_name_cue": (
            "PERSON",
            "en",
            lambda: (
                pick("My name is ", "Dear ", "Name: ", "Contact: ", "Regards, "),
                en.first_name() + " " + en.last_name(),
                pick(".", ",", " here."),
            ),
        ),
        "en_name_title": (
            "PERSON",
            "en",
            lambda: (
                pick("Mr. ", "Ms. ", "Dr. ", "Mrs. "),
                en.last_name(),
                pick(" will call.", " signed it."),
            ),
        ),
        "en_name_bare": (
            "PERSON",
            "en",
            lambda: (
                pick("Yesterday ", "I met ", "Ask "),
                en.first_name() + " " + en.last_name(),
                pick(" about it.", " at noon."),
            ),
        ),
        "en_address": (
            "ADDRESS",
            "en",
            lambda: (
                pick("Ship to ", "Address: ", "I live at "),
                en.address().replace("\n", pick(", ", "\n")),
                pick(".", " please."),
            ),
        ),
        "en_street_only": (
            "ADDRESS",
            "en",
            lambda: (pick("Meet at ", "Office: "), en.street_address(), pick(".", " tomorrow.")),
        ),
    }


def late_name_generators(rng: random.Random, zh: Faker, tw: Faker) -> dict[str, tuple[str, str, Callable]]:
    """Kinds added after the first published runs: drawn after every other record, so that those draw
    what they drew before (same seed, same records)."""
    return {
        "zh_address_local": (
            "ADDRESS",
            "zh",
            lambda: (
                rng.choice(["我们在", "会议改在", "公司搬到了", "请到"]),
                zh_address_local(rng),
                rng.choice(["。", "，欢迎来访。", "见面"]),
            ),
        ),
        "zh_address_road_only": (
            "ADDRESS",
            "zh",
            lambda: (
                rng.choice(["我们在", "会议改在", "约在", "请到"]),
                rng.choice(_ROADS) + f"{rng.randrange(1, 999)}号",
                rng.choice(["。", "见面", "，不见不散"]),
            ),
        ),
        # Spaces (ASCII or full-width) between the parts of an address, and inside a name after its cue.
        "zh_address_spaced": (
            "ADDRESS",
            "zh",
            lambda: (
                rng.choice(["地址：", "收货地址：", "住址：", "寄到"]),
                _spaced(rng, zh_address_parts(rng)),
                rng.choice(["。", "，电话见附件。", "，谢谢"]),
            ),
        ),
        "zh_name_cue_spaced": (
            "PERSON",
            "zh",
            lambda: (
                rng.choice(["姓名：", "联系人：", "收件人：", "申请人："]),
                _spaced_name(rng, zh.name()),
                rng.choice(["，电话见附件。", "。", "，身份证已核对"]),
            ),
        ),
        # Traditional Chinese as written in Taiwan and Hong Kong: Faker's zh_TW names and addresses
        # after traditional cue words.
        "zh_tw_name_cue": (
            "PERSON",
            "zh",
            lambda: (
                rng.choice(["姓名：", "聯絡人：", "收件人：", "我叫", "申請人："]),
                tw.name(),
                rng.choice(["，電話見附件。", "。", "，身分證已核對"]),
            ),
        ),
        "zh_tw_name_title": (
            "PERSON",
            "zh",
            lambda: ("請轉告", tw.name(), rng.choice(["先生", "女士", "經理", "醫生"]) + "，謝謝。"),
        ),
        "zh_tw_address_cue": (
            "ADDRESS",
            "zh",
            lambda: (
                rng.choice(["地址：", "住址：", "收貨地址：", "寄到"]),
                tw.address(),
                rng.choice(["。", "，謝謝"]),
            ),
        ),
        # A Chinese name in pinyin after a Chinese cue word (Faker's romanized zh_CN names).
        "zh_pinyin_name_cue": (
            "PERSON",
            "zh",
            lambda: (
                rng.choice(["姓名：", "联系人：", "收件人：", "我叫"]),
                zh.romanized_name() if rng.random() < 0.7 else zh.romanized_name().upper(),
                rng.choice(["，电话见附件。", "。", "，谢谢"]),
            ),
        ),
    }


def zh_address_parts(rng: random.Random) -> list[str]:
    """A province or city, a district, a road with a number, sometimes a building: the parts of an
    address that people separate with spaces."""
    prov, city, districts = rng.choice(_PROV_CITY)
    parts = [p for p in (prov if rng.random() < 0.5 else "", city) if p]
    parts += [rng.choice(districts), rng.choice(_ROADS), f"{rng.randrange(1, 999)}号"]
    if rng.random() < 0.4:
        parts += [f"{rng.randrange(1, 30)}号楼", f"{rng.randrange(101, 2999)}室"]
    return parts


def _spaced(rng: random.Random, parts: list[str]) -> str:
    space = rng.choice([" ", "\u3000"])
    out = parts[0]
    for part in parts[1:]:  # not always a space between two parts (``北京市海淀区 中关村大街``)
        out += (space if rng.random() < 0.7 else "") + part
    return out


def _spaced_name(rng: random.Random, name: str) -> str:
    space = rng.choice([" ", "\u3000"])
    surname = 2 if len(name) == 4 else 1
    if rng.random() < 0.5:  # after the surname only (``王 小明``)
        return name[:surname] + space + name[surname:]
    return name[:surname] + "".join(space + c for c in name[surname:])  # between all (``王 小 明``)


_NUMERALS = ("〇一二三四五六七八九", "零壹贰叁肆伍陆柒捌玖")


def numerals(digits: str, rng: random.Random) -> str:
    """A number written digit by digit in Chinese numerals, plain or financial, or half in them."""
    table = rng.choice(_NUMERALS)
    if rng.random() < 0.2:  # the first digits left as they are (``138一二三四五六七八``)
        return digits[:3] + "".join(table[int(d)] if d.isdigit() else d for d in digits[3:])
    return "".join(table[int(d)] if d.isdigit() else d for d in digits)


def late_evasion_generators(rng: random.Random) -> dict[str, tuple[str, Callable]]:
    """Evasions added after the first published runs: drawn after every other record."""
    zh_ctx = ["请联系", "手机号码：", "加我", "电话 "]
    return {
        "numeral_mobile": (
            "CN_PHONE",
            lambda: (
                rng.choice(zh_ctx),
                numerals(mobile(rng), rng),
                rng.choice(["，谢谢。", " 已确认", "。"]),
            ),
        ),
        "wechat_variant_cue": (
            "WECHAT",
            lambda: (
                rng.choice(["加我v：", "薇信：", "加微 ", "wx：", "VX号 ", "加V "]),
                rng.choice(string.ascii_letters)
                + "".join(
                    rng.choice(string.ascii_lowercase + string.digits + "_")
                    for _ in range(rng.randrange(6, 14))
                ),
                rng.choice(["，备注来意", " 谢谢", "。"]),
            ),
        ),
        "numeral_id": (
            "CN_ID",
            lambda: (
                rng.choice(["身份证号：", "证件号码 "]),
                numerals(cn_id(rng), rng),
                rng.choice(["。", "，请核对"]),
            ),
        ),
    }


NON_PII = {
    "ipv6_double_colon": lambda rng: rng.choice(["std::vector", "a :: b", "Foo::bar", "::"]),
    "broadcast_mac": lambda rng: rng.choice(["FF:FF:FF:FF:FF:FF", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"]),
    "doc_placeholder": lambda rng: rng.choice(
        [
            "ghp_" + "x" * 36,
            "xoxb-xxxx-xxxx-xxxx",
            "xoxb-your-bot-token",
            "sk-" + "x" * 32,
            "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        ]
    ),
    "zh_place_prose": lambda rng: (
        rng.choice(["北京", "上海", "深圳", "杭州市", "广东省"])
        + rng.choice(["是一座城市", "的天气不错", "发展很快"])
    ),
    "zh_common_words": lambda rng: rng.choice(
        ["项目经理", "高度重视", "方法论", "明天下午", "全班同学", "原先生产线", "王牌产品", "黄金周"]
    ),
    "zh_org": lambda rng: rng.choice(["北京大学", "上海交通大学", "中国银行", "人民政府", "上海市政府"]),
    "en_capitalized": lambda rng: rng.choice(
        [
            "The Company",
            "New York",
            "Park Avenue is famous",
            "Section 5",
            "United States",
            "Monday Morning",
            "Customer Service",
        ]
    ),
    "en_product": lambda rng: rng.choice(
        ["Apple Watch", "Microsoft Word", "Google Maps", "Amazon Prime", "Visual Studio Code"]
    ),
    "numbers_after_cue_words": lambda rng: rng.choice(
        ["QQ群规则第3条", "电话会议 2024-11-28", "Tel. ext. list 2024", "SSN format: XXX-XX-XXXX"]
    ),
}


def build(per_kind: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    Faker.seed(seed)
    zh, en = Faker("zh_CN"), Faker("en_US")
    records = []
    for kind, (type_, gen) in evasion_generators(rng, zh, en).items():
        for _ in range(per_kind):
            pre, value, post = gen()
            records.append(_record(pre, value, post, type_, kind, zh if rng.random() < 0.5 else en))
    for kind, (type_, _lang, gen) in name_generators(rng, zh, en).items():
        for _ in range(per_kind):
            pre, value, post = gen()
            records.append(_record(pre, value, post, type_, kind, zh if _lang == "zh" else en))
    for kind, gen in NON_PII.items():
        for i in range(per_kind):
            value = gen(rng)
            filler = (zh.sentence() if i % 2 == 0 else en.sentence()) + " "
            text = filler + value + " 。"
            records.append(
                {
                    "text": text,
                    "pii": [],
                    "nonpii": [
                        {"kind": kind, "start": len(filler), "end": len(filler) + len(value), "value": value}
                    ],
                }
            )
    for kind, (type_, _lang, gen) in late_name_generators(rng, zh, Faker("zh_TW")).items():
        for _ in range(per_kind):
            pre, value, post = gen()
            records.append(_record(pre, value, post, type_, kind, zh if _lang == "zh" else en))
    for kind, (type_, gen) in late_evasion_generators(rng).items():
        for _ in range(per_kind):
            pre, value, post = gen()
            records.append(_record(pre, value, post, type_, kind, zh))
    rng.shuffle(records)
    return records


def _record(pre: str, value: str, post: str, type_: str, kind: str, filler_faker: Faker) -> dict:
    filler = filler_faker.sentence() + " "
    start = len(filler) + len(pre)
    return {
        "text": filler + pre + value + post,
        "pii": [{"type": type_, "kind": kind, "start": start, "end": start + len(value), "value": value}],
        "nonpii": [],
    }


def main(argv: list[str] | None = None) -> int:
    from sidecar.redaction.engine import Redactor
    from sidecar.redaction.policy import Policy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-kind", type=int, default=200)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--show-misses", type=int, default=0)
    args = p.parse_args(argv)
    records = build(args.per_kind, args.seed)
    redactor = Redactor(Policy(), b"bench-key")
    t0 = time.perf_counter()
    spans = [[(e.start, e.end) for e in redactor.find(r["text"])] for r in records]
    dt = time.perf_counter() - t0
    size = sum(len(r["text"].encode()) for r in records)
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    over: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    shown: dict[str, int] = defaultdict(int)
    for rec, found in zip(records, spans, strict=True):
        for pii in rec["pii"]:
            bad = leaked((pii["start"], pii["end"]), rec["text"], found)
            for d, key in ((by_kind, pii["kind"]), (by_type, pii["type"])):
                d[key][0] += bad
                d[key][1] += 1
            if bad and shown[pii["kind"]] < args.show_misses:
                shown[pii["kind"]] += 1
                print("LEAK", pii["kind"], repr(pii["value"]), "in", repr(rec["text"]))
        for n in rec["nonpii"]:
            hit = altered((n["start"], n["end"]), found)
            over[n["kind"]][0] += hit
            over[n["kind"]][1] += 1
            if hit and shown[n["kind"]] < args.show_misses:
                shown[n["kind"]] += 1
                print("ALTERED", n["kind"], repr(n["value"]), "in", repr(rec["text"]))
    print(
        f"records: {len(records)} ({size / 1e6:.2f} MB), seed {args.seed}, Custos {size / dt / 1e6:.1f} MB/s on this set"  # noqa: E501
    )
    names = {
        *name_generators(random.Random(0), Faker(), Faker()),
        *late_name_generators(random.Random(0), Faker(), Faker()),
    }
    evasions = {k: v for k, v in by_kind.items() if k not in names}
    print("\n| evasion | type | n | leak |\n|---|---|---:|---:|")
    types = {k: t for k, (t, _) in evasion_generators(random.Random(0), Faker(), Faker()).items()}
    types.update((k, t) for k, (t, _) in late_evasion_generators(random.Random(0)).items())
    for kind in sorted(evasions):
        print(f"| {kind} | {types[kind]} | {evasions[kind][1]} | {pct(evasions[kind])} |")
    print(f"| **all evasions** | | {total(evasions)[1]} | **{pct(total(evasions))}** |")
    print("\n| names / addresses | n | leak |\n|---|---:|---:|")
    for kind in sorted(names):
        print(f"| {kind} | {by_kind[kind][1]} | {pct(by_kind[kind])} |")
    for t in ("PERSON", "ADDRESS"):
        zh_kinds = [
            k for k in names if k.startswith("zh_") and by_type[t][1] and (("name" in k) == (t == "PERSON"))
        ]
        en_kinds = [k for k in names if k.startswith("en_") and (("name" in k) == (t == "PERSON"))]
        print(
            f"| **{t} zh** | {total({k: by_kind[k] for k in zh_kinds})[1]} | **{pct(total({k: by_kind[k] for k in zh_kinds}))}** |"  # noqa: E501
        )
        print(
            f"| **{t} en** | {total({k: by_kind[k] for k in en_kinds})[1]} | **{pct(total({k: by_kind[k] for k in en_kinds}))}** |"  # noqa: E501
        )
    print("\n| non-PII | n | altered |\n|---|---:|---:|")
    for kind in sorted(over):
        print(f"| {kind} | {over[kind][1]} | {pct(over[kind])} |")
    print(f"| **all non-PII** | {total(over)[1]} | **{pct(total(over))}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
