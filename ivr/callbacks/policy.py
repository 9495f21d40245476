"""Callback policy, pure: whether to offer, which numbers may be called, when, and when to try again.

Every function takes "now" (an aware UTC ``datetime``). Numbers go through libphonenumber (``phonenumbers``):
E.164 for the site's region, refusals for toll fraud (premium rate, international unless allowed, deny
patterns), emergency numbers and short codes always refused. Calling windows are wall-clock times in the
callee's zone(s), turned into UTC instants per local date with ``zoneinfo``, so a DST change moves the
instant and not the local hour (ANCHORS.md pain 7). A number that maps to several zones is called only in
the overlap of all their windows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType, shortnumberinfo
from phonenumbers import timezone as pn_timezone

from ivr.callbacks.ewt import EwtEstimate

# -- numbers ---------------------------------------------------------------------------------------------

_REFUSED_TYPES_DEFAULT = frozenset({
    PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.PAGER, PhoneNumberType.VOICEMAIL,
    PhoneNumberType.UAN,
})


@dataclass(frozen=True)
class NumberRules:
    region: str = "US"
    """The site's ISO 3166 region: numbers without a country code are read as dialled there."""
    allow_international: bool = False
    allowed_countries: frozenset[int] = frozenset()
    """Country calling codes allowed besides the site's own when ``allow_international`` is off."""
    deny_patterns: tuple[str, ...] = ()
    """Regular expressions on the E.164 text (e.g. ``r"^\\+1900"``); a match refuses the number."""
    allow_patterns: tuple[str, ...] = ()
    """If any: only numbers matching one of them are accepted (checked after every refusal rule)."""
    refused_types: frozenset[int] = _REFUSED_TYPES_DEFAULT
    """libphonenumber number types refused (premium rate, shared cost, pager, voicemail, UAN by default)."""


@dataclass(frozen=True)
class NumberCheck:
    """The verdict on a number: ``e164`` and ``zones`` when accepted, else ``reason`` for the prompt."""

    ok: bool
    e164: str = ""
    reason: str = ""  # invalid, emergency, short-code, premium-rate, refused-type, international, denied,
    #                   not-allowed
    zones: tuple[str, ...] = ()


def _digits(raw: str) -> str:
    return "".join(ch for ch in raw if ch.isdigit() or ch == "+")


def check_number(raw: str, rules: NumberRules, site_zone: str) -> NumberCheck:
    """Normalise ``raw`` (caller ID or keyed digits) to E.164 and apply the refusal rules, in this order:
    emergency, short code, invalid, refused types, international, deny list, allow list."""
    digits = _digits(raw)
    plain = digits.lstrip("+")
    if plain and shortnumberinfo.is_emergency_number(plain, rules.region):
        return NumberCheck(False, reason="emergency")
    try:
        num = phonenumbers.parse(digits, rules.region)
    except phonenumbers.NumberParseException:
        return NumberCheck(False, reason="invalid")
    if shortnumberinfo.connects_to_emergency_number(plain, rules.region) and not digits.startswith("+"):
        return NumberCheck(False, reason="emergency")
    if not phonenumbers.is_valid_number(num):
        if not digits.startswith("+") and shortnumberinfo.is_possible_short_number_for_region(num, rules.region):
            return NumberCheck(False, reason="short-code")
        return NumberCheck(False, reason="invalid")
    e164 = phonenumbers.format_number(num, PhoneNumberFormat.E164)
    kind = phonenumbers.number_type(num)
    if kind == PhoneNumberType.PREMIUM_RATE and kind in rules.refused_types:
        return NumberCheck(False, e164, "premium-rate")
    if kind in rules.refused_types:
        return NumberCheck(False, e164, "refused-type")
    home = phonenumbers.country_code_for_region(rules.region)
    if (num.country_code != home and not rules.allow_international
            and num.country_code not in rules.allowed_countries):
        return NumberCheck(False, e164, "international")
    if any(re.search(p, e164) for p in rules.deny_patterns):
        return NumberCheck(False, e164, "denied")
    if rules.allow_patterns and not any(re.search(p, e164) for p in rules.allow_patterns):
        return NumberCheck(False, e164, "not-allowed")
    return NumberCheck(True, e164, zones=callee_zones(num, site_zone))


def callee_zones(num: phonenumbers.PhoneNumber | str, site_zone: str) -> tuple[str, ...]:
    """The IANA zones libphonenumber gives the number (geographic prefix), else the site's zone."""
    if isinstance(num, str):
        num = phonenumbers.parse(num, None)
    zones = []
    for z in pn_timezone.time_zones_for_number(num):
        try:
            ZoneInfo(z)
        except (ZoneInfoNotFoundError, ValueError):
            continue  # "Etc/Unknown" and names tzdata lacks
        zones.append(z)
    return tuple(zones) or (site_zone,)


def readback_groups(e164: str, region: str) -> list[str]:
    """The number as the caller would write it, in digit groups: national format for the site's own country
    (with its trunk prefix), international (with the country code) otherwise."""
    num = phonenumbers.parse(e164, None)
    home = phonenumbers.country_code_for_region(region)
    fmt = PhoneNumberFormat.NATIONAL if num.country_code == home else PhoneNumberFormat.INTERNATIONAL
    text = phonenumbers.format_number(num, fmt)
    return [g for g in re.split(r"\D+", text) if g]


def readback_text(e164: str, region: str) -> str:
    """``"5 5 5, 1 2 3, 4 5 6 7"``: digits spoken one by one, a pause (comma) between groups."""
    return ", ".join(" ".join(g) for g in readback_groups(e164, region))


# -- calling windows ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CallingWindow:
    """Daily wall-clock window ``[start, end)`` in ``zone``; ``zone=None`` means "in each callee zone"."""

    start: time = time(8, 0)
    end: time = time(21, 0)
    zone: str | None = None
    weekdays: frozenset[int] = frozenset(range(7))  # Monday = 0


LEGAL_DEFAULT = CallingWindow()

Interval = tuple[datetime, datetime]


def _local_instant(d: date, t: time, tz: ZoneInfo) -> datetime:
    # A wall time in a spring-forward gap does not exist: fold=0 maps it with the offset before the change,
    # which lands just after the gap (02:30 -> 03:30), the first real instant at or after it.
    return datetime.combine(d, t, tzinfo=tz).astimezone(UTC)


def _window_intervals(w: CallingWindow, zone: str, start: datetime, days: int) -> list[Interval]:
    tz = ZoneInfo(zone)
    first = start.astimezone(tz).date() - timedelta(days=1)
    out = []
    for i in range(days + 2):
        d = first + timedelta(days=i)
        if d.weekday() not in w.weekdays:
            continue
        a = _local_instant(d, w.start, tz)
        end_day = d if w.end > w.start else d + timedelta(days=1)
        b = _local_instant(end_day, w.end, tz)
        if b > a:
            out.append((a, b))
    return _merge(out)


def _merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted intervals with the touching and overlapping ones joined: a window that is open around the clock
    (00:00–00:00) is one stretch, not days that end at midnight, so a callback due a few minutes before
    midnight is not "closing before it is dialled" (nor one at the end of an agents' shift that the next
    shift continues)."""
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def open_intervals(now: datetime, zones: Sequence[str], windows: Sequence[CallingWindow] = (LEGAL_DEFAULT,),
                   days: int = 8, *, hours: Sequence[Interval] | None = None) -> list[Interval]:
    """UTC intervals from about ``now`` on where every window holds: windows without a zone apply in each of
    the callee's ``zones``; windows with one (the site's hours) in that zone. ``hours``: the agents' open
    intervals (a flow's hours schedule with its holidays and overrides, sorted), which must hold too."""
    result: list[Interval] | None = None
    for w in windows:
        for zone in ([w.zone] if w.zone else list(zones)):
            ivs = _window_intervals(w, zone, now, days)
            result = ivs if result is None else _intersect(result, ivs)
    if hours is not None:
        result = _merge(list(hours)) if result is None else _intersect(result, _merge(list(hours)))
    return [iv for iv in (result or []) if iv[1] > now]


def window_open(now: datetime, zones: Sequence[str], windows: Sequence[CallingWindow] = (LEGAL_DEFAULT,)) -> bool:
    ivs = open_intervals(now, zones, windows, days=1)
    return bool(ivs) and ivs[0][0] <= now < ivs[0][1]


def next_open(at: datetime, zones: Sequence[str], windows: Sequence[CallingWindow] = (LEGAL_DEFAULT,)
              ) -> datetime | None:
    """``at`` itself if the windows are open then, else the next opening within a week, else None."""
    for a, b in open_intervals(at, zones, windows):
        if a <= at < b:
            return at
        if a > at:
            return a
    return None


# -- scheduled slots ----------------------------------------------------------------------------------------

SLOT_STEP = timedelta(minutes=15)
"""Candidates are tried every 15 min of UTC, so :00 and :30 are found in zones offset by 30 or 45 minutes."""


def next_slots(earliest: datetime, until: datetime, zones: Sequence[str], say_zone: str,
               windows: Sequence[CallingWindow] = (LEGAL_DEFAULT,), *, margin: timedelta = timedelta(0),
               count: int = 3, hours: Sequence[Interval] | None = None) -> list[datetime]:
    """Up to ``count`` times a caller may choose for their callback ("press 2 to choose a time"): on the hour
    or half hour of ``say_zone``'s clock (the zone they are told the time in), after ``earliest`` and not
    after ``until``, with every calling window (each callee zone's and the site's) open from the slot for
    ``margin`` more (and the agents' ``hours``, when given). UTC instants; DST-correct because each candidate
    instant is read on the local clock."""
    tz = ZoneInfo(say_zone)
    step = int(SLOT_STEP.total_seconds())
    t = datetime.fromtimestamp(-(-int(earliest.timestamp()) // step) * step, UTC)
    if t <= earliest:
        t += SLOT_STEP
    days = max(1, -(-int((until - earliest).total_seconds()) // 86400))
    ivs = open_intervals(earliest, zones, windows, days=days, hours=hours)
    out: list[datetime] = []
    while t <= until and len(out) < count:  # bounded: (until - earliest) / 15 min candidates
        local = t.astimezone(tz)
        if local.minute in (0, 30) and any(a <= t < b and t + margin <= b for a, b in ivs):
            out.append(t)
        t += SLOT_STEP
    return out


def end_of_tomorrow(now: datetime, zone: str) -> datetime:
    """Local midnight at the end of tomorrow in ``zone`` (slots are said as "today" or "tomorrow")."""
    tz = ZoneInfo(zone)
    day = now.astimezone(tz).date() + timedelta(days=2)
    return datetime.combine(day, time(0, 0), tzinfo=tz).astimezone(UTC)


# -- offer --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OfferRules:
    threshold: float = 300.0
    """Offer a callback only when the estimated wait (s) is at least this."""
    dial_margin: float = 600.0
    """The window must stay open this long (s) after the projected dial time, for ringing and retries."""


@dataclass(frozen=True)
class OfferDecision:
    offer: bool
    reason: str  # ewt-unknown, below-threshold, window-closed, closes-before-dial, ok
    dial_at: datetime | None = None


def decide_offer(ewt: EwtEstimate, now: datetime, zones: Sequence[str], rules: OfferRules,
                 windows: Sequence[CallingWindow] = (LEGAL_DEFAULT,), *,
                 hours: Sequence[Interval] | None = None) -> OfferDecision:
    """Offer when the wait is long enough and the callback can be served today: the calling window (in the
    caller-ID's zones, else the site's) is open from the projected dial time (now + the range's high end)
    for ``dial_margin`` more, and so are the agents' ``hours`` when the queue names a schedule."""
    if ewt.seconds is None or ewt.high is None:
        return OfferDecision(False, "ewt-unknown")
    if ewt.seconds < rules.threshold:
        return OfferDecision(False, "below-threshold")
    dial_at = now + timedelta(seconds=ewt.high)
    for a, b in open_intervals(now, zones, windows, days=1, hours=hours):
        if a <= dial_at and dial_at + timedelta(seconds=rules.dial_margin) <= b:
            return OfferDecision(True, "ok", dial_at)
        if a <= dial_at < b:
            return OfferDecision(False, "closes-before-dial", dial_at)
    return OfferDecision(False, "window-closed", dial_at)


# -- caps ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CapRules:
    per_number_per_day: int = 3
    """Requests taken per number in 24 h (the offer refuses more)."""
    per_site_per_hour: int = 60
    dials_per_number_per_day: int = 10
    """Calls placed to one number in 24 h, every attempt of every request counted (interrupted ones too: the
    phone may have rung): past it the dialer holds the number's requests (``number-cap``)."""


def check_caps(requests_for_number_24h: int, requests_for_site_1h: int, rules: CapRules) -> str | None:
    """The refusal reason if a new request would pass a cap (counts are of requests already taken)."""
    if requests_for_number_24h >= rules.per_number_per_day:
        return "number-cap"
    if requests_for_site_1h >= rules.per_site_per_hour:
        return "site-cap"
    return None


# -- retries ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryRules:
    intervals: tuple[float, ...] = (300.0, 900.0, 1800.0)
    """Seconds after attempt n (1-based) before attempt n+1; the last repeats."""
    max_attempts: int = 3
    expiry: float = 8 * 3600.0
    """A request older than this (from its original arrival) is not dialled again."""
    after_interruption: float = 60.0
    """Seconds before redialling an attempt the box or its PBX link cut (a crash, an outage); doubles with each
    interruption of the same request, up to the longest retry interval, so a crash loop does not ring the same
    few customers at every restart while the rest wait."""
    max_interruptions: int = 20
    """Interruptions are the box's failures, not the customer's: they spend none of ``max_attempts``, but a
    request interrupted this often expires (a crash loop must not dial forever)."""


RETRYABLE = frozenset({"no-answer", "busy", "failed", "interrupted", "not-confirmed"})


@dataclass(frozen=True)
class RetryDecision:
    state: str  # "retry" or "expired"
    at: datetime | None = None
    reason: str = ""


def next_attempt(outcome: str, attempts: int, arrival: datetime, now: datetime, zones: Sequence[str],
                 rules: RetryRules, windows: Sequence[CallingWindow] = (LEGAL_DEFAULT,)) -> RetryDecision:
    """After an attempt that did not end the callback: when to try again, or expire it.

    ``outcome``: no-answer, busy, failed (trunk), interrupted (found in flight after a crash), not-confirmed
    (answered but nobody pressed 1: a machine or a busy person), invalid (never retried)."""
    if outcome not in RETRYABLE:
        return RetryDecision("expired", reason=f"outcome {outcome}")
    if attempts >= rules.max_attempts:
        return RetryDecision("expired", reason="max attempts")
    gap = rules.intervals[min(max(attempts, 1), len(rules.intervals)) - 1] if rules.intervals else 0.0
    at = next_open(now + timedelta(seconds=gap), zones, windows)
    deadline = arrival + timedelta(seconds=rules.expiry)
    if at is None or at > deadline:
        return RetryDecision("expired", reason="expiry")
    return RetryDecision("retry", at)


def after_interruption(interruptions: int, arrival: datetime, now: datetime, zones: Sequence[str],
                       rules: RetryRules, windows: Sequence[CallingWindow] = (LEGAL_DEFAULT,)) -> RetryDecision:
    """After the ``interruptions``-th attempt of a request cut by the box or its PBX link (not the customer):
    back off ``after_interruption`` doubling per interruption (capped at the longest retry interval), never
    charging ``max_attempts``; expire after ``max_interruptions`` or past the expiry."""
    if interruptions >= rules.max_interruptions:
        return RetryDecision("expired", reason=f"interrupted {interruptions} times (box or PBX link failures)")
    cap = max(rules.intervals, default=rules.after_interruption)
    gap = min(max(cap, rules.after_interruption), rules.after_interruption * 2 ** max(interruptions - 1, 0))
    at = next_open(now + timedelta(seconds=gap), zones, windows)
    if at is None or at > arrival + timedelta(seconds=rules.expiry):
        return RetryDecision("expired", reason="expiry")
    return RetryDecision("retry", at)


@dataclass(frozen=True)
class CallbackPolicy:
    """Everything a site configures about callbacks, in one place for the flow node and the dialer."""

    site_zone: str = "UTC"
    numbers: NumberRules = field(default_factory=NumberRules)
    offer: OfferRules = field(default_factory=OfferRules)
    caps: CapRules = field(default_factory=CapRules)
    retry: RetryRules = field(default_factory=RetryRules)
    windows: tuple[CallingWindow, ...] = (LEGAL_DEFAULT,)
