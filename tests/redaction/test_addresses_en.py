"""US street addresses and English names as people write them (the forms of usaddress's and
probablepeople's labelled sets): directions before and after, words in capitals or with inner capitals,
numbered roads, no street type before a unit or a city with state and postcode; names with inner
capitals, particles, middle initials, in capitals after a cue; and the prose that must stay prose."""

from __future__ import annotations

import pytest

from sidecar.redaction.engine import Redactor
from sidecar.redaction.policy import Policy

REDACTOR = Redactor(Policy(), b"test-key")


def addresses(text: str) -> list[str]:
    return [text[e.start : e.end] for e in REDACTOR.find(text) if e.type == "ADDRESS"]


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        (
            "Send it to 1600 Amphitheatre Parkway, Mountain View, CA 94043.",
            ["1600 Amphitheatre Parkway, Mountain View, CA 94043"],
            "the classic form",
        ),
        (
            "Office: 10 S. LaSalle, Ste. 1050, Chicago, IL 60603",
            ["10 S. LaSalle, Ste. 1050, Chicago, IL 60603"],
            "inner capital, no street type before a unit",
        ),
        (
            "Visit 1585 Broadway, New York, NY 10036 soon",
            ["1585 Broadway, New York, NY 10036"],
            "no street type before city, state, postcode",
        ),
        ("at 3849 W 69TH PLACE today", ["3849 W 69TH PLACE"], "all in capitals"),
        (
            "drive to 5801 North Highway 763, Columbia, MO 65202",
            ["5801 North Highway 763, Columbia, MO 65202"],
            "a numbered road",
        ),
        (
            "it is 1341 State Road 75, Penasco, NM 87553",
            ["1341 State Road 75, Penasco, NM 87553"],
            "State Road is a numbered road, not a street called State",
        ),
        (
            "He lives at 289 15th Street West, Dickinson, ND 58601.",
            ["289 15th Street West, Dickinson, ND 58601"],
            "an ordinal street after the house number, a direction after the type",
        ),
        (
            "at 500 Marquette Avenue Northwest Suite 1500, Albuquerque, NM 87102",
            ["500 Marquette Avenue Northwest Suite 1500, Albuquerque, NM 87102"],
            "a direction after the street type, then a unit",
        ),
        (
            "at 239 South 500 East, Salt Lake City, UT 84102",
            ["239 South 500 East, Salt Lake City, UT 84102"],
            "a grid address",
        ),
        ("at 8938-40 S. Cottage Grove Ave", ["8938-40 S. Cottage Grove Ave"], "a range of house numbers"),
        ("mail it to 1407 herron dr jefferson city", ["1407 herron dr"], "in lower case"),
        ("it is 303 s loudoun st.", ["303 s loudoun st."], "in lower case, a direction first"),
        ("at 325 plaza rd n fair lawn", ["325 plaza rd n"], "in lower case, a direction after"),
        ("at 616 corporate way suite 2", ["616 corporate way suite 2"], "in lower case, spelled out"),
        ("Office: 10 S. Dearborn, flr 43", ["10 S. Dearborn, flr 43"], "a one-letter direction, no type"),
        ("at 1723 N SHEFFIELD UNIT 2", ["1723 N SHEFFIELD UNIT 2"], "the same in capitals"),
        ("at 20283 state road 7 ste 300", ["20283 state road 7 ste 300"], "a numbered road in lower case"),
        ("it is 133 COUNTY ROAD KK, AMHERST", ["133 COUNTY ROAD KK"], "a county road named by letters"),
        ("find us at 5028 hwy 15 n. jackson", ["5028 hwy 15 n."], "a highway in lower case"),
    ],
)
def test_street_addresses(text: str, expected: list[str], why: str) -> None:
    assert addresses(text) == expected, why


@pytest.mark.parametrize(
    "text",
    [
        "The laptop has 3 USB Ports and 2 HDMI Ports.",
        "In 2019 North Korea tested missiles.",
        "iPhone 15 Pro Max",
        "Chapter 5 North America",
        "The 300 West Coast teams",
        "Windows 10 Pro",
        "We drove 200 miles on Route 66.",
        "a 2 hour drive to the coast",
        "it's a 10 minute walk to the main street",
        "take the 5 train to the street corner",
        "we walked 3 blocks down the road",
        "set the 4 wheel drive",
        "the 8 ball court",
        "she lives at 4 privet drive",  # spelled out after one digit: too much like prose to take
        "there are 3 lanes on this road",
        "In 2 N. Korean cities",
    ],
)
def test_prose_is_no_address(text: str) -> None:
    assert addresses(text) == []


def names(text: str) -> list[str]:
    return [text[e.start : e.end] for e in REDACTOR.find(text) if e.type == "PERSON"]


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        ("Contact: Frank McElroy\n", ["Frank McElroy"], "an inner capital (Mc)"),
        ("Contact: VANCE WALKER\n", ["VANCE WALKER"], "in capitals after a cue"),
        ("Contact: STEPHEN H DYSON\n", ["STEPHEN H DYSON"], "a middle initial without a period"),
        ("Contact: Andre van der Hoek\n", ["Andre van der Hoek"], "particles"),
        ("Contact: Itsik G Pe'er\n", ["Itsik G Pe'er"], "an apostrophe inside"),
        ("Dear Mario De La Guardia,", ["Mario De La Guardia"], "capitalized particles"),
        ("The USB PORTS are on the left.", [], "capitals without a cue or title are no name"),
    ],
)
def test_english_names_as_written(text: str, expected: list[str], why: str) -> None:
    assert names(text) == expected, why
