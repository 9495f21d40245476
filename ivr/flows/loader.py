"""Flow files → model, reporting every problem with its file:line:column.

Loading is all-or-nothing: the caller gets a FlowSet only when there are no problems, so a broken edit never
replaces a working version. Cross-file checks (references, reachability, loops) live in ``checks.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.errors import Problem
from ivr.flows import arith, jsonpath, spoken
from ivr.flows import hours as hours_mod
from ivr.flows.hints import NODE_SETTINGS, SCHEMA, flow_hints
from ivr.flows.model import (
    GLOBAL_ACTIONS,
    AllOf,
    AnyOf,
    Branch,
    CallbackCancel,
    CallbackPrompts,
    CallFlow,
    Collect,
    Condition,
    Confirm,
    DigitsRef,
    Flow,
    FlowSet,
    Goto,
    Hangup,
    Hours,
    Http,
    Menu,
    MenuOption,
    Node,
    NotOf,
    Play,
    Pos,
    PromptDef,
    PromptItem,
    PromptRef,
    Prompts,
    PromptVariant,
    QueueWithCallback,
    Record,
    Return,
    SchedulePrompts,
    SetVars,
    SpeechSettings,
    Split,
    Survey,
    Test,
    Transfer,
    ValueRef,
)
from ivr.proto.vad import VadConfig
from ivr.yamlpos import key_position, load_yaml, position, schema_problems

ACTIONS = (
    "play", "menu", "collect", "branch", "hours", "set", "goto", "call", "return", "transfer", "queue",
    "survey", "hangup", "callback_cancel", "split", "record", "http",
)
#: actions that hand the caller to the PBX: their outcome (transferred, queued, callback) says what happened,
#: so ``resolved: true`` (self-service done in the IVR) is refused on them
HAND_OVERS = ("transfer", "queue")
TESTS = ("equals", "not_equals", "in", "matches", "starts_with", "lt", "le", "gt", "ge", "is_set")
MIN_END_OF_SPEECH = 0.1
"""Shorter than a stop consonant's closure: every word would be cut at its first gap."""
MIN_BARGE_IN, MAX_BARGE_IN = 0.02, 2.0


@dataclass(frozen=True)
class Ref:
    """A name used somewhere, checked once everything is loaded."""

    kind: str  # node, prompt, flow, schedule, var
    name: str
    pos: Pos
    flow: str | None = None
    role: str = ""  # "start" for the flow's start node, for a message that fits


@dataclass
class Loaded:
    flows: dict[str, Flow] = field(default_factory=dict)
    schedules: dict[str, hours_mod.Schedule] = field(default_factory=dict)
    schedule_pos: dict[str, Pos] = field(default_factory=dict)
    refs: list[Ref] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    broken_flows: set[str] = field(default_factory=set)  # named in files that failed: no cascades
    unbuilt: set[tuple[str, str]] = field(default_factory=set)
    """(flow, node) written in a file but not built because of a problem of its own."""
    unread: list[str] = field(default_factory=list)
    """Files that did not parse or fit the schema: what they define is unknown, so checks that depend on the
    whole set (unknown flows, schedules, variables; the default flow) stay quiet rather than guess."""
    files: list[str] = field(default_factory=list)
    digest: str = ""
    shared_prompts: dict[str, PromptDef] = field(default_factory=dict)
    """Prompts of files without ``flow:`` (a prompt library): every flow may play them; its own win."""


def flow_files(paths: list[Path]) -> list[Path]:
    """YAML files named by ``paths`` (files, or directories searched recursively), sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += [q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file()]
        else:
            out.append(p)
    return sorted(set(out))


def display_name(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def load(paths: list[Path], *, site_timezone: str = "UTC") -> Loaded:
    """Parse and build every file; the result carries problems instead of raising."""
    loaded = Loaded()
    digest = hashlib.sha256()
    files = flow_files(paths)
    for p in paths:
        if not p.exists():
            loaded.problems.append(Problem(display_name(p), 1, 1, "no such file or directory"))
    if not files and not loaded.problems:
        loaded.problems.append(Problem(display_name(paths[0]) if paths else ".", 1, 1, "no flow files found"))
    for path in files:
        name = display_name(path)
        loaded.files.append(name)
        try:
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            pass
        doc, problems = load_yaml(path, name, as_typed=True)
        if problems:
            loaded.problems += problems
            loaded.unread.append(name)
            continue
        if doc is None:
            loaded.problems.append(Problem(name, 1, 1, "file is empty (or only comments): write a flow "
                                           "(flow:, start:, nodes:) or hours:, or delete the file"))
            continue
        if not isinstance(doc, dict):
            loaded.problems.append(Problem(name, 1, 1, "a flow file is a mapping (flow:, start:, nodes: ...)"))
            loaded.unread.append(name)
            continue
        problems = _misplaced_actions(doc, name) or schema_problems(
            doc, SCHEMA, name, hints=flow_hints(), source=path.read_text(encoding="utf-8"))
        if problems:
            loaded.problems += problems
            loaded.unread.append(name)
            if isinstance(doc.get("flow"), str):
                loaded.broken_flows.add(doc["flow"])
            continue
        _FileBuilder(loaded, doc, name, path, site_timezone).build()
    _share_prompts(loaded)
    loaded.digest = digest.hexdigest()[:12]
    return loaded


def _share_prompts(loaded: Loaded) -> None:
    """The library's prompts into every flow that does not define the name itself, in the languages the flow
    speaks (rendered per flow like its own; the render cache makes the copies free). A shared prompt without
    the flow's first language is left out of that flow: playing it there is then an unknown prompt."""
    for flow in loaded.flows.values():
        for name, shared in loaded.shared_prompts.items():
            if name in flow.prompts:
                continue
            variants = {lang: v for lang, v in shared.variants.items() if lang in flow.languages}
            if flow.language in variants:
                flow.prompts[name] = PromptDef(name, variants, shared.pos)


def _misplaced_actions(doc: Any, file: str) -> list[Problem]:
    """``hangup:`` at the indentation of node ids: the node above lost its body, and the schema would say
    "nodes/a: expected object, got None" and "nodes/hangup: expected object" — say what happened instead."""
    nodes = doc.get("nodes")
    if not isinstance(nodes, dict):
        return []
    out = []
    for key, value in nodes.items():
        if key in ACTIONS and not isinstance(value, dict):
            line, col = key_position(doc, ["nodes", key])
            out.append(Problem(file, line, col, f"'{key}' is an action, but here it is a node id: indent it "
                               "(and next:, failure:) under the node it belongs to"))
        elif key in NODE_SETTINGS and not isinstance(value, dict):
            line, col = key_position(doc, ["nodes", key])
            out.append(Problem(file, line, col, f"'{key}' is a node's setting, but here it is a node id: indent it "
                               "under the node it belongs to, beside its action"))
    return out


def to_flowset(loaded: Loaded) -> FlowSet:
    return FlowSet(
        flows=dict(loaded.flows),
        schedules=dict(loaded.schedules),
        version=loaded.digest,
        files=tuple(loaded.files),
    )


class _FileBuilder:
    """Builds the flow and schedules of one schema-valid file."""

    def __init__(self, loaded: Loaded, doc: Any, name: str, path: Path, site_timezone: str) -> None:
        self.loaded, self.doc, self.file, self.path = loaded, doc, name, path
        self.site_timezone = site_timezone
        self.flow_name: str | None = doc.get("flow")
        self.languages: tuple[str, ...] = tuple(doc.get("languages") or ("en",))
        self.voices: dict[str, str] = dict(doc.get("voices") or {})

    # -- helpers --
    def pos(self, *path: str | int) -> Pos:
        line, col = position(self.doc, list(path))
        return Pos(self.file, line, col)

    def kpos(self, *path: str | int) -> Pos:
        line, col = key_position(self.doc, list(path))
        return Pos(self.file, line, col)

    def problem(self, pos: Pos, message: str) -> None:
        self.loaded.problems.append(Problem(pos.file, pos.line, pos.column, message))

    def warn(self, pos: Pos, message: str) -> None:
        self.loaded.problems.append(Problem(pos.file, pos.line, pos.column, message, warning=True))

    def ref(self, kind: str, name: str, pos: Pos) -> None:
        self.loaded.refs.append(Ref(kind, str(name), pos, self.flow_name))

    def zone(self, name: str, pos: Pos) -> ZoneInfo | None:
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError, OSError):
            self.problem(pos, f"unknown time zone '{name}' (use an IANA name such as 'America/New_York')")
            return None

    # -- top level --
    def build(self) -> None:
        for sname, sdoc in (self.doc.get("hours") or {}).items():
            self.schedule(str(sname), sdoc)
        if self.flow_name is None:
            for pname, spec in (self.doc.get("prompts") or {}).items():
                if str(pname) in self.loaded.shared_prompts:
                    first = self.loaded.shared_prompts[str(pname)].pos
                    self.problem(self.kpos("prompts", pname), f"shared prompt '{pname}' is also defined in "
                                 f"{first.file}:{first.line}")
                    continue
                self.loaded.shared_prompts[str(pname)] = self.prompt_def(str(pname), spec)
            return
        if self.flow_name in self.loaded.flows or self.flow_name in self.loaded.broken_flows:
            other = self.loaded.flows.get(self.flow_name)
            where = f" (also in {other.file}:{other.pos.line})" if other else ""
            self.problem(self.pos("flow"), f"duplicate flow name '{self.flow_name}'{where}")
            return
        tz_name = str(self.doc.get("timezone") or self.site_timezone)
        if "timezone" in self.doc:
            self.zone(tz_name, self.pos("timezone"))
        prompts = {str(k): self.prompt_def(str(k), v) for k, v in (self.doc.get("prompts") or {}).items()}
        self.global_keys = self.parse_global_keys()
        nodes: dict[str, Node] = {}
        for nname, ndoc in self.doc["nodes"].items():
            node = self.node(str(nname), ndoc)
            if node is not None:
                nodes[str(nname)] = node
            else:  # its own problem is reported: references to it are not "unknown node" too
                self.loaded.unbuilt.add((self.flow_name, str(nname)))
        self.loaded.refs.append(Ref("node", str(self.doc["start"]), self.pos("start"), self.flow_name, "start"))
        variables = {str(k): v for k, v in (self.doc.get("variables") or {}).items()}
        flow = Flow(
            name=self.flow_name,
            file=self.file,
            numbers=tuple(str(n) for n in self.doc.get("numbers") or ()),
            default=bool(self.doc.get("default", False)),
            languages=self.languages,
            timezone=tz_name,
            variables=variables,
            start=str(self.doc["start"]),
            prompts=prompts,
            nodes=nodes,
            pos=self.pos("flow"),
        )
        self.loaded.flows[self.flow_name] = flow

    # -- prompts --
    def prompt_def(self, name: str, spec: Any) -> PromptDef:
        path = ("prompts", name)
        variants: dict[str, PromptVariant] = {}
        if isinstance(spec, str):
            spec = {"say": spec}
        voice_override = spec.get("voice")
        for kind in ("say", "file"):
            if kind not in spec:
                continue
            value = spec[kind]
            per_lang = {self.languages[0]: value} if isinstance(value, str) else dict(value)
            for lang, src in per_lang.items():
                lang = str(lang)
                vpath = (*path, kind) if isinstance(value, str) else (*path, kind, lang)
                if lang not in self.languages:
                    self.problem(self.kpos(*vpath), f"prompt '{name}': language '{lang}' is not in "
                                 f"languages ({', '.join(self.languages)})")
                    continue
                if lang in variants:
                    self.problem(self.pos(*vpath), f"prompt '{name}' has both say and file for '{lang}'")
                    continue
                source = str(src)
                if kind == "file":
                    fpath = (self.path.parent / source).resolve()
                    if not fpath.is_file():
                        self.problem(self.pos(*vpath), f"prompt file not found: {source}")
                    source = str(fpath)
                voice = str(voice_override or self.voices.get(lang, lang))
                variants[lang] = PromptVariant(kind, source, lang, voice)  # type: ignore[arg-type]
        if self.languages[0] not in variants and variants:
            self.problem(self.pos(*path), f"prompt '{name}' has no '{self.languages[0]}' variant "
                         "(the flow's first language is the fallback for every call)")
        if "say" not in spec and "file" not in spec:
            self.problem(self.pos(*path), f"prompt '{name}' needs say: or file:")
        return PromptDef(name, variants, self.kpos(*path))

    def prompts(self, spec: Any, *path: str | int) -> Prompts:
        if spec is None:
            return ()
        items = spec if isinstance(spec, list) else [spec]
        out: list[PromptItem] = []
        for i, item in enumerate(items):
            ipath = (*path, i) if isinstance(spec, list) else path
            if isinstance(item, str):
                pos = self.pos(*ipath)
                self.ref("prompt", item, pos)
                out.append(PromptRef(item, pos))
            elif "digits" in item:
                pos = self.pos(*ipath, "digits")
                self.ref("var", item["digits"], pos)
                out.append(DigitsRef(str(item["digits"]), pos))
            else:
                kind = next(k for k in spoken.KINDS if k in item)
                pos = self.pos(*ipath, kind)
                self.ref("var", item[kind], pos)
                unsaid = [lang for lang in self.languages if lang.split("-")[0] not in spoken.LANGUAGES]
                if unsaid:
                    self.problem(pos, f"{kind}: values are spoken in {', '.join(spoken.LANGUAGES)}, not in "
                                 f"{', '.join(unsaid)} (this flow's languages)")
                out.append(ValueRef(kind, str(item[kind]), pos, item.get("currency")))
        return tuple(out)

    # -- nodes --
    def node(self, name: str, spec: Any) -> Node | None:
        base = ("nodes", name)
        actions = [k for k in spec if k in ACTIONS]
        if not actions:
            self.problem(self.kpos(*base), f"node '{name}' has no action (one of: {', '.join(ACTIONS)})")
            return None
        if len(actions) > 1:
            self.problem(self.kpos(*base, actions[1]),
                         f"node '{name}' has more than one action: {', '.join(actions)}")
            return None
        kind = actions[0]
        value = spec[kind]
        path = (*base, kind)
        for edge in ("next", "failure"):
            if edge in spec:
                self.ref("node", spec[edge], self.pos(*base, edge))
        resolved = spec.get("resolved", False)
        if resolved is True and kind in HAND_OVERS:
            self.problem(self.kpos(*base, "resolved"),
                         f"node '{name}': resolved: true marks a task done in the IVR, but a {kind} node hands the "
                         "caller to the PBX (its outcome already says so)")
        builder = getattr(self, f"act_{kind}")
        action = builder(value, path)
        if action is None:
            return None
        return Node(
            name=name,
            kind=kind,
            action=action,
            next=str(spec["next"]) if "next" in spec else None,
            failure=str(spec["failure"]) if "failure" in spec else None,
            pos=self.kpos(*base),
            description=str(spec.get("description", "")),
            resolved=resolved is True,
        )

    def parse_global_keys(self) -> tuple[tuple[str, str], ...]:
        """``global_keys: {"0": operator, "*": back, "#": repeat}``: keys every menu of the flow answers."""
        out = []
        for key, value in (self.doc.get("global_keys") or {}).items():
            key_s, target = str(key), str(value)
            if target in GLOBAL_ACTIONS:
                if target in self.doc["nodes"]:
                    self.problem(self.pos("global_keys", key), f"'{target}' is both a node and the global key "
                                 f"action {target} (rename the node)")
            else:
                self.target(value, "global_keys", key)
            out.append((key_s, target))
        return tuple(out)

    def target(self, value: Any, *path: str | int) -> str:
        self.ref("node", value, self.pos(*path))
        return str(value)

    def act_play(self, v: Any, path: tuple) -> Play:
        if isinstance(v, dict):
            return Play(self.prompts(v["prompt"], *path, "prompt"), bool(v.get("barge_in", False)))
        return Play(self.prompts(v, *path))

    def act_menu(self, v: Any, path: tuple) -> Menu:
        options: list[MenuOption] = []
        seen_words: dict[str, str] = {}
        for key, opt in v["options"].items():
            key_s = str(key)
            opath = (*path, "options", key)
            kpos = Pos(self.file, *key_position(self.doc, list(opath)))
            if not re.fullmatch(r"[0-9*#]{1,4}", key_s) and key_s != "speech":
                self.problem(kpos, f"bad key '{key_s}' (menu keys are 0-9, * and #, up to 4 of them; "
                             "use 'speech' for an option chosen only by voice)")
            words: tuple[str, ...] = ()
            if isinstance(opt, str):
                target = self.target(opt, *opath)
            else:
                target = self.target(opt["goto"], *opath, "goto")
                words = tuple(str(w) for w in opt.get("say") or ())
                for i, w in enumerate(words):
                    norm = normalize_words(w)
                    if norm in seen_words:
                        self.problem(self.pos(*opath, "say", i),
                                     f"keyword '{w}' is used by option '{seen_words[norm]}' and option '{key_s}'")
                    seen_words[norm] = key_s
            options.append(MenuOption(None if key_s == "speech" else key_s, target, words, kpos))
        wait = float(v.get("inter_digit_timeout", 2))
        for long in options:
            short = next((o.key for o in options if o.key and long.key and o.key != long.key
                          and long.key.startswith(o.key)), None)
            if short and long.key:
                # The engine reads on while a longer key could still match (steps._match_menu): the pause
                # tells them apart, so this works, but slowly, and type-ahead for the next menu runs in.
                nxt = long.key[len(short)]
                self.warn(long.pos, f"key '{long.key}' starts with key '{short}': a caller who wants {short} waits "
                          f"inter_digit_timeout ({wait:g} s) before it is taken, and a {nxt} typed ahead for the "
                          f"next menu makes it {short + nxt} (use keys of one length)")
        prompt = self.prompts(v["prompt"], *path, "prompt")
        has_words = any(o.keywords for o in options)
        speech, settings = self.speech_settings(v, path, digits=False)
        speech = has_words if speech is None else speech
        if speech and not has_words:
            self.problem(self.pos(*path, "speech"), "speech is on but no option has say: keywords")
        own = {o.key for o in options}
        return Menu(
            prompt=prompt,
            reprompt=self.prompts(v.get("reprompt"), *path, "reprompt") or prompt,
            options=tuple(options),
            global_keys=tuple((k, t) for k, t in self.global_keys if k not in own)
            if v.get("global_keys", True) is not False else (),
            timeout=float(v.get("timeout", 5)),
            inter_digit_timeout=float(v.get("inter_digit_timeout", 2)),
            max_no_input=int(v.get("max_no_input", 3)),
            max_no_match=int(v.get("max_no_match", 3)),
            no_input=self.prompts(v.get("no_input"), *path, "no_input"),
            no_match=self.prompts(v.get("no_match"), *path, "no_match"),
            barge_in=bool(v.get("barge_in", True)),
            speech=speech,
            min_confidence=float(v.get("min_confidence", 0.5)),
            speech_settings=settings,
        )

    def act_collect(self, v: Any, path: tuple) -> Collect:
        lo, hi = int(v.get("min_digits", 1)), int(v.get("max_digits", 20))
        if lo > hi:
            self.problem(self.pos(*path, "min_digits"), f"min_digits ({lo}) is more than max_digits ({hi})")
        pattern = v.get("pattern")
        if pattern is not None:
            try:
                re.compile(str(pattern))
            except re.error as exc:
                self.problem(self.pos(*path, "pattern"), f"bad pattern: {exc}")
        confirm = None
        c = v.get("confirm")
        if c:
            c = c if isinstance(c, dict) else {}
            before = self.prompts(c.get("before", "you_entered"), *path, "confirm", "before")
            after = self.prompts(c.get("after", "confirm_choice"), *path, "confirm", "after")
            yes, no = str(c.get("yes", "1")), str(c.get("no", "2"))
            if yes == no:
                self.problem(self.pos(*path, "confirm"), f"confirm: yes and no are both '{yes}'")
            confirm = Confirm(before, after, yes, no)
        speech, settings = self.speech_settings(v, path, digits=True)
        return Collect(
            prompt=self.prompts(v["prompt"], *path, "prompt"),
            into=str(v["into"]),
            min_digits=lo,
            max_digits=hi,
            terminator=str(v.get("terminator", "#")),
            pattern=str(pattern) if pattern is not None else None,
            timeout=float(v.get("timeout", 5)),
            inter_digit_timeout=float(v.get("inter_digit_timeout", 3)),
            max_attempts=int(v.get("max_attempts", 3)),
            no_input=self.prompts(v.get("no_input"), *path, "no_input"),
            invalid=self.prompts(v.get("invalid"), *path, "invalid"),
            barge_in=bool(v.get("barge_in", True)),
            speech=bool(speech),
            confirm=confirm,
            speech_settings=settings,
            sensitive=bool(v.get("sensitive", False)),
        )

    def speech_settings(self, v: Any, path: tuple, *, digits: bool) -> tuple[bool | None, SpeechSettings]:
        """``speech: true|false|{...}`` → (on, unset when absent; the turn's settings). Values the schema
        lets through but a call could not use are problems here, at the value."""
        spec = v.get("speech")
        if not isinstance(spec, dict):
            return (None if spec is None else bool(spec)), SpeechSettings()
        spath = (*path, "speech")

        def seconds(key: str) -> float | None:
            return float(spec[key]) if key in spec else None

        settings = SpeechSettings(
            end_of_speech=seconds("end_of_speech"),
            no_input=seconds("no_input"),
            max_length=seconds("max_length"),
            barge_in_min=seconds("barge_in_min"),
            min_margin=float(spec["min_margin"]) if "min_margin" in spec else None,
            max_free_gap=float(spec["max_free_gap"]) if "max_free_gap" in spec else None,
            verify=bool(spec["verify"]) if "verify" in spec else None,
        )
        eos, longest, onset = settings.end_of_speech, settings.max_length, settings.barge_in_min
        if eos is not None and eos < MIN_END_OF_SPEECH:
            self.problem(self.pos(*spath, "end_of_speech"),
                         f"end_of_speech {eos:g} s is below {MIN_END_OF_SPEECH:g} s: the gaps inside a "
                         "word would end the answer")
        if onset is not None and not MIN_BARGE_IN <= onset <= MAX_BARGE_IN:
            self.problem(self.pos(*spath, "barge_in_min"),
                         f"barge_in_min {onset:g} s is outside {MIN_BARGE_IN:g}-{MAX_BARGE_IN:g} s (from one 20 ms "
                         "frame to 2 s of speech)")
        default = VadConfig.for_digits() if digits else VadConfig.for_keywords()
        used_eos = eos if eos is not None else default.hangover
        if longest is not None and longest <= used_eos:
            which = "end_of_speech" if eos is not None else "the default end_of_speech"
            self.problem(self.pos(*spath, "max_length"),
                         f"max_length {longest:g} s is not longer than {which} ({used_eos:g} s): answers would "
                         "be cut before they could end")
        elif longest is not None and onset is not None and onset >= longest:
            self.problem(self.pos(*spath, "barge_in_min"),
                         f"barge_in_min {onset:g} s is not shorter than max_length ({longest:g} s)")
        if settings.max_free_gap is not None and settings.verify is False:
            self.problem(self.pos(*spath, "max_free_gap"),
                         "max_free_gap applies only to the free-form check, and verify is false here")
        return bool(spec.get("enabled", True)), settings

    def condition(self, c: Any, path: tuple) -> Condition:
        groups = [k for k in ("all", "any", "not") if k in c]
        tests = [k for k in TESTS if k in c]
        if groups and (tests or "var" in c or len(groups) > 1):
            self.problem(self.pos(*path), "a condition is either {var, test} or one of all/any/not")
        if "all" in c:
            return AllOf(tuple(self.condition(x, (*path, "all", i)) for i, x in enumerate(c["all"])))
        if "any" in c:
            return AnyOf(tuple(self.condition(x, (*path, "any", i)) for i, x in enumerate(c["any"])))
        if "not" in c:
            return NotOf(self.condition(c["not"], (*path, "not")))
        pos = self.pos(*path)
        if "var" not in c or len(tests) != 1:
            self.problem(pos, f"a test needs var: and exactly one of {', '.join(TESTS)}")
            return Test("", "is_set", True, pos)
        op = tests[0]
        value = c[op]
        if op == "matches":
            try:
                re.compile(str(value))
            except re.error as exc:
                self.problem(self.pos(*path, "matches"), f"bad pattern: {exc}")
        self.ref("var", c["var"], self.pos(*path, "var"))
        return Test(str(c["var"]), op, list(value) if op == "in" else value, pos)

    def act_branch(self, v: Any, path: tuple) -> Branch:
        cases = []
        for i, case in enumerate(v):
            cond = self.condition(case["if"], (*path, i, "if"))
            cases.append((cond, self.target(case["goto"], *path, i, "goto")))
        return Branch(tuple(cases))

    def act_record(self, v: Any, path: tuple) -> Record:
        return Record(
            prompt=self.prompts(v.get("prompt"), *path, "prompt"),
            into=str(v.get("into", "recording")),
            max_seconds=float(v.get("max_seconds", 60)),
            end_keys=str(v.get("end_key", "#")),
            silence_seconds=float(v.get("silence_seconds", 5)),
            beep=bool(v.get("beep", True)),
        )

    def act_split(self, v: Any, path: tuple) -> Split:
        variants = tuple((str(name), float(spec["share"]), self.target(spec["goto"], *path, "variants", name, "goto"))
                         for name, spec in v["variants"].items())
        total = sum(share for _, share, _ in variants)
        if abs(total - 100) > 1e-9:
            shares = " + ".join(f"{share:g}" for _, share, _ in variants)
            self.problem(self.kpos(*path, "variants"), f"the variants' shares add up to {total:g} ({shares}), "
                         "not 100")
        return Split(experiment=str(v.get("experiment") or path[1]), variants=variants)

    def act_hours(self, v: Any, path: tuple) -> Hours:
        self.ref("schedule", v["schedule"], self.pos(*path, "schedule"))
        return Hours(
            schedule=str(v["schedule"]),
            open=self.target(v["open"], *path, "open"),
            closed=self.target(v["closed"], *path, "closed"),
            holiday=self.target(v["holiday"], *path, "holiday") if "holiday" in v else None,
        )

    def act_set(self, v: Any, path: tuple) -> SetVars:
        lang = v.get("lang")
        if isinstance(lang, str) and "${" not in lang and lang not in self.languages:
            self.warn(self.pos(*path, "lang"), f"lang '{lang}' is not one of this flow's languages "
                      f"({', '.join(self.languages)}): callers would go on hearing {self.languages[0]} "
                      "(add it to languages:, with its prompts)")
        values: list[tuple[str, object]] = []
        sensitive: set[str] = set()
        for k, val in v.items():
            if isinstance(val, dict):  # {value: V}, {add: N} or {expr: "..."}, each with sensitive: true if so
                if val.get("sensitive"):
                    sensitive.add(str(k))
                ops = {o: a for o, a in val.items() if o != "sensitive"}
                if "value" in ops:
                    val = ops["value"]
                else:  # {add: N} or {expr: "..."}: computed when the call gets here
                    op, arg = next(iter(ops.items()))
                    try:
                        computed = arith.counter(str(k), arg) if op == "add" else arith.parse(str(arg))
                    except ValueError as exc:
                        self.problem(self.pos(*path, k, op), str(exc))
                        continue
                    for var in computed.variables:
                        if var != str(k):
                            self.ref("var", var, self.pos(*path, k, op))
                    values.append((str(k), computed))
                    continue
            for var in re.findall(r"\$\{([^}]*)\}", str(val)) if isinstance(val, str) else ():
                self.ref("var", var, self.pos(*path, k))
            values.append((str(k), val))
        return SetVars(tuple(values), frozenset(sensitive))

    def act_goto(self, v: Any, path: tuple) -> Goto:
        return Goto(self.target(v, *path))

    def act_call(self, v: Any, path: tuple) -> CallFlow:
        self.ref("flow", v, self.pos(*path))
        return CallFlow(str(v))

    def act_return(self, v: Any, path: tuple) -> Return:
        return Return()

    def act_transfer(self, v: Any, path: tuple) -> Transfer | None:
        if ("extension" in v) == ("queue" in v):
            self.problem(self.pos(*path), "transfer needs exactly one of extension: or queue:")
            return None
        return Transfer(
            extension=str(v["extension"]) if "extension" in v else None,
            queue=str(v["queue"]) if "queue" in v else None,
            prompt=self.prompts(v.get("prompt"), *path, "prompt"),
            data=self.data_names(v.get("data"), path),
        )

    def data_names(self, names: Any, path: tuple) -> tuple[str, ...]:
        """``data: [account, balance]``: variables for the agent, each checked like any variable use."""
        out: list[str] = []
        for i, name in enumerate(names or ()):
            self.ref("var", str(name), self.pos(*path, "data", i))
            if str(name) in out:
                self.warn(self.pos(*path, "data", i), f"'{name}' is listed twice in data")
                continue
            out.append(str(name))
        return tuple(out)

    def act_http(self, v: Any, path: tuple) -> Http | None:
        method = str(v.get("method", "GET")).upper()
        url = str(v["url"])
        lookup = str(v["lookup"]) if "lookup" in v else None
        if lookup is None and not re.match(r"https?://", url):
            self.problem(self.pos(*path, "url"), f"url '{url}' is relative: name the back end it belongs to "
                         "(lookup: NAME, from the box config's lookups:) or write the whole URL")
        for var in re.findall(r"\$\{([^}]*)\}", url):
            self.ref("var", var, self.pos(*path, "url"))
        body = v.get("body")
        if body is not None and method in ("GET", "HEAD", "DELETE"):
            self.problem(self.pos(*path, "body"), f"a {method} request has no body (use POST or PUT)")

        def body_refs(value: Any, where: tuple) -> None:
            if isinstance(value, str):
                for var in re.findall(r"\$\{([^}]*)\}", value):
                    self.ref("var", var, self.pos(*where))
            elif isinstance(value, dict):
                for k, x in value.items():
                    body_refs(x, (*where, k))
            elif isinstance(value, list):
                for i, x in enumerate(value):
                    body_refs(x, (*where, i))

        body_refs(body, (*path, "body"))
        into: list[tuple[str, str, tuple[str | int, ...]]] = []
        for var, expr in (v.get("into") or {}).items():
            try:
                steps = jsonpath.parse(str(expr))
            except jsonpath.PathError as exc:
                self.problem(self.pos(*path, "into", var), f"bad response path: {exc}")
                continue
            into.append((str(var), str(expr), steps))
        comfort = v.get("comfort") or {}
        return Http(
            method=method,
            url=url,
            lookup=lookup,
            body=_plain(body),
            timeout=float(v["timeout"]) if "timeout" in v else None,
            into=tuple(into),
            on_timeout=self.target(v["on_timeout"], *path, "on_timeout") if "on_timeout" in v else None,
            comfort=self.prompts(comfort.get("prompt"), *path, "comfort", "prompt"),
            comfort_after=float(comfort.get("after", 1.0)),
            sensitive=v.get("sensitive") is True,
        )

    def act_queue(self, v: Any, path: tuple) -> QueueWithCallback:
        cb = v.get("callback") or {}
        always = cb.get("offer") == "always"  # the caller already asked, in the PBX queue
        offer = always or bool(cb.get("offer", True))
        arrival = cb.get("arrival")
        for key, template in (("name", v["name"]), ("arrival", arrival)):
            for var in re.findall(r"\$\{([^}]*)\}", template) if isinstance(template, str) else ():
                self.ref("var", var, self.pos(*path, *(("callback",) if key == "arrival" else ()), key))
        allow_other = bool(cb.get("allow_other_number", True))
        cb_prompts = None
        if offer:  # default prompts are referenced (checked per language) only when an offer can be made
            given = cb.get("prompts") or {}
            defaults = {f.name: f"callback_{f.name}" for f in dataclasses.fields(CallbackPrompts)}
            if not allow_other:
                defaults["confirm_choice"] = "callback_confirm_only"
            ppath = (*path, "callback", "prompts")
            cb_prompts = CallbackPrompts(**{
                name: self.prompts(given[name], *ppath, name) if name in given else self.prompts(default, *path)
                for name, default in defaults.items()})
        sched_prompts = None
        if cb.get("schedule", False) is True and not offer:
            self.problem(self.pos(*path, "callback", "schedule"),
                         "schedule: true needs a callback offer (offer is false)")
        if offer and cb.get("schedule", False) is True:
            given = cb.get("prompts") or {}
            ppath = (*path, "callback", "prompts")
            sched_prompts = SchedulePrompts(**{
                f.name: self.prompts(given[f.name], *ppath, f.name) if f.name in given
                else self.prompts(f"callback_{f.name}", *path) for f in dataclasses.fields(SchedulePrompts)})
        min_wait = cb.get("min_wait_seconds")
        if "hours" in cb:
            self.ref("schedule", cb["hours"], self.pos(*path, "callback", "hours"))
        return QueueWithCallback(
            name=str(v["name"]),
            prompt=self.prompts(v.get("prompt"), *path, "prompt"),
            offer_callback=offer,
            offer_always=always,
            arrival=str(arrival) if arrival is not None else None,
            min_wait_seconds=float(min_wait) if min_wait is not None else None,
            allow_other_number=allow_other,
            timeout=float(cb.get("timeout", 6)),
            data=self.data_names(v.get("data"), path),
            callback_prompts=cb_prompts,
            schedule_prompts=sched_prompts,
            hours=str(cb["hours"]) if "hours" in cb else None,
        )

    def act_callback_cancel(self, v: Any, path: tuple) -> CallbackCancel:
        v = v if isinstance(v, dict) else {}
        given = v.get("prompts") or {}

        def prompt(name: str) -> Prompts:
            if name in given:
                return self.prompts(given[name], *path, "prompts", name)
            return self.prompts(f"callback_cancel_{name}", *path)

        confirm = bool(v.get("confirm", True))
        return CallbackCancel(
            queue=str(v["queue"]) if "queue" in v else None,
            ask=prompt("ask") if confirm else (),
            done=prompt("done"),
            kept=prompt("kept") if confirm else (),
            none=prompt("none"),
            timeout=float(v.get("timeout", 6)),
        )

    def act_survey(self, v: Any, path: tuple) -> Survey:
        return Survey(
            prompt=self.prompts(v["prompt"], *path, "prompt"),
            scale=v["scale"],
            into=str(v["into"]),
            timeout=float(v.get("timeout", 6)),
            max_attempts=int(v.get("max_attempts", 2)),
            no_input=self.prompts(v.get("no_input"), *path, "no_input"),
            invalid=self.prompts(v.get("invalid"), *path, "invalid"),
            thanks=self.prompts(v.get("thanks"), *path, "thanks"),
        )

    def act_hangup(self, v: Any, path: tuple) -> Hangup:
        if v is None or isinstance(v, bool):
            return Hangup()
        return Hangup(self.prompts(v, *path))

    # -- schedules --
    def schedule(self, name: str, s: Any) -> None:
        path = ("hours", name)
        if name in self.loaded.schedules:
            other = self.loaded.schedule_pos[name]
            self.problem(self.kpos(*path), f"duplicate schedule '{name}' (also in {other.file}:{other.line})")
            return
        tz = self.zone(s["timezone"], self.pos(*path, "timezone"))
        weekly: dict[int, list[hours_mod.TimeRange]] = {}
        placed: dict[int, list[tuple[hours_mod.TimeRange, str, Pos]]] = {}
        for days, ranges in s["weekly"].items():
            try:
                day_list = hours_mod.parse_days(str(days))
            except ValueError:
                self.problem(self.kpos(*path, "weekly", days),
                             f"bad day '{days}' (use mon..sun, ranges like mon-fri, lists like sat,sun)")
                continue
            parsed = self.ranges(ranges, (*path, "weekly", days))
            for day in day_list:
                weekly.setdefault(day, []).extend(r for r, _, _ in parsed)
                placed.setdefault(day, []).extend(parsed)
        self.overlaps(placed)
        holidays: dict[date, str] = {}
        for i, h in enumerate(s.get("holidays") or ()):
            text, label = (h, str(h)) if not isinstance(h, dict) else (h["date"], h.get("name", str(h["date"])))
            d = self.date(text, (*path, "holidays", i))
            if d:
                holidays[d] = str(label)
        overrides: dict[date, tuple[hours_mod.TimeRange, ...]] = {}
        for i, o in enumerate(s.get("overrides") or ()):
            d = self.date(o["date"], (*path, "overrides", i, "date"))
            if d:
                ranges = [] if o["hours"] == "closed" else self.ranges(o["hours"], (*path, "overrides", i, "hours"))
                overrides[d] = tuple(r for r, _, _ in ranges)
                self.overlaps({0: ranges}, f"on {d.isoformat()}")
        if tz is None:
            return
        self.loaded.schedules[name] = hours_mod.Schedule(
            name, tz, {k: tuple(v) for k, v in weekly.items()}, holidays, overrides
        )
        self.loaded.schedule_pos[name] = self.kpos(*path)

    def ranges(self, value: Any, path: tuple) -> list[tuple[hours_mod.TimeRange, str, Pos]]:
        """Time ranges with their text and place; a range that starts where it ends is a warning, since it is
        read as 24 hours (an end at or before the start runs into the next day)."""
        items = [(x, self.pos(*path, i)) for i, x in enumerate(value)] if isinstance(value, list) \
            else [(value, self.pos(*path))]
        out = []
        for text, pos in items:
            r = hours_mod.parse_range(str(text))
            if _empty(str(text)):
                self.warn(pos, f"range {text} starts and ends at the same time: it is read as 24 hours from "
                          f"{r.start:%H:%M} (for all day write 00:00-24:00; for closed, leave the day out)")
            out.append((r, str(text), pos))
        return out

    def overlaps(self, by_day: dict[int, list[tuple[hours_mod.TimeRange, str, Pos]]], where: str = "") -> None:
        """Two ranges of one day that overlap are harmless to a call, but one of them is not what was meant."""
        for day, ranges in by_day.items():
            seen: list[tuple[hours_mod.TimeRange, str, Pos]] = []
            for r, text, pos in ranges:
                if _empty(text):
                    continue  # start = end: already warned about, and not what the admin meant either
                other = next((t for q, t, _ in seen
                              if q.start_minutes < r.end_minutes and r.start_minutes < q.end_minutes), None)
                if other is not None:
                    self.warn(pos, f"range {text} overlaps {other} {where or 'on ' + hours_mod.DAYS[day]} "
                              "(merge them into one range)")
                seen.append((r, text, pos))

    def date(self, value: Any, path: tuple) -> date | None:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError as exc:
            self.problem(self.pos(*path), f"bad date '{value}': {exc} (YYYY-MM-DD)")
            return None


def _plain(value: Any) -> Any:
    """ruamel's typed mappings and sequences as plain dicts and lists (a body is sent as JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_plain(x) for x in value]
    return value


def _empty(range_text: str) -> bool:
    """``09:00-09:00``: starts where it ends (``00:00-24:00`` is all day, not this)."""
    start, _, end = range_text.partition("-")
    return start.strip() == end.strip()


def normalize_words(text: str) -> str:
    """Case- and punctuation-blind form of a keyword, for matching speech and finding duplicates."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())
