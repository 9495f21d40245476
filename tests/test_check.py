"""`ivr check`: the sample flows pass; a broken copy fails with the right file:line:column for each error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Env


def at(path: Path, anchor: str, nth: int = 1) -> str:
    """``file:line:col`` of the nth occurrence of ``anchor`` in the file (1-based, as ivr prints).

    ``"other.yaml::anchor"`` looks in a sibling file; in ``"key: |value"`` the column is where ``|`` stands.
    """
    if "::" in anchor:
        other, anchor = anchor.split("::", 1)
        path = path.parent / other
    prefix, _, target = anchor.rpartition("|")
    text = prefix + target
    seen = 0
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        col = line.find(text)
        while col >= 0:
            seen += 1
            if seen == nth:
                return f"{os.path.relpath(path)}:{i}:{col + len(prefix) + 1}"
            col = line.find(text, col + 1)
    raise AssertionError(f"{anchor!r} not in {path}")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_sample_flows_pass(env: Env) -> None:
    r = env.ivr("check")
    assert r.code == 0, r.out + r.err
    assert r.out.startswith("ok: 6 flows")  # main, billing, survey, voice, callback, queue_exit
    assert len(r.out.strip().splitlines()) == 1


# (what breaks, file, old text, new text, anchor of the error, nth anchor, message)
BROKEN = [
    ("unknown node", "main.yaml", "        0: operator\n", "        0: operatr\n", "operatr", 1,
     "unknown node 'operatr' (did you mean 'operator'?)"),
    ("unreachable node", "main.yaml", "  goodbye:\n    hangup: goodbye\n",
     "  goodbye:\n    hangup: goodbye\n  orphan:\n    hangup: goodbye\n", "orphan", 1,
     "node 'orphan' is never reached from start 'greet'"),
    ("missing prompt file", "main.yaml", "  goodbye: {say:", "  jingle: {file: sounds/jingle.wav}\n  goodbye: {say:",
     "sounds/jingle.wav", 1, "prompt file not found: sounds/jingle.wav"),
    ("bad key", "main.yaml", "        9: spanish", "        9x: spanish", "9x", 1,
     "bad key '9x' (menu keys are 0-9, * and #, up to 4 of them; use 'speech' for an option chosen only by voice)"),
    ("loop with no exit", "main.yaml", "  goodbye:\n    hangup: goodbye\n",
     "  goodbye:\n    play: goodbye\n    next: survey\n", "survey:", 1,
     "loop with no exit: goodbye → survey never reaches a hangup, transfer, queue or return"),
    ("duplicate keyword", "voice.yaml", "say: [아니요]}", "say: [아니요, 네]}", "네]", 2,
     "keyword '네' is used by option '1' and option '2'"),
    ("bad time zone", "hours.yaml", "timezone: America/New_York\n    weekly:\n      mon-fri: \"08",
     "timezone: America/New_Yrok\n    weekly:\n      mon-fri: \"08", "America/New_Yrok", 1,
     "unknown time zone 'America/New_Yrok' (use an IANA name such as 'America/New_York')"),
    ("unknown prompt", "main.yaml", "      prompt: main_menu\n", "      prompt: main_menuu\n", "main_menuu", 1,
     "unknown prompt 'main_menuu' (did you mean 'main_menu'?)"),
    ("unknown flow", "main.yaml", "    call: billing\n", "    call: biling\n", "call: |biling", 1,
     "unknown flow 'biling' (did you mean 'billing'?)"),
    ("unknown schedule", "main.yaml", "schedule: office,", "schedule: ofice,", "ofice", 1,
     "unknown hours schedule 'ofice' (did you mean 'office'?)"),
    ("unknown callback hours", "main.yaml", "min_wait_seconds: 120, allow_other_number: true}",
     "min_wait_seconds: 120, allow_other_number: true, hours: suport}", "suport", 1,
     "unknown hours schedule 'suport' (did you mean 'support'?)"),
    ("unknown variable", "main.yaml", "{var: caller, starts_with", "{var: calller, starts_with", "calller", 1,
     "unknown variable 'calller' (did you mean 'caller'?); it is never set (declare it under variables:)"),
    ("unknown key", "main.yaml", "      reprompt: main_short", "      repromt: main_short", "repromt", 1,
     "unknown key 'repromt' — did you mean 'reprompt'? (allowed: barge_in, global_keys, inter_digit_timeout, "
     "max_no_input, max_no_match, min_confidence, no_input, no_match, options, prompt, reprompt, speech, timeout)"),
    ("bad value", "main.yaml", "      timeout: 5\n", "      timeout: -1\n", "-1", 1,
     "nodes/main_menu/menu/timeout: -1 is less than or equal to the minimum of 0"),
    ("no next", "main.yaml", "    play: morning\n    next: check_hours\n", "    play: morning\n", "say_morning:", 1,
     "node 'say_morning' (play) needs next: (where the call goes after it)"),
    ("two actions", "main.yaml", "    play: hello\n", "    play: hello\n    hangup: goodbye\n", "hangup: goodbye", 1,
     "node 'say_hello' has more than one action: play, hangup"),
    ("no default flow", "main.yaml", "default: true", "default: false", "billing.yaml::flow: |billing", 1,
     "no flow is the default (set default: true on the flow that takes calls to unlisted numbers)"),
    ("default language missing", "main.yaml", 'hello: {say: {en: "Thank you for calling Acme.", es:',
     'hello: {say: {es:', "{say: {es:", 1,
     "prompt 'hello' has no 'en' variant (the flow's first language is the fallback for every call)"),
    ("sub-flow cycle", "billing.yaml", "    play: pay_online\n", "    call: main\n", "main.yaml::billing:", 1,
     "sub-flow calls loop: main → billing → main"),
    ("min above max", "billing.yaml", "min_digits: 6", "min_digits: 12", "min_digits: |12", 1,
     "min_digits (12) is more than max_digits (10)"),
    ("bad pattern", "billing.yaml", 'pattern: "^[1-9][0-9]{5,9}$"', 'pattern: "^[1-9][0-9{5,9}$"',
     'pattern: |"^[1-9]', 1,
     "bad pattern: unterminated character set at position 6"),
    ("bad day", "hours.yaml", "      sat: \"10:00-14:00\"", "      sa: \"10:00-14:00\"", "sa:", 1,
     "bad day 'sa' (use mon..sun, ranges like mon-fri, lists like sat,sun)"),
    ("number routed twice", "billing.yaml", "numbers: [\"+15550102\", \"102\"]", "numbers: [\"100\"]",
     "main.yaml::flow: |main", 1, "number '100' routes to both 'billing'"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_copy_fails_with_position(env: Env, case: tuple) -> None:
    _, file, old, new, anchor, nth, message = case
    path = env.flows / file
    edit(path, old, new)
    r = env.ivr("check", "--no-render")
    assert r.code == 1
    where = at(path, anchor, nth)
    lines = r.out.splitlines()
    assert any(line.startswith(f"{where}: {message}") or (line.startswith(where) and message in line)
               for line in lines), f"expected {where}: {message}\ngot:\n{r.out}"
    assert "problem" in r.err


def test_syntax_error_has_position(env: Env) -> None:
    path = env.flows / "survey.yaml"
    edit(path, "  nps:\n", "  nps:\n   bad: [unclosed\n")
    r = env.ivr("check", "--no-render")
    assert r.code == 1
    assert f"{os.path.relpath(path)}:" in r.out and "YAML syntax error" in r.out


def test_duplicate_yaml_key_is_an_error(env: Env) -> None:
    path = env.flows / "survey.yaml"
    edit(path, "  back:\n    return: true\n", "  back:\n    return: true\n  csat:\n    return: true\n")
    r = env.ivr("check", "--no-render")
    assert r.code == 1 and "csat" in r.out and "YAML syntax error" in r.out


def test_several_errors_in_one_run(env: Env) -> None:
    edit(env.flows / "main.yaml", "        0: operator\n", "        0: operatr\n")
    edit(env.flows / "billing.yaml", "min_digits: 6", "min_digits: 12")
    edit(env.flows / "hours.yaml", "      sat: \"10:00-14:00\"", "      sa: \"10:00-14:00\"")
    r = env.ivr("check", "--no-render")
    assert r.code == 1
    assert len(r.out.strip().splitlines()) == 3
    assert "3 problems found" in r.err


def test_check_names_a_single_file(env: Env) -> None:
    r = env.ivr("check", "--no-render", str(env.flows / "survey.yaml"))
    # Alone, the survey flow is not routed anywhere: the missing default is reported against it.
    assert r.code == 1 and "no flow is the default" in r.out


def test_bad_config_is_reported_with_position(env: Env) -> None:
    env.config.write_text("site: {id: x, timezone: Mars/Base}\nsip: {listen: nope}\nflow_dir: x\n")
    r = env.ivr("check")
    assert r.code == 1
    assert f"{env.config}:1:26: unknown time zone 'Mars/Base'" not in r.err  # schema first: unknown key wins
    assert f"{env.config}:3:1: unknown key 'flow_dir'" in r.err
    env.config.write_text("site: {id: x, timezone: Mars/Base}\nsip: {listen: nope}\n")
    r = env.ivr("check")
    assert f"{env.config}:1:25: unknown time zone 'Mars/Base'" in r.err
    assert f"{env.config}:2:15: listen is host:port" in r.err
