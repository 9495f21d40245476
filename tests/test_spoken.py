"""Spoken values (issue 17 item 2): numbers, money, dates, times and ordinals said from pre-rendered
fragments, checked against word sequences written out by hand for each language — and said in a call."""

from __future__ import annotations

from typing import Any

import pytest

from ivr.flows.spoken import FRAGMENTS, NotSayable, words
from tests.conftest import Env


def say(kind: str, value: str, lang: str, currency: str | None = None) -> str:
    return " ".join(FRAGMENTS[name][lang] for name in words(kind, value, lang, currency=currency))


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("number", "0", "zero"),
    ("number", "7", "seven"),
    ("number", "21", "twenty-one"),
    ("number", "100", "one hundred"),
    ("number", "115", "one hundred fifteen"),
    ("number", "2026", "two thousand twenty-six"),
    ("number", "1000000", "one million"),
    ("number", "1234567", "one million two hundred thirty-four thousand five hundred sixty-seven"),
    ("number", "-3.25", "minus three point two five"),
    ("money", "1.01", "one dollar and one cent"),
    ("money", "1234.50", "one thousand two hundred thirty-four dollars and fifty cents"),
    ("money", "0.99", "ninety-nine cents"),
    ("money", "5", "five dollars"),
    ("money", "$1,200", "one thousand two hundred dollars"),
    ("date", "2026-12-03", "December third twenty twenty-six"),
    ("date", "2005-01-01", "January first two thousand five"),
    ("date", "1999-07-04T10:00:00", "July fourth nineteen ninety-nine"),
    ("time", "14:30", "two thirty p.m."),
    ("time", "09:05", "nine oh five a.m."),
    ("time", "12:00", "twelve o'clock p.m."),
    ("time", "00:15", "twelve fifteen a.m."),
    ("ordinal", "3", "third"),
    ("ordinal", "22", "twenty-second"),
    ("ordinal", "100", "one hundredth"),
    ("ordinal", "101", "one hundred first"),
])
def test_english(kind: str, value: str, expected: str) -> None:
    assert say(kind, value, "en") == expected


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("number", "1", "uno"),
    ("number", "16", "dieciséis"),
    ("number", "21", "veintiuno"),
    ("number", "45", "cuarenta y cinco"),
    ("number", "100", "cien"),
    ("number", "101", "ciento uno"),
    ("number", "200", "doscientos"),
    ("number", "1000", "mil"),
    ("number", "2026", "dos mil veintiséis"),
    ("number", "21000", "veintiún mil"),
    ("number", "1000000", "un millón"),
    ("number", "2500000", "dos millones quinientos mil"),
    ("money", "1", "un dólar"),
    ("money", "21", "veintiún dólares"),
    ("money", "31", "treinta y un dólares"),
    ("money", "1.50", "un dólar con cincuenta centavos"),
    ("money", "1000000", "un millón de dólares"),
    ("money", "200", "doscientos euros", ),
    ("date", "2026-12-03", "tres de diciembre de dos mil veintiséis"),
    ("date", "2026-12-01", "primero de diciembre de dos mil veintiséis"),
    ("time", "13:30", "la una y treinta de la tarde"),
    ("time", "09:00", "las nueve de la mañana"),
    ("time", "21:15", "las nueve y quince de la noche"),
    ("ordinal", "3", "tercero"),
])
def test_spanish(kind: str, value: str, expected: str) -> None:
    currency = "EUR" if expected.endswith("euros") else None
    assert say(kind, value, "es", currency) == expected


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("number", "3", "삼"),
    ("number", "10", "십"),
    ("number", "11", "십일"),
    ("number", "100", "백"),
    ("number", "234", "이백 삼십사"),
    ("number", "1000", "천"),
    ("number", "2026", "이천 이십육"),
    ("number", "10000", "만"),
    ("number", "12000", "만 이천"),
    ("number", "30500", "삼 만 오백"),
    ("number", "150000000", "일 억 오천 만"),
    ("money", "12500", "만 이천 오백 원"),
    ("money", "3.50", "삼 달러 오십 센트", ),
    ("date", "2026-06-10", "이천 이십육 년 유월 십 일"),
    ("date", "2026-10-03", "이천 이십육 년 시월 삼 일"),
    ("time", "14:30", "오후 두 시 삼십 분"),
    ("time", "09:00", "오전 아홉 시"),
    ("ordinal", "1", "첫 번째"),
    ("ordinal", "3", "세 번째"),
    ("ordinal", "15", "십오 번째"),
])
def test_korean(kind: str, value: str, expected: str) -> None:
    currency = "USD" if "달러" in expected else None
    assert say(kind, value, "ko", currency) == expected


@pytest.mark.parametrize(("kind", "value"), [("number", "twelve"), ("date", "12/03/2026"), ("time", "25:00"),
                                             ("ordinal", "0"), ("number", "1" + "0" * 13), ("money", "NaN")])
def test_values_that_cannot_be_said_are_refused_with_a_reason(kind: str, value: str) -> None:
    with pytest.raises(NotSayable):
        words(kind, value, "en")


FLOW = """
flow: balance
numbers: ["720"]
languages: [en, es]
voices: {en: en-us, es: es}
timezone: America/New_York
start: set
prompts:
  your_balance: {say: {en: "Your balance is", es: "Su saldo es de"}}
  due: {say: {en: "due on", es: "con vencimiento el"}}
  bye: {say: {en: "Goodbye.", es: "Adiós."}}
nodes:
  set:
    set: {balance: "1234.50", due_date: "2026-12-21"}
    next: tell
  tell:
    play: [your_balance, {money: balance}, due, {date: due_date}]
    next: bye
  bye:
    hangup: bye
"""


@pytest.fixture
def balance(env: Env) -> Env:
    (env.flows / "balance.yaml").write_text(FLOW, encoding="utf-8")
    return env


def test_a_flow_says_a_balance_and_a_due_date(balance: Env) -> None:
    r = balance.ivr("simulate", "balance", "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = r.json()
    said = " ".join(line.removeprefix("  ♪ ") for line in out["transcript"] if line.startswith("  ♪ "))
    assert said == ("Your balance is one thousand two hundred thirty-four dollars and fifty cents due on "
                    "December twenty-first twenty twenty-six Goodbye.")


def test_check_refuses_a_value_in_a_language_without_fragments(balance: Env) -> None:
    (balance.flows / "balance.yaml").write_text(FLOW.replace("languages: [en, es]", "languages: [en, fr]")
                                                .replace("es: es}", "fr: fr}").replace(', es: "', ', fr: "'),
                                                encoding="utf-8")
    r = balance.ivr("check", "--no-render")
    assert r.code == 1 and "money: values are spoken in en, es, ko, not in fr" in r.out, r.out


@pytest.mark.parametrize("lang", ["en", "es", "ko"])
def test_every_kind_renders_the_fragments_it_says(lang: str) -> None:
    """What ``fragments_for`` renders for a kind covers every word the kind can say (else a call would be
    silent where a word is missing), and no more than it needs."""
    from ivr.flows.spoken import fragments_for

    samples = {"number": ["0", "7", "99", "100", "101", "999", "1000", "21000", "1000000", "2500000", "-3.25",
                          "150000000", "999999999999"],
               "money": ["0.01", "1", "1.01", "21", "31", "200", "1000000", "12500", "1234.50"],
               "date": ["2026-01-01", "2026-06-10", "2026-10-31", "2005-02-28", "1999-12-12"],
               "time": ["00:00", "00:15", "09:05", "12:00", "13:30", "21:59"],
               "ordinal": ["1", "2", "3", "10", "11", "22", "100", "101", "1000"]}
    for kind, values in samples.items():
        have = set(fragments_for(lang, kind))
        for v in values:
            for currency in (["USD", "EUR", "KRW"] if kind == "money" else [None]):
                missing = set(words(kind, v, lang, currency=currency)) - have
                assert not missing, (kind, v, currency, missing)
    assert not any(".month" in n for n in fragments_for(lang, "money"))
