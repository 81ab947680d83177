"""parse_number, the browser harness's only pure function: numbers as Superset 6.1.0 displays them in
Russian (D3_FORMAT with a decimal comma and no-break-space thousands). No browser here."""
from __future__ import annotations

import pytest

from superset_browser import parse_number

NBSP, NNBSP, THIN, MINUS = "\u00a0", "\u202f", "\u2009", "\u2212"


@pytest.mark.parametrize("text, expected", [
    ("0", 0.0),
    ("360", 360.0),
    ("1234", 1234.0),  # a format without "," groups nothing
    ("1 234", 1234.0),
    (f"1{NBSP}234", 1234.0),  # what D3_FORMAT's thousands draws
    (f"382{NBSP}545,5", 382545.5),  # a Big Number's .header-line, verbatim
    (f"1{NNBSP}234{NNBSP}567", 1234567.0),
    (f"1{THIN}234,25", 1234.25),
    ("0,5", 0.5),
    (f" 1{NBSP}234 \n", 1234.0),  # innerText's surroundings
])
def test_grouping_and_decimal_comma(text: str, expected: float) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("-5 698", -5698.0),  # 6.1.0 draws an ASCII hyphen
    (f"-5{NBSP}698", -5698.0),
    (f"{MINUS}3", -3.0),  # d3's own minus sign
    (f"{MINUS}0,25", -0.25),
    ("+7", 7.0),
])
def test_signs(text: str, expected: float) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("33,7%", 0.337),  # ",.1%" of 0.337, as drawn
    ("12,5 %", 0.125),
    (f"12,5{NBSP}%", 0.125),
    ("100%", 1.0),
    (f"{MINUS}2,5%", -0.025),
])
def test_percent_is_a_fraction(text: str, expected: float) -> None:
    assert parse_number(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text, expected", [
    ("1,2 тыс.", 1200.0),
    ("1,2 тыс", 1200.0),
    (f"3{NBSP}млн", 3_000_000.0),
    ("2,5 млрд.", 2_500_000_000.0),
    ("1 трлн", 1e12),
    ("1,23k", 1230.0),  # ".3s" under D3_FORMAT
    ("4,5M", 4_500_000.0),
    ("7G", 7e9),
])
def test_scales(text: str, expected: float) -> None:
    assert parse_number(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text, expected", [
    (f"1{NBSP}234,50{NBSP}₽", 1234.5),  # D3_FORMAT currency ["", "\u00a0₽"]
    ("99₽", 99.0),
    ("1,5 тыс. ₽", 1500.0),
])
def test_rouble_suffix(text: str, expected: float) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize("text", [
    "", "   ", "Нет данных", "No data", "-", "%", ",5", "1,", "1 234,",
    "1.5",  # a decimal point: an English format, or D3_FORMAT not applied
    "355.29",  # how a raw-mode table column without d3NumberFormat is drawn
    "1,234.5",  # English grouping and decimals
    "1.23k",  # SMART_NUMBER, which ignores D3_FORMAT
    "12 34", "1 2345", "1  234",  # malformed groups
    "1_234", "1'234",
    "12,5 %%", "5 штук", "$5", "₽5", "1e3", "NaN", "∞", "--3", "−−3", "(3)",
])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


def test_a_comma_is_always_the_decimal_separator() -> None:
    """"1,234" is 1.234 in Russian, whatever an English reader sees in it."""
    assert parse_number("1,234") == pytest.approx(1.234)
