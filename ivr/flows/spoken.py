"""Spoken values — numbers, money, dates, times, ordinals — as sequences of pre-rendered fragments, in
English, Spanish and Korean. Pure: a value and a language in, fragment names out; the fragments are built-in
prompts (``v.<lang>.<key>``) rendered with the flow's other prompts, so no call synthesises speech.

Whole words are fragments wherever a language says them as one: every number 0–99 (``twenty-three``,
``veintitrés``, ``이십삼``), Spanish hundreds in both genders, Korean hundreds and thousands (``이백``,
``삼천``), hour words. Fewer joins, fewer seams: a read-out sounds like a sentence, not a ransom note.

Inflection follows each language: Spanish shortens *uno* before a noun (*un dólar*, *veintiún dólares*,
*un millón*) and says *cien* alone but *ciento uno*; Korean counts money, years and minutes with Sino-Korean
numbers but hours and ordinals with native ones (*두 시*, *세 번째*), and says 6 and 10 as months *유월*,
*시월*; English reads years in pairs (*twenty twenty-six*) and minutes with *oh* (*nine oh five*).
"""

from __future__ import annotations

import re
from datetime import date, time
from decimal import Decimal, InvalidOperation

LANGUAGES = ("en", "es", "ko")
KINDS = ("number", "money", "date", "time", "ordinal")
CURRENCIES = ("USD", "EUR", "KRW")
DEFAULT_CURRENCY = {"en": "USD", "es": "USD", "ko": "KRW"}
MAX_NUMBER = 10**12 - 1  # up to 999 billion (en) / 9,999억 (ko): balances, not astronomy


class NotSayable(ValueError):
    """The value is not a number/date/time this kind can say (the reason, plainly)."""


# -- the words ------------------------------------------------------------------------------------------------

_EN_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_EN_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_EN_ORD_ONES = (
    "zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth",
    "nineteenth",
)
_EN_ORD_TENS = (
    "_", "_", "twentieth", "thirtieth", "fortieth", "fiftieth", "sixtieth", "seventieth", "eightieth", "ninetieth",
)
_EN_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
    "December",
)


def _en_99(n: int) -> str:
    if n < 20:
        return _EN_ONES[n]
    tens, one = divmod(n, 10)
    return _EN_TENS[tens] + (f"-{_EN_ONES[one]}" if one else "")


def _en_ord_99(n: int) -> str:
    if n < 20:
        return _EN_ORD_ONES[n]
    tens, one = divmod(n, 10)
    return f"{_EN_TENS[tens]}-{_EN_ORD_ONES[one]}" if one else _EN_ORD_TENS[tens]


_ES_ONES = (
    "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez", "once", "doce",
    "trece", "catorce", "quince", "dieciséis", "diecisiete", "dieciocho", "diecinueve", "veinte", "veintiuno",
    "veintidós", "veintitrés", "veinticuatro", "veinticinco", "veintiséis", "veintisiete", "veintiocho",
    "veintinueve",
)
_ES_TENS = ["_", "_", "_", "treinta", "cuarenta", "cincuenta", "sesenta", "setenta", "ochenta", "noventa"]
_ES_HUNDREDS = (
    "_", "ciento", "doscientos", "trescientos", "cuatrocientos", "quinientos", "seiscientos", "setecientos",
    "ochocientos", "novecientos",
)
_ES_MONTHS = (
    "enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre", "noviembre",
    "diciembre",
)
_ES_ORD = ["_", "primero", "segundo", "tercero", "cuarto", "quinto", "sexto", "séptimo", "octavo", "noveno", "décimo"]
_ES_HOURS = (
    "_", "la-una", "las-dos", "las-tres", "las-cuatro", "las-cinco", "las-seis", "las-siete", "las-ocho",
    "las-nueve", "las-diez", "las-once", "las-doce",
)


def _es_99(n: int) -> str:
    if n < 30:
        return _ES_ONES[n]
    tens, one = divmod(n, 10)
    return _ES_TENS[tens] + (f" y {_ES_ONES[one]}" if one else "")


_KO_DIGITS = ["_", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
_KO_NATIVE_HOURS = ["_", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉", "열", "열한", "열두"]
_KO_NATIVE_ORD = ["_", "첫", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉", "열"]
_KO_MONTHS = ["_", "일월", "이월", "삼월", "사월", "오월", "유월", "칠월", "팔월", "구월", "시월", "십일월", "십이월"]


def _ko_99(n: int) -> str:
    if n == 0:
        return "영"
    tens, one = divmod(n, 10)
    head = "" if tens == 0 else ("십" if tens == 1 else _KO_DIGITS[tens] + "십")
    return head + (_KO_DIGITS[one] if one else "")


def fragment_texts() -> dict[str, dict[str, str]]:
    """Every fragment: name → {language: text}. Built-in prompts, rendered only for flows that say values."""
    t: dict[str, dict[str, str]] = {}
    for n in range(100):
        t[f"v.en.{n}"] = {"en": _en_99(n)}
        t[f"v.en.ord{n}"] = {"en": _en_ord_99(n)}
        t[f"v.es.{n}"] = {"es": _es_99(n)}
        t[f"v.ko.{n}"] = {"ko": _ko_99(n)}
    for i in range(1, 10):
        t[f"v.es.h{i}"] = {"es": _ES_HUNDREDS[i]}
        t[f"v.es.h{i}f"] = {"es": _ES_HUNDREDS[i].replace("ientos", "ientas")}
        t[f"v.ko.h{i}"] = {"ko": ("" if i == 1 else _KO_DIGITS[i]) + "백"}
        t[f"v.ko.k{i}"] = {"ko": ("" if i == 1 else _KO_DIGITS[i]) + "천"}
    for i, m in enumerate(_EN_MONTHS, 1):
        t[f"v.en.month{i}"] = {"en": m}
        t[f"v.es.month{i}"] = {"es": _ES_MONTHS[i - 1]}
        t[f"v.ko.month{i}"] = {"ko": _KO_MONTHS[i]}
    for i in range(1, 11):
        t[f"v.es.ord{i}"] = {"es": _ES_ORD[i]}
        t[f"v.ko.ord{i}"] = {"ko": f"{_KO_NATIVE_ORD[i]} 번째"}
    for i in range(1, 13):
        t[f"v.es.hour{i}"] = {"es": _ES_HOURS[i].replace("-", " ")}
        t[f"v.ko.hour{i}"] = {"ko": f"{_KO_NATIVE_HOURS[i]} 시"}
    words = {
        "en": {
            "hundred": "hundred",
            "thousand": "thousand",
            "million": "million",
            "billion": "billion",
            "and": "and",
            "oh": "oh",
            "oclock": "o'clock",
            "am": "a.m.",
            "pm": "p.m.",
            "USD1": "dollar",
            "USD": "dollars",
            "USDc1": "cent",
            "USDc": "cents",
            "EUR1": "euro",
            "EUR": "euros",
            "EURc1": "cent",
            "EURc": "cents",
            "KRW1": "won",
            "KRW": "won",
            "minus": "minus",
            "point": "point",
            "hundredth": "hundredth",
            "thousandth": "thousandth",
            "millionth": "millionth",
            "billionth": "billionth",
        },
        "es": {
            "cien": "cien",
            "un": "un",
            "una": "una",
            "veintiun": "veintiún",
            "veintiuna": "veintiuna",
            "mil": "mil",
            "millon": "millón",
            "millones": "millones",
            "y": "y",
            "con": "con",
            "de": "de",
            "manana": "de la mañana",
            "tarde": "de la tarde",
            "noche": "de la noche",
            "USD1": "dólar",
            "USD": "dólares",
            "USDc1": "centavo",
            "USDc": "centavos",
            "EUR1": "euro",
            "EUR": "euros",
            "EURc1": "céntimo",
            "EURc": "céntimos",
            "KRW1": "won",
            "KRW": "wones",
            "minus": "menos",
            "point": "coma",
        },
        "ko": {
            "man": "만",
            "eok": "억",
            "year": "년",
            "day": "일",
            "minute": "분",
            "am": "오전",
            "pm": "오후",
            "ord": "번째",
            "KRW": "원",
            "USD": "달러",
            "USDc": "센트",
            "EUR": "유로",
            "EURc": "센트",
            "minus": "마이너스",
            "point": "점",
        },
    }
    for lang, table in words.items():
        for key, text in table.items():
            t[f"v.{lang}.{key}"] = {lang: text}
    return t


FRAGMENTS = fragment_texts()


_NUMBER_KEYS = r"\d+|hundred|thousand|million|billion|cien|h\d+f?|k\d|una?|veintiuna?|mil|millon|millones|y|man|eok|" \
    r"minus|point|de"
_KIND_KEYS = {
    "number": re.compile(rf"(?:{_NUMBER_KEYS})"),
    "money": re.compile(rf"(?:{_NUMBER_KEYS}|(?:USD|EUR|KRW)c?1?|and|con)"),
    "date": re.compile(rf"(?:{_NUMBER_KEYS}|month\d+|ord(?:[1-9]|[12]\d|3[01])|oh|year|day)"),  # days 1-31
    "time": re.compile(rf"(?:{_NUMBER_KEYS}|hour\d+|oh|oclock|am|pm|manana|tarde|noche|minute)"),
    "ordinal": re.compile(rf"(?:{_NUMBER_KEYS}|ord\d*|hundredth|thousandth|millionth|billionth)"),
}


def fragments_for(lang: str, kind: str) -> list[str]:
    """The fragment names a flow speaking ``lang`` may need to say a ``kind`` (every value: it is known only
    in the call), so a flow that only says amounts does not render months and hours."""
    base = lang.split("-")[0]
    keys = _KIND_KEYS[kind]
    return [name for name, texts in FRAGMENTS.items() if base in texts and keys.fullmatch(name.split(".", 2)[2])]


# -- numbers --------------------------------------------------------------------------------------------------


def _en_int(n: int) -> list[str]:
    if n < 100:
        return [f"v.en.{n}"]
    out: list[str] = []
    for value, word in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= value:
            head, n = divmod(n, value)
            out += [*_en_int(head), f"v.en.{word}"]
    if n >= 100:
        h, n = divmod(n, 100)
        out += [f"v.en.{h}", "v.en.hundred"]
    if n:
        out.append(f"v.en.{n}")
    return out


def _es_below_1000(n: int, *, noun: str = "", feminine: bool = False) -> list[str]:
    """0 < n < 1000; ``noun``: a noun follows (uno → un / una, veintiuno → veintiún / veintiuna)."""
    out: list[str] = []
    if n == 100:
        return ["v.es.cien"]
    h, rest = divmod(n, 100)
    if h:
        out.append(f"v.es.h{h}{'f' if feminine and h > 1 else ''}")
    if rest:
        if noun and rest in (1, 21):
            out.append(
                ("v.es.una" if rest == 1 else "v.es.veintiuna")
                if feminine
                else ("v.es.un" if rest == 1 else "v.es.veintiun")
            )
        elif noun and rest % 10 == 1 and rest > 30:
            out += [f"v.es.{rest - 1}", "v.es.y", "v.es.una" if feminine else "v.es.un"]
        else:
            out.append(f"v.es.{rest}")
    return out


def _es_int(n: int, *, noun: bool = False, feminine: bool = False) -> list[str]:
    if n == 0:
        return ["v.es.0"]
    out: list[str] = []
    millions, n = divmod(n, 10**6)
    if millions:
        out += ["v.es.un", "v.es.millon"] if millions == 1 else [*_es_int(millions, noun=True), "v.es.millones"]
        if n == 0 and noun:
            out.append("v.es.de")  # "un millón de dólares"
    thousands, n = divmod(n, 1000)
    if thousands:
        out += (
            ["v.es.mil"] if thousands == 1 else [*_es_below_1000(thousands, noun="mil", feminine=feminine), "v.es.mil"]
        )
    if n:
        out += _es_below_1000(n, noun="x" if noun else "", feminine=feminine)
    return out


def _ko_below_10000(n: int) -> list[str]:
    out: list[str] = []
    k, n = divmod(n, 1000)
    h, n = divmod(n, 100)
    if k:
        out.append(f"v.ko.k{k}")
    if h:
        out.append(f"v.ko.h{h}")
    if n:
        out.append(f"v.ko.{n}")
    return out


def _ko_int(n: int) -> list[str]:
    if n == 0:
        return ["v.ko.0"]
    out: list[str] = []
    eok, n = divmod(n, 10**8)
    man, n = divmod(n, 10**4)
    if eok:
        out += [*_ko_below_10000(eok), "v.ko.eok"]
    if man:
        out += ["v.ko.man"] if man == 1 else [*_ko_below_10000(man), "v.ko.man"]  # 만, not 일만
    if n:
        out += _ko_below_10000(n)
    return out


def integer(n: int, lang: str, *, noun: bool = False, feminine: bool = False) -> list[str]:
    """A whole number's fragments; ``noun``: a noun follows (Spanish apocope)."""
    if n < 0:
        return [f"v.{lang}.minus", *integer(-n, lang, noun=noun, feminine=feminine)]
    if n > MAX_NUMBER:
        raise NotSayable(f"{n} is too large to say")
    if lang == "en":
        return _en_int(n)
    if lang == "es":
        return _es_int(n, noun=noun, feminine=feminine)
    return _ko_int(n)


def _decimal(text: str) -> Decimal:
    cleaned = re.sub(r"[\s,_]", "", str(text)).removeprefix("$").removeprefix("€").removeprefix("₩")
    try:
        d = Decimal(cleaned)
    except InvalidOperation:
        raise NotSayable(f"'{text}' is not a number") from None
    if not d.is_finite():
        raise NotSayable(f"'{text}' is not a number")
    return d


def number(text: str, lang: str) -> list[str]:
    """``1234`` or ``-3.25`` (decimals digit by digit after "point")."""
    d = _decimal(text)
    sign = d < 0
    whole = int(abs(d))
    out = [f"v.{lang}.minus"] if sign else []
    out += integer(whole, lang)
    frac = str(abs(d)).partition(".")[2].rstrip("0") if "." in str(d) else ""
    if frac:
        out += [f"v.{lang}.point", *(f"v.{lang}.{c}" for c in frac)]
    return out


def money(text: str, lang: str, currency: str | None = None) -> list[str]:
    """An amount with its currency's words, cents rounded to the unit (KRW has none)."""
    cur = currency or DEFAULT_CURRENCY.get(lang, "USD")
    if cur not in CURRENCIES:
        raise NotSayable(f"currency {cur} is not one of {', '.join(CURRENCIES)}")
    d = _decimal(text)
    negative = d < 0
    cents_total = int((abs(d) * (1 if cur == "KRW" else 100)).quantize(Decimal(1)))
    whole, cents = (cents_total, 0) if cur == "KRW" else divmod(cents_total, 100)
    out = [f"v.{lang}.minus"] if negative else []
    if lang == "ko":
        out += [*_ko_int(whole), f"v.ko.{cur}"] if whole or not cents else []
        if cents:
            out += [*_ko_int(cents), f"v.ko.{cur}c"]
        return out
    and_word = "v.en.and" if lang == "en" else "v.es.con"
    if whole or not cents:
        out += [*integer(whole, lang, noun=True), f"v.{lang}.{cur}1" if whole == 1 else f"v.{lang}.{cur}"]
    if cents:
        if whole:
            out.append(and_word)
        out += [*integer(cents, lang, noun=True), f"v.{lang}.{cur}c1" if cents == 1 else f"v.{lang}.{cur}c"]
    return out


def _year(y: int, lang: str) -> list[str]:
    if lang == "en" and 1100 <= y <= 2999 and not (2000 <= y <= 2009) and y % 100 != 0:
        hi, lo = divmod(y, 100)  # twenty twenty-six, nineteen oh five
        return [f"v.en.{hi}", *(["v.en.oh", f"v.en.{lo}"] if lo < 10 else [f"v.en.{lo}"])]
    return integer(y, lang)


def day(text: str, lang: str) -> list[str]:
    """An ISO date (``2026-12-03``, a longer ISO date-time is cut to its date)."""
    try:
        d = date.fromisoformat(str(text).strip()[:10])
    except ValueError:
        raise NotSayable(f"'{text}' is not a date (YYYY-MM-DD)") from None
    if lang == "en":
        return [f"v.en.month{d.month}", f"v.en.ord{d.day}", *_year(d.year, "en")]
    if lang == "es":
        first = ["v.es.ord1"] if d.day == 1 else [f"v.es.{d.day}"]  # "primero de diciembre"
        return [*first, "v.es.de", f"v.es.month{d.month}", "v.es.de", *integer(d.year, "es")]
    return [*integer(d.year, "ko"), "v.ko.year", f"v.ko.month{d.month}", *integer(d.day, "ko"), "v.ko.day"]


def clock(text: str, lang: str) -> list[str]:
    """``14:30`` (or a longer ISO time / date-time: its hour and minute) on a 12-hour clock."""
    raw = str(text).strip()
    raw = raw.split("T", 1)[1] if "T" in raw else raw
    try:
        t = time.fromisoformat(raw[:5])
    except ValueError:
        raise NotSayable(f"'{text}' is not a time (HH:MM)") from None
    h12 = t.hour % 12 or 12
    if lang == "en":
        if t.minute == 0:
            mins = ["v.en.oclock"]
        elif t.minute < 10:
            mins = ["v.en.oh", f"v.en.{t.minute}"]
        else:
            mins = [f"v.en.{t.minute}"]
        return [f"v.en.{h12}", *mins, "v.en.am" if t.hour < 12 else "v.en.pm"]
    if lang == "es":
        part = "v.es.manana" if t.hour < 12 else ("v.es.tarde" if t.hour < 20 else "v.es.noche")
        return [f"v.es.hour{h12}", *(["v.es.y", f"v.es.{t.minute}"] if t.minute else []), part]
    return [
        "v.ko.am" if t.hour < 12 else "v.ko.pm",
        f"v.ko.hour{h12}",
        *([f"v.ko.{t.minute}", "v.ko.minute"] if t.minute else []),
    ]


def ordinal(text: str, lang: str) -> list[str]:
    d = _decimal(text)
    if d != d.to_integral_value() or d < 1:
        raise NotSayable(f"'{text}' is not a whole number from 1 up")
    n = int(d)
    if lang == "en":
        if n > MAX_NUMBER:
            raise NotSayable(f"{n} is too large to say")
        if n % 100:
            return [*(_en_int(n - n % 100) if n >= 100 else []), f"v.en.ord{n % 100}"]
        *head, scale = _en_int(n)  # ends in hundred / thousand / million / billion: say it as an ordinal
        return [*head, f"{scale}th"]
    if lang == "es":
        return [f"v.es.ord{n}"] if n <= 10 else integer(n, "es")
    return [f"v.ko.ord{n}"] if n <= 10 else [*integer(n, "ko"), "v.ko.ord"]


def words(kind: str, value: object, lang: str, *, currency: str | None = None) -> list[str]:
    """The fragments that say ``value`` as ``kind`` in ``lang`` (NotSayable with the reason)."""
    base = lang.split("-")[0]
    if base not in LANGUAGES:
        raise NotSayable(f"values are not spoken in '{lang}' (only {', '.join(LANGUAGES)})")
    text = str(value)
    if kind == "number":
        return number(text, base)
    if kind == "money":
        return money(text, base, currency)
    if kind == "date":
        return day(text, base)
    if kind == "time":
        return clock(text, base)
    if kind == "ordinal":
        return ordinal(text, base)
    raise NotSayable(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
