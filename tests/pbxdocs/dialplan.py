"""A small reader of Asterisk ``extensions.conf`` text, for tests that hold docs/asterisk to what the code needs.

It knows what those tests ask: contexts, ``exten =>`` / ``same =>`` lines (priorities, labels, the
application and its arguments), ``include =>``, Asterisk's extension-pattern rules, ``${VAR}`` /
``${VAR:offset:length}`` substitution, variables set with ``Set()`` (also inside ``ExecIf``), prompts played
with ``Playback``/``Background``/``Read``, headers added or read, and UserEvents with their fields. It is not
a dialplan interpreter.

Pattern rules follow Asterisk's ``_extension_match_core`` (main/pbx.c): a leading ``_`` makes a pattern;
``X`` = 0-9, ``Z`` = 1-9, ``N`` = 2-9 (either case), ``[...]`` a set with ``a-b`` ranges, ``.`` one or more
further characters, ``!`` zero or more; ``-`` is ignored; every other character matches itself. An
extension without ``_`` matches only itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Context", "Dialplan", "Step", "parse", "pattern_matches", "split_args", "substitute"]


@dataclass(frozen=True)
class Step:
    """One dialplan line: ``exten => EXTEN,PRIORITY(LABEL),APP(ARGS)``."""

    exten: str
    priority: str
    label: str | None
    app: str
    args: str
    line: int

    def apps(self) -> Iterator[tuple[str, str]]:
        """This step's application, and the ones ``ExecIf(cond?App(args):App2(args))`` would run."""
        yield self.app, self.args
        if self.app.lower() == "execif":
            _, _, branches = self.args.partition("?")
            for branch in _split_top(branches, ":"):
                app, args = _app_call(branch)
                if app:
                    yield app, args


@dataclass
class Context:
    name: str
    steps: list[Step] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)

    @property
    def patterns(self) -> list[str]:
        """The extensions (patterns or plain) in the order they first appear."""
        return list(dict.fromkeys(s.exten for s in self.steps))

    def extension(self, exten: str) -> list[Step]:
        """The steps of one extension (as written: a pattern or a plain extension), in priority order."""
        return [s for s in self.steps if s.exten == exten]

    def matching(self, dialled: str) -> list[str]:
        """Which of this context's extensions a dialled extension matches (plain ones first)."""
        found = [p for p in self.patterns if pattern_matches(p, dialled)]
        return sorted(found, key=lambda p: p.startswith("_"))


@dataclass
class Dialplan:
    contexts: dict[str, Context]

    def steps(self) -> Iterator[Step]:
        for ctx in self.contexts.values():
            yield from ctx.steps

    def calls(self, app: str) -> Iterator[tuple[Step, str]]:
        """Every call of ``app`` (case-insensitive), with its arguments, ExecIf branches included."""
        for step in self.steps():
            for name, args in step.apps():
                if name.lower() == app.lower():
                    yield step, args

    def variables_set(self) -> dict[str, list[str]]:
        """``Set(__NAME=value)`` → {"NAME": [value, ...]} (inheritance underscores dropped; functions such as
        ``CALLERID(num)`` kept as written)."""
        out: dict[str, list[str]] = {}
        for _, args in self.calls("Set"):
            name, sep, value = args.partition("=")
            if sep:
                out.setdefault(name.strip().lstrip("_"), []).append(value.strip())
        return out

    def prompts(self) -> set[str]:
        """Sound files the dialplan plays: Playback/Background arguments and Read's second one."""
        found: set[str] = set()
        for app, index in (("Playback", 0), ("Background", 0), ("Read", 1)):
            for _, args in self.calls(app):
                parts = split_args(args)
                if len(parts) > index:
                    found.update(f for f in parts[index].split("&") if f and "${" not in f)
        return found

    def user_events(self) -> dict[str, set[str]]:
        """``UserEvent(Name,Key: value,...)`` → {"Name": {"Key", ...}}."""
        out: dict[str, set[str]] = {}
        for _, args in self.calls("UserEvent"):
            name, *body = split_args(args)
            out.setdefault(name.strip(), set()).update(b.split(":", 1)[0].strip() for b in body if ":" in b)
        return out

    def headers_added(self) -> set[str]:
        """Headers put on a leg: ``PJSIP_HEADER(add,NAME)`` and chan_sip's ``SIPAddHeader(NAME: value)``."""
        found = {m.group(1) for _, args in self.calls("Set")
                 for m in re.finditer(r"PJSIP_HEADER\(add,([^)]+)\)", args)}
        found |= {args.split(":", 1)[0].strip() for _, args in self.calls("SIPAddHeader")}
        return found

    def headers_read(self) -> dict[str, set[str]]:
        """Headers read on arrival into variables, for PJSIP_HEADER(read,...) and chan_sip's SIP_HEADER(...):
        {"X-Name": {"__VARIABLE", ...}} (names as written, inheritance underscores kept)."""
        out: dict[str, set[str]] = {}
        for _, args in self.calls("Set"):
            name, _, value = args.partition("=")
            for m in re.finditer(r"(?:PJSIP_HEADER\(read,|SIP_HEADER\()([^)]+)\)", value):
                out.setdefault(m.group(1).strip(), set()).add(name.strip())
        return out

    def only(self, *names: str) -> Dialplan:
        """The same dialplan with only these contexts (for checks per technology)."""
        return Dialplan({n: self.contexts[n] for n in names})


def parse(text: str) -> Dialplan:
    """The contexts of an extensions.conf text (comments stripped; ``\\;`` is a literal semicolon)."""
    contexts: dict[str, Context] = {}
    current: Context | None = None
    last_exten: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(?<!\\);.*", "", raw).replace("\\;", ";").strip()
        if not line:
            continue
        head = re.fullmatch(r"\[([^\]]+)\](?:\(.*\))?", line)
        if head:
            current = contexts.setdefault(head.group(1), Context(head.group(1)))
            last_exten = None
            continue
        key, sep, value = line.partition("=>")
        if not sep:
            key, sep, value = line.partition("=")
        key = key.strip().lower()
        if current is None or not sep:
            raise ValueError(f"line {number}: not a dialplan line: {raw!r}")
        value = value.strip()
        if key == "include":
            current.includes.append(value)
            continue
        if key == "exten":
            exten, _, rest = value.partition(",")
            last_exten = exten.strip()
        elif key == "same":
            if last_exten is None:
                raise ValueError(f"line {number}: 'same =>' before any 'exten =>'")
            rest = value
        else:
            raise ValueError(f"line {number}: unknown keyword {key!r}")
        priority, _, call = rest.partition(",")
        m = re.fullmatch(r"\s*([^(\s]+)\s*(?:\(([^)]*)\))?\s*", priority)
        if m is None:
            raise ValueError(f"line {number}: bad priority {priority!r}")
        app, args = _app_call(call)
        current.steps.append(Step(last_exten, m.group(1), m.group(2), app, args, number))
    return Dialplan(contexts)


def pattern_matches(pattern: str, exten: str) -> bool:
    """Whether the dialled ``exten`` matches the dialplan extension ``pattern`` (Asterisk's rules, above)."""
    d = exten.replace("-", "")
    if not pattern.startswith("_"):
        return pattern.replace("-", "") == d
    p = pattern[1:]
    i = 0
    while True:
        while i < len(p) and p[i] == "-":
            i += 1
        if not d or i >= len(p):
            break
        c = p[i]
        if c in ".!":
            return True  # the rest of the number, at least one character here
        if c == "[":
            end = p.index("]", i)
            if not _in_set(p[i + 1:end], d[0]):
                return False
            i = end + 1
        else:
            digits = {"X": "0123456789", "Z": "123456789", "N": "23456789"}.get(c.upper())
            if (d[0] not in digits) if digits is not None else d[0] != c:
                return False
            i += 1
        d = d[1:]
    return not d and p[i:] in ("", "!")


def substitute(text: str, variables: dict[str, str]) -> str:
    """``${NAME}`` and ``${NAME:offset[:length]}`` from ``variables`` (unknown names stay as written)."""

    def one(m: re.Match[str]) -> str:
        name, offset, length = m.group(1), m.group(2), m.group(3)
        if name not in variables:
            return m.group(0)
        value = variables[name]
        if offset is not None:
            value = value[int(offset):]
        if length is not None:
            value = value[:int(length)]
        return value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::(-?\d+))?(?::(\d+))?\}", one, text)


def split_args(args: str) -> list[str]:
    """An application's arguments split at top-level commas (not inside ``(...)``, ``${...}`` or ``$[...]``)."""
    return _split_top(args, ",")


def _split_top(text: str, sep: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _app_call(call: str) -> tuple[str, str]:
    """``App(args)`` → ("App", "args"); ``Hangup`` → ("Hangup", "")."""
    call = call.strip()
    name, paren, rest = call.partition("(")
    if not paren:
        return name.strip(), ""
    return name.strip(), rest[:rest.rfind(")")] if ")" in rest else rest


def _in_set(spec: str, ch: str) -> bool:
    i = 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            if spec[i] <= ch <= spec[i + 2]:
                return True
            i += 3
        else:
            if spec[i] == ch:
                return True
            i += 1
    return False
