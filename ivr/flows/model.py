"""The flow language as frozen dataclasses: what the loader builds and the engine runs.

A FlowSet is immutable once built; reload builds a new one and swaps one reference, so a call in progress
keeps the version it started on.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ivr.flows.callback_prompts import MAX_SPOKEN_MINUTES

if TYPE_CHECKING:
    from ivr.flows.audio import PromptLibrary
    from ivr.flows.hours import Schedule


@dataclass(frozen=True, order=True)
class Pos:
    file: str
    line: int
    column: int


# ---- prompts -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptVariant:
    """One language of a prompt: text for espeak-ng, or an audio file for sox."""

    kind: Literal["say", "file"]
    source: str  # the text, or the file's absolute path
    lang: str
    voice: str


@dataclass(frozen=True)
class PromptDef:
    name: str
    variants: dict[str, PromptVariant]  # lang → variant
    pos: Pos


@dataclass(frozen=True)
class PromptRef:
    """Play the named prompt (flow prompt or a built-in such as ``digit_5``)."""

    name: str
    pos: Pos


@dataclass(frozen=True)
class DigitsRef:
    """Read a variable back digit by digit, from pre-rendered digit prompts (no TTS during a call)."""

    var: str
    pos: Pos


@dataclass(frozen=True)
class ValueRef:
    """Say a variable as a number, an amount of money, a date, a time or an ordinal, in the caller's language,
    from pre-rendered fragments (ivr/flows/spoken.py)."""

    kind: str  # number, money, date, time, ordinal
    var: str
    pos: Pos
    currency: str | None = None


PromptItem = PromptRef | DigitsRef | ValueRef
Prompts = tuple[PromptItem, ...]


# ---- conditions ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Test:
    var: str
    op: str  # equals not_equals in matches starts_with lt le gt ge is_set
    value: object
    pos: Pos


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class NotOf:
    item: Condition


Condition = Test | AllOf | AnyOf | NotOf


# ---- actions -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    prompt: Prompts
    barge_in: bool = False


@dataclass(frozen=True)
class SpeechSettings:
    """A menu's or collect's own speech settings (``speech: {...}``); None means the default for the kind
    of turn (keywords or digits) or, for ``verify``, the config's ``speech.verify``. Seconds throughout."""

    end_of_speech: float | None = None
    """Silence after the words that ends the answer (default 0.3 s for keywords, 0.8 s for digits: callers
    pause between groups of digits)."""
    no_input: float | None = None
    """How long after the prompt speech may still start (default: the node's ``timeout``). Once speech
    has started it is heard to its end, even past the timeout."""
    max_length: float | None = None
    """Longest answer: speech still going after this is cut there and recognised as it is (default 10 s
    for keywords, 15 s for digits)."""
    barge_in_min: float | None = None
    """Speech needed before it interrupts the prompt and counts as started (default 0.12 s): shorter
    clicks and bursts of line noise never cut a prompt."""
    min_margin: float | None = None
    """N-best score margin a keyword must win by (default 0.3; menus only, see ivr.speech.rejection)."""
    max_free_gap: float | None = None
    """With ``verify``: most the free-form pass may beat the keyword per 20 ms frame (default 0.15)."""
    verify: bool | None = None
    """Run the free-form second opinion on this turn (default: the config's ``speech.verify``)."""


@dataclass(frozen=True)
class MenuOption:
    key: str | None
    target: str
    keywords: tuple[str, ...]
    pos: Pos


@dataclass(frozen=True)
class Menu:
    prompt: Prompts
    reprompt: Prompts
    options: tuple[MenuOption, ...]
    timeout: float = 5.0
    inter_digit_timeout: float = 2.0
    max_no_input: int = 3
    max_no_match: int = 3
    no_input: Prompts = ()
    no_match: Prompts = ()
    barge_in: bool = True
    speech: bool = False
    min_confidence: float = 0.5
    speech_settings: SpeechSettings = field(default_factory=SpeechSettings)
    global_keys: tuple[tuple[str, str], ...] = ()
    """The flow's ``global_keys`` this menu answers (its own options on a key win; ``global_keys: false``
    answers none): key → a node of the flow, or ``back`` / ``repeat``."""

    @property
    def key_length(self) -> int:
        return max((len(o.key) for o in self.options if o.key), default=1)


@dataclass(frozen=True)
class Confirm:
    before: Prompts
    after: Prompts
    yes: str = "1"
    no: str = "2"


@dataclass(frozen=True)
class Collect:
    prompt: Prompts
    into: str
    min_digits: int = 1
    max_digits: int = 20
    terminator: str = "#"
    pattern: str | None = None
    timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    max_attempts: int = 3
    no_input: Prompts = ()
    invalid: Prompts = ()
    barge_in: bool = True
    speech: bool = False
    confirm: Confirm | None = None
    speech_settings: SpeechSettings = field(default_factory=SpeechSettings)
    sensitive: bool = False
    """The entry (a PIN, a card number) is never written anywhere in clear: events, the call's record, logs and
    the simulator's transcript show it masked; the flow reads the real value during the call."""


@dataclass(frozen=True)
class Branch:
    cases: tuple[tuple[Condition, str], ...]


@dataclass(frozen=True)
class Hours:
    schedule: str
    open: str
    closed: str
    holiday: str | None


@dataclass(frozen=True)
class SetVars:
    values: tuple[tuple[str, object], ...]
    sensitive: frozenset[str] = frozenset()
    """Names set here as sensitive (``name: {value: ..., sensitive: true}``): masked wherever recorded."""


@dataclass(frozen=True)
class Goto:
    target: str


@dataclass(frozen=True)
class Record:
    """Record a message after the tone: kept under the state folder, its id in ``into``."""

    prompt: Prompts
    into: str
    max_seconds: float = 60.0
    end_keys: str = "#"
    silence_seconds: float = 5.0
    beep: bool = True


@dataclass(frozen=True)
class Split:
    """An experiment (A/B test): each caller is sent to one variant, by a stable hash of the experiment and
    their caller ID (the same caller hears the same variant every time), or of the call when the caller ID
    is withheld. ``variants``: (name, share in percent, target), shares adding up to 100."""

    experiment: str
    variants: tuple[tuple[str, float, str], ...]

    @property
    def variable(self) -> str:
        """The call variable that holds the caller's variant: ``variant_`` and the name (``-``/``.`` as ``_``)."""
        return "variant_" + self.experiment.replace("-", "_").replace(".", "_")

    def choose(self, key: str) -> tuple[str, str]:
        """(variant, target) for ``key`` (the caller's digits, or the call's id): the point of a SHA-256 of
        experiment and key in [0, 100) falls in one variant's share. Stable across calls, restarts and boxes;
        another experiment name shuffles independently."""
        digest = hashlib.sha256(f"{self.experiment}\0{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * 100
        edge = 0.0
        for name, share, target in self.variants:
            edge += share
            if point < edge:
                return name, target
        name, _, target = self.variants[-1]  # rounding at the very top
        return name, target


@dataclass(frozen=True)
class CallFlow:
    flow: str


@dataclass(frozen=True)
class Return:
    pass


@dataclass(frozen=True)
class Transfer:
    extension: str | None
    queue: str | None
    prompt: Prompts = ()
    data: tuple[str, ...] = ()
    """Variables handed to the PBX with the caller (``data: [account]``): SIP X-IVR-Var-* headers, AMI
    IVR_VAR_* channel variables (docs/asterisk/README.md, "Data to the agent")."""


@dataclass(frozen=True)
class Http:
    """A data look-up (``http:``): a request built from variables, response fields mapped into variables."""

    method: str
    url: str
    """A template: ``${var}`` values are URL-encoded when filled in."""
    lookup: str | None = None
    """The named back end of the box config (``lookups:``); its base URL, secret headers and timeout."""
    body: object = None
    """A JSON body template (strings may hold ``${var}``), or None."""
    timeout: float | None = None
    into: tuple[tuple[str, str, tuple[str | int, ...]], ...] = ()
    """(variable, path as written, parsed path) for each response field kept."""
    on_timeout: str | None = None
    """Where a look-up that ran out of time goes (default: the node's failure target)."""
    comfort: Prompts = ()
    comfort_after: float = 1.0
    """Seconds of waiting after which ``comfort`` is played (once), so the caller knows the line is alive."""
    sensitive: bool = False
    """``sensitive: true``: the variables set from the answer are sensitive (masked wherever recorded)."""


@dataclass(frozen=True)
class CallbackPrompts:
    """What a caller hears during a callback offer (``callback: {prompts: {...}}``); each defaults to the
    built-in prompt ``callback_<field>`` (ivr/flows/callback_prompts.py)."""

    wait_about: Prompts
    """Before the low minutes: "Your wait is about" (then "5", wait_to, "8", wait_minutes)."""
    wait_to: Prompts
    wait_minutes: Prompts
    wait_long: Prompts
    """Instead of the range when its high end runs past an hour: "about an hour or more"."""
    offer: Prompts
    """"… press 1 to be called back, or stay on the line."""
    confirm_number: Prompts
    """Before the caller ID (or the entered number) is read back: "We will call you at"."""
    confirm_choice: Prompts
    """After the caller ID: press 1 (and, with allow_other_number, 2 for another number)."""
    enter_number: Prompts
    entered_choice: Prompts
    """After an entered number is read back: press 1, or 2 to enter it again."""
    refused_short: Prompts
    """Emergency numbers and short codes."""
    refused_invalid: Prompts
    refused_premium: Prompts
    """Premium-rate and other refused number types."""
    refused_international: Prompts
    refused_denied: Prompts
    """Deny list, or not on the allow list."""
    refused_caps: Prompts
    """Too many requests for the number today, or for the site this hour."""
    no_number: Prompts
    """No usable number: the caller stays in the queue."""
    confirmed: Prompts
    """Played only after the request is committed."""
    unavailable: Prompts
    """A caller who asked for a callback (``offer: always``) when none can be made now, e.g. outside the
    calling window: they go back to the queue."""


@dataclass(frozen=True)
class SchedulePrompts:
    """``callback: {schedule: true}``: what a caller hears when choosing a time; each defaults to the
    built-in ``callback_<field>``. A slot is said as ``slot_press`` digit ``slot_for`` (``slot_today`` |
    ``slot_tomorrow``) ``slot_at`` hour (``slot_oclock`` | ``slot_thirty``) (``slot_am`` | ``slot_pm``)."""

    schedule_choice: Prompts
    """"As soon as possible, press 1. To choose a time, press 2." (after the number is confirmed)."""
    slot_press: Prompts
    slot_for: Prompts
    slot_today: Prompts
    slot_tomorrow: Prompts
    slot_at: Prompts
    slot_oclock: Prompts
    slot_thirty: Prompts
    slot_am: Prompts
    slot_pm: Prompts
    scheduled: Prompts
    """"Your callback is booked for" (then the slot), played only after the request is committed."""
    scheduled_end: Prompts


#: policy refusal reason -> the CallbackPrompts field that explains it
REFUSAL_PROMPTS = {
    "emergency": "refused_short", "short-code": "refused_short", "invalid": "refused_invalid",
    "premium-rate": "refused_premium", "refused-type": "refused_premium", "international": "refused_international",
    "denied": "refused_denied", "not-allowed": "refused_denied", "number-cap": "refused_caps",
    "site-cap": "refused_caps",
}

SPOKEN_MINUTES = MAX_SPOKEN_MINUTES
"""Minutes are read from ``number_0`` … ``number_60``; a longer wait is ``wait_long``."""


@dataclass(frozen=True)
class QueueWithCallback:
    """Hand the caller to an agents' queue, first offering a callback when the wait is long (virtual hold)."""

    name: str
    """The queue; may hold ``${variables}`` (``${sip_x_ivr_queue}``: the PBX queue a caller left by key)."""
    prompt: Prompts = ()
    offer_callback: bool = True
    offer_always: bool = False
    """``offer: always``: the caller already asked (pressed 1 in the PBX queue): no wait estimate or
    threshold gate, no "press 1" offer; straight to the number. The calling window still decides."""
    arrival: str | None = None
    """When the caller joined the line (epoch seconds or ISO 8601, may hold ``${variables}``); the callback
    keeps this place. None, or a value that does not parse: the moment the node runs."""
    min_wait_seconds: float | None = None
    """Offer only when the estimated wait is at least this; None: the site's threshold."""
    allow_other_number: bool = True
    """The caller may give another number than the caller ID (withheld caller IDs need it)."""
    timeout: float = 6.0
    """Seconds to wait for the caller's key after an offer or confirmation prompt."""
    data: tuple[str, ...] = ()
    """Variables handed to the PBX with the caller (as Transfer.data)."""
    callback_prompts: CallbackPrompts | None = None
    """None when no offer is made (nothing extra to render)."""
    schedule_prompts: SchedulePrompts | None = None
    """``callback: {schedule: true}`` (and an offer): the caller may choose a time; None: as soon as possible."""
    hours: str | None = None
    """``callback: {hours: NAME}``: callbacks (as soon as possible or a chosen slot) only while this hours
    schedule is open, holidays, overrides and the emergency switch included; None: the calling windows only."""

    @property
    def spoken_builtins(self) -> tuple[str, ...]:
        """Prompts the offer assembles while running: the minutes, the number's digits, group pauses."""
        if not self.offer_callback:
            return ()
        return (*(f"number_{n}" for n in range(SPOKEN_MINUTES + 1)), *(f"digit_{d}" for d in "0123456789"),
                "pause")


@dataclass(frozen=True)
class CallbackCancel:
    """The caller cancels their pending callback(s), found by caller ID (optionally for one queue)."""

    queue: str | None
    ask: Prompts
    """"You have a callback booked. To cancel it, press 1 …"; empty: cancel without asking."""
    done: Prompts
    kept: Prompts
    none: Prompts
    timeout: float = 6.0


@dataclass(frozen=True)
class Survey:
    prompt: Prompts
    scale: Literal["csat", "nps"]
    into: str
    timeout: float = 6.0
    max_attempts: int = 2
    no_input: Prompts = ()
    invalid: Prompts = ()
    thanks: Prompts = ()

    @property
    def low(self) -> int:
        return 1 if self.scale == "csat" else 0

    @property
    def high(self) -> int:
        return 5 if self.scale == "csat" else 10


@dataclass(frozen=True)
class Hangup:
    prompt: Prompts = ()


Action = (
    Play | Menu | Collect | Branch | Hours | SetVars | Goto | CallFlow | Return | Transfer
    | QueueWithCallback | Survey | Hangup | CallbackCancel | Split | Record | Http
)

#: ``global_keys`` values that are not nodes: back to the menu before this one (in this flow), say it again
GLOBAL_ACTIONS = ("back", "repeat")

#: Actions after which a call ends or leaves this flow; the node needs no ``next``.
TERMINAL = (Hangup, Transfer, QueueWithCallback, Return)


@dataclass(frozen=True)
class Node:
    name: str
    kind: str  # the action key as written: play, menu, ...
    action: Action
    next: str | None
    failure: str | None
    pos: Pos
    description: str = ""
    resolved: bool = False
    """``resolved: true``: completing this node means the caller's task was done in the IVR (self-service),
    recorded as ``call.resolved`` and on the call's record, so containment is counted, not guessed."""

    def edges(self) -> list[tuple[str, str]]:
        """(label, target node) for every way out of this node, for checks and diagrams."""
        a = self.action
        out: list[tuple[str, str]] = []
        if isinstance(a, Menu):
            for o in a.options:
                label = " / ".join(x for x in (o.key or "", *o.keywords[:2]) if x)
                out.append((label, o.target))
            out.extend((f"{key} (every menu)", target) for key, target in a.global_keys
                       if target not in GLOBAL_ACTIONS)
        elif isinstance(a, Branch):
            out.extend((f"if #{i + 1}", t) for i, (_, t) in enumerate(a.cases))
        elif isinstance(a, Hours):
            out += [("open", a.open), ("closed", a.closed)]
            if a.holiday:
                out.append(("holiday", a.holiday))
        elif isinstance(a, Goto):
            out.append(("", a.target))
        elif isinstance(a, Http) and a.on_timeout:
            out.append(("timeout", a.on_timeout))
        elif isinstance(a, Split):
            out.extend((f"{name} {share:g}%", target) for name, share, target in a.variants)
        if self.next:
            out.append(("else" if isinstance(a, Branch) else "next", self.next))
        if self.failure:
            out.append(("failure", self.failure))
        return out


@dataclass(frozen=True)
class Flow:
    name: str
    file: str
    numbers: tuple[str, ...]
    default: bool
    languages: tuple[str, ...]
    timezone: str
    variables: dict[str, object]
    start: str
    prompts: dict[str, PromptDef]
    nodes: dict[str, Node]
    pos: Pos

    @property
    def language(self) -> str:
        return self.languages[0]


@dataclass(frozen=True)
class FlowSet:
    """Every flow and schedule of one version, with its prompts rendered and ready to send."""

    flows: dict[str, Flow]
    schedules: dict[str, Schedule]
    version: str
    files: tuple[str, ...]
    library: PromptLibrary | None = None
    notes: tuple[str, ...] = field(default=())

    def route(self, dialed: str) -> Flow:
        """The flow for a dialed number: exact match, then the most specific pattern, then the default."""
        pattern_hits: list[tuple[int, Flow]] = []
        for flow in self.flows.values():
            for number in flow.numbers:
                if number == dialed:
                    return flow
                if is_pattern(number) and number_matches(number, dialed):
                    fixed = sum(1 for c in number if c not in "*X")
                    pattern_hits.append((fixed, flow))
        if pattern_hits:
            return max(pattern_hits, key=lambda h: h[0])[1]
        return next(f for f in self.flows.values() if f.default)


def is_pattern(number: str) -> bool:
    return "*" in number or "X" in number


def number_matches(pattern: str, dialed: str) -> bool:
    """``X`` is one digit, ``*`` any run (Asterisk-like, kept small on purpose)."""
    glob = pattern.replace("X", "[0-9]")
    return fnmatch.fnmatchcase(dialed, glob)


QUEUE_VAR_PREFIX = "queue."
QUEUE_FACTS = ("wait", "agents_available", "callers_waiting")
"""Live queue state a condition may test: ``{var: queue.support.wait, gt: 300}`` (seconds, the wait a caller
joining now would have), ``queue.NAME.agents_available``, ``queue.NAME.callers_waiting``. Unknown (no
estimate, the PBX link down) means not set: a comparison is then false and ``is_set: false`` is true."""


def queue_fact(name: str) -> tuple[str, str] | None:
    """``queue.support.wait`` → (``support``, ``wait``); None for any other variable name."""
    if not name.startswith(QUEUE_VAR_PREFIX):
        return None
    queue, _, fact = name[len(QUEUE_VAR_PREFIX):].rpartition(".")
    return (queue, fact) if queue and fact in QUEUE_FACTS else None
