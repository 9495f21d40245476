"""`ivr check` on mistakes admins make (issue #18): each is reported at the right file:line:column with a
message that says what to do, and nothing else is reported beside it (no knock-on errors)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.test_check import at, edit

TAIL = """
  a: {hangup: true}
  b: {hangup: true}
"""


def write(env: Env, name: str, text: str) -> Path:
    path = env.flows / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def menu_flow(options: str, extra: str = "") -> str:
    """A flow ``keys`` (not routed anywhere) with one menu whose options are ``options``."""
    opts = textwrap.indent(textwrap.dedent(options).strip("\n"), " " * 8)
    head = f"flow: keys\nstart: m\nnodes:\n  m:\n    menu:\n      prompt: goodbye\n{extra}"
    return f"{head}      options:\n{opts}\n{TAIL}"


def lines_of(env: Env, *args: str) -> tuple[int, list[str]]:
    r = env.ivr("check", "--no-render", *args)
    return r.code, r.out.strip().splitlines()


def assert_reported(lines: list[str], where: str, message: str) -> None:
    assert any(line.startswith(f"{where}: ") and message in line for line in lines), \
        f"expected {where}: …{message}…\ngot:\n" + "\n".join(lines)


# -- 13: a key that is the start of a longer key --------------------------------------------------

def test_prefix_key_is_a_warning_at_the_longer_key(env: Env) -> None:
    path = write(env, "keys.yaml", menu_flow("1: a\n11: b\n"))
    code, lines = lines_of(env)
    assert code == 0  # the inter-digit pause tells them apart: a warning, not an error
    assert_reported(lines, at(path, "11:"),
                    "warning: key '11' starts with key '1': a caller who wants 1 waits inter_digit_timeout (2 s)")
    assert lines[-1].startswith("ok: 8 flows") and lines[-1].endswith("1 warning")


# -- 14: node ids ---------------------------------------------------------------------------------

def test_node_id_with_a_space_is_an_error_at_the_node(env: Env) -> None:
    path = write(env, "keys.yaml", """
        flow: keys
        start: main menu
        nodes:
          main menu: {hangup: true}
        """)
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, "main menu:"),
                    "node id 'main menu' is not a valid name: use letters, digits, _ and - "
                    "(^[A-Za-z_][A-Za-z0-9_-]*$)")
    assert len(lines) == 1


# -- 15: anyOf / oneOf report the closest branch ---------------------------------------------------

def test_bad_hour_in_a_time_range_names_the_hour(env: Env) -> None:
    path = env.flows / "hours.yaml"
    edit(path, 'sat: "10:00-14:00"', 'sat: "25:00-26:00"')
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, '"25:00'), "hours/office/weekly/sat: '25:00-26:00' is not a time range: "
                    "hour 25 is not an hour (00-23; 24:00 only as an end)")
    assert len(lines) == 1


def test_confirm_keys_as_numbers_say_to_quote_them(env: Env) -> None:
    path = env.flows / "billing.yaml"
    text = path.read_text(encoding="utf-8")
    assert "confirm: true" in text
    edit(path, "confirm: true", "confirm: {yes: 1, no: 2}")
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, "yes: |1"), "confirm/yes: expected string, got int 1 (quote it: \"1\")")
    assert_reported(lines, at(path, "no: |2"), "confirm/no: expected string, got int 2 (quote it: \"2\")")
    assert len(lines) == 2


# -- 16: YAML errors at the right place, and no knock-on errors ------------------------------------

def test_unclosed_quote_is_reported_where_it_opens(env: Env) -> None:
    path = env.flows / "survey.yaml"
    edit(path, '{en: "Thank you for your feedback.",', '{en: "Thank you for your feedback.,')
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, '"Thank you for your'), 'unclosed quote: YAML read "Thank you for your '
                    'feedback., es: " as one text, up to the " meant to open the next one (close this text with ")')
    assert len(lines) == 1


def test_unclosed_quote_in_block_style_is_reported_where_it_opens(env: Env) -> None:
    path = write(env, "keys.yaml", """
        flow: keys
        start: a
        prompts:
          hi: "Hello there
          bye: "Goodbye."
        nodes:
          a: {hangup: bye}
        """)
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, '"Hello'), 'unclosed quote: "Hello there is not closed on its line, so YAML '
                    'read the text on to line 5 as part of it (close it with ")')
    assert len(lines) == 1


def test_impossible_date_is_reported_at_the_date(env: Env) -> None:
    path = env.flows / "hours.yaml"
    edit(path, "      - 2026-12-25\n", "      - 2027-02-30\n")
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, "2027-02-30"), "bad date '2027-02-30': day is out of range for month (YYYY-MM-DD)")
    assert len(lines) == 1


@pytest.mark.parametrize("file", ["hours.yaml", "main.yaml", "billing.yaml", "survey.yaml"])
def test_a_file_that_does_not_parse_causes_no_errors_elsewhere(env: Env, file: str) -> None:
    path = env.flows / file
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\n", "\n  bad: [unclosed\n", 1), encoding="utf-8")
    code, lines = lines_of(env)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"{os.path.relpath(path)}:"), "\n".join(lines)


# -- 17: menu keys as typed -------------------------------------------------------------------------

def test_menu_keys_are_kept_as_typed(env: Env) -> None:
    write(env, "keys.yaml", menu_flow("007: a\n1: b\n"))
    r = env.ivr("simulate", str(env.flows / "keys.yaml"), "--input", "007")
    assert r.code == 0, r.out + r.err
    assert "✓ chose 007 → a" in r.out and "no match" not in r.out


def test_same_key_quoted_and_unquoted_is_a_duplicate_at_the_second(env: Env) -> None:
    path = write(env, "keys.yaml", menu_flow('4: a\n"4": b\n'))
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, '"4":'), "duplicate key '4' (first at line 8)")
    assert len(lines) == 1


def test_zero_and_double_zero_are_two_keys(env: Env) -> None:
    path = write(env, "keys.yaml", menu_flow("0: a\n00: b\n"))
    code, lines = lines_of(env)
    assert code == 0
    assert_reported(lines, at(path, "00:"), "warning: key '00' starts with key '0'")


@pytest.mark.parametrize("key", ["*", "#"])
def test_unquoted_star_and_pound_keys_say_to_quote_them(env: Env, key: str) -> None:
    path = write(env, "keys.yaml", menu_flow(f"1: a\n{key}: b\n"))
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, f"{key}:"), f"quote the key: \"{key}\":")
    assert len(lines) == 1


# -- 18: warnings ------------------------------------------------------------------------------------

def test_oddities_are_warnings_with_positions(env: Env) -> None:
    hours = env.flows / "hours.yaml"
    edit(hours, 'sat: "10:00-14:00"', 'sat: ["09:00-09:00", "10:00-14:00", "13:00-15:00"]\n      sun: "00:00-24:00"')
    path = write(env, "keys.yaml", """
        flow: keys
        start: a
        languages: [en, es]
        prompts:
          hi: {say: {en: Hello, es: Hola}}
          never: {say: {en: Unused, es: Nunca}}
        nodes:
          a:
            set: {lang: fr}
            next: b
          b:
            play: hi
            next: c
          c: {hangup: true}
        """)
    code, lines = lines_of(env)
    assert code == 0, "\n".join(lines)
    assert_reported(lines, at(hours, '"09:00-09:00"'),
                    "warning: range 09:00-09:00 starts and ends at the same time")
    assert_reported(lines, at(hours, '"13:00-15:00"'), "warning: range 13:00-15:00 overlaps 10:00-14:00 on sat")
    assert_reported(lines, at(path, "never:"), "warning: prompt 'never' is never played")
    assert_reported(lines, at(path, "fr}"), "warning: lang 'fr' is not one of this flow's languages (en, es)")
    assert lines[-1].endswith("4 warnings")


def test_warnings_are_shown_beside_errors_and_do_not_count_as_problems(env: Env) -> None:
    write(env, "keys.yaml", menu_flow("1: a\n11: b\n"))
    edit(env.flows / "main.yaml", "        0: operator\n", "        0: operatr\n")
    r = env.ivr("check", "--no-render")
    assert r.code == 1
    assert "warning: key '11'" in r.out and "unknown node 'operatr'" in r.out
    assert "1 problem found (and 1 warning)" in r.err


# -- mistakes admins make: each at its place, with what to do, and nothing else ---------------------

KEYS = """\
flow: keys
start: m
prompts:
  hi: {say: Hello}
nodes:
  m:
    menu:
      prompt: hi
      options:
        1: a
        2: b
  a: {hangup: true}
  b: {hangup: true}
"""

# (what, old text in KEYS → new text, anchor of the error ("|" marks the column), message)
ADMIN = [
    ("option indented out of options", "        2: b", "      2: b", "2: b",
     "unknown key '2': a menu option goes under options:, indented like the other options"),
    ("key indented too deep", "      prompt: hi", "        prompt: hi", "options:",
     "this line does not line up with the keys around it: line 8 starts in column 9, this one in column 7"),
    ("node body not indented", "  a: {hangup: true}", "  a:\n  hangup: true", "hangup: true",
     "'hangup' is an action, but here it is a node id: indent it (and next:, failure:) under the node"),
    ("goto a missing node", "2: b", "2: c", "2: |c", "unknown node 'c' (this flow's nodes: a, b, m)"),
    ("goto a flow", "2: b", "2: billing", "billing", "unknown node 'billing' ('billing' is a flow: to run it, "
     "go to a node with call: billing and next:)"),
    ("typo in an option name", "      prompt: hi", "      promt: hi", "promt",
     "unknown key 'promt' — did you mean 'prompt'? (allowed: barge_in,"),
    ("typo in next", "  a: {hangup: true}", "  a: {play: hi, nxt: b}", "nxt",
     "unknown key 'nxt' — did you mean 'next'?"),
    ("wrong type", "      prompt: hi", "      prompt: hi\n      timeout: five", "five",
     "nodes/m/menu/timeout: expected number, got str 'five'"),
    ("missing required field", "  a: {hangup: true}", "  a:\n    collect: {prompt: hi}\n    next: b", "collect:",
     "nodes/a/collect: 'into' is required"),
    ("sub-flow that does not exist", "  a: {hangup: true}", "  a:\n    call: biling\n    next: b", "biling",
     "unknown flow 'biling' (did you mean 'billing'?)"),
    ("unknown prompt", "prompt: hi", "prompt: hello", "hello", "unknown prompt 'hello' (define it under prompts:)"),
    ("bad time zone", "start: m", "timezone: Europe/Pariss\nstart: m", "Europe/Pariss",
     "unknown time zone 'Europe/Pariss' (use an IANA name such as 'America/New_York')"),
    ("schedule never defined", "  a: {hangup: true}", "  a: {hours: {schedule: weekend, open: b, closed: b}}",
     "weekend", "unknown hours schedule 'weekend' (define it under hours: in any flow file; schedules: office, "
     "support)"),
    ("sub-flow named like no flow", "  a: {hangup: true}", "  a:\n    call: payments\n    next: b", "payments",
     "unknown flow 'payments' (no file says flow: payments; flows: account, billing, callback, keys, main, "
     "queue_exit, "
     "survey, voice)"),
    ("menu with no options", "      options:\n        1: a\n        2: b\n", "      options: {}\n", "{}",
     "nodes/m/menu/options: is empty: give at least one entry"),
    ("options with nothing under them", "      options:\n        1: a\n        2: b\n", "      options:\n",
     "options:", "nodes/m/menu/options: nothing is given here; if its content is on the lines "
     "below, indent those lines under it"),
    ("collect min above max", "  a: {hangup: true}",
     "  a:\n    collect: {prompt: hi, into: acct, min_digits: 8, max_digits: 4}\n    next: b", "8,",
     "min_digits (8) is more than max_digits (4)"),
    ("duplicate node id", "  b: {hangup: true}\n", "  b: {hangup: true}\n  a: {hangup: false}\n", "a: {hangup: f",
     "YAML syntax error: duplicate key 'a' (first at line 12): a key may appear once in a mapping"),
    ("tab indentation", "  a: {hangup: true}", "\ta: {hangup: true}", "\ta:",
     "YAML syntax error: a tab: YAML indents with spaces only (replace the tab with spaces)"),
    ("start names a missing node", "start: m", "start: main", "main", "unknown node 'main' (this flow's nodes:"),
    ("node without an action", "  a: {hangup: true}", "  a: {next: b}", "a: {next",
     "node 'a' has no action (one of: play, menu,"),
    ("flow name with a space", "flow: keys", "flow: my keys", "my keys",
     "flow: 'my keys' is not a valid name: use letters, digits, _ and -, starting with a letter"),
    ("nodes without flow:", "flow: keys\n", "", "start",
     "top level: nodes: needs flow: too (a flow has flow:, start:, nodes:)"),
    ("yes for true", "  a: {hangup: true}", "  a:\n    collect: {prompt: hi, into: acct, confirm: yes}\n    next: b",
     "yes}", "nodes/a/collect/confirm: expected boolean, got str 'yes' (write true or false)"),
    ("key without a colon", "  a: {hangup: true}", "  a\n    hangup: true", "  |a\n",
     "YAML syntax error: 'a' has no ':' after it (write a:"),
    ("keywords not a list", "        1: a", "        1: {goto: a, say: billing}", "billing}",
     "nodes/m/menu/options/1/say: expected array, got str 'billing' (write it as a list: [billing])"),
    ("seconds with a unit", "      prompt: hi", "      prompt: hi\n      timeout: 5s", "5s",
     "nodes/m/menu/timeout: expected number, got str '5s' (write just the number: 5)"),
    ("next inside the action", "  a: {hangup: true}", "  a:\n    play: {prompt: hi, next: b}", "next",
     "unknown key 'next': next: belongs to the node, beside its action, not inside it (allowed: barge_in, prompt)"),
    ("transfer to a bare extension", "  a: {hangup: true}", "  a: {transfer: 2000}", "2000",
     "nodes/a/transfer: expected object, got int 2000 (write transfer: {extension: 2000} or"),
    ("unquoted # as a value", "  a: {hangup: true}",
     "  a:\n    collect:\n      prompt: hi\n      into: acct\n      terminator: #\n    next: b", "terminator",
     "nodes/a/collect/terminator: nothing is given here: '#' starts a YAML comment (quote it: \"#\")"),
    ("unquoted * as a value", "  a: {hangup: true}",
     "  a:\n    collect: {prompt: hi, into: acct, terminator: *}\n    next: b", "*}",
     "YAML syntax error: '*' starts a YAML alias (a reference to an &anchor): quote it: \"*\""),
    ("next for goto in an option", "        1: a", "        1: {next: a}", "next",
     "unknown key 'next' — did you mean 'goto'? (allowed: goto, say)"),
    ("typo in an action", "  a: {hangup: true}", "  a: {hangpu: true}", "hangpu",
     "unknown key 'hangpu' — did you mean 'hangup'?"),
    ("next dedented to node ids", "  a: {hangup: true}", "  a:\n    play: hi\n  next: b", "next",
     "'next' is a node's setting, but here it is a node id: indent it under the node it belongs to"),
    ("no space after a colon", "  a: {hangup: true}", "  a:\n    goto:b", "goto:b",
     "nodes/a: expected object, got str 'goto:b' (put a space after the colon: goto: b)"),
    ("node given as a word", "  a: {hangup: true}", "  a: hangup", "hangup",
     "nodes/a: expected object, got str 'hangup' (a node is a mapping with one action"),
    ("language in capitals", "start: m", "languages: [EN]\nstart: m", "EN",
     "languages/0: 'EN' is not a language code: use a lowercase ISO 639 code such as en, es or ko"),
    ("number where a node goes", "2: b", "2: 3", "2: |3", "nodes/m/menu/options/2: expected string, got int 3 "
     "(quote it: \"3\")"),
]


@pytest.mark.parametrize("case", ADMIN, ids=[c[0] for c in ADMIN])
def test_admin_mistake_is_reported_alone_at_its_place(env: Env, case: tuple) -> None:
    _, old, new, anchor, message = case
    assert KEYS.count(old) == 1, old
    path = env.flows / "keys.yaml"
    path.write_text(KEYS.replace(old, new), encoding="utf-8")
    code, lines = lines_of(env)
    assert code == 1
    if anchor.startswith("  |a\n"):  # a bare key: its line, not the first "a" in the file
        anchor = "  |a"
        text = path.read_text(encoding="utf-8").splitlines()
        where = f"{os.path.relpath(path)}:{text.index('  a') + 1}:3"
    else:
        where = at(path, anchor)
    assert_reported(lines, where, message)
    assert len(lines) == 1, "\n".join(lines)


@pytest.mark.parametrize("text", ["", "# TODO: the holiday menu\n"], ids=["empty", "only a comment"])
def test_empty_file_says_what_to_do(env: Env, text: str) -> None:
    path = write(env, "keys.yaml", text)
    code, lines = lines_of(env)
    assert code == 1
    assert lines == [f"{os.path.relpath(path)}:1:1: file is empty (or only comments): write a flow "
                     "(flow:, start:, nodes:) or hours:, or delete the file"]


@pytest.mark.parametrize("old,new,anchor,message", [
    ("      - 2026-12-25\n", "      - 12/25/2026\n", "12/25/2026",
     "hours/support/holidays/0: '12/25/2026' is not a date: write YYYY-MM-DD, e.g. 2026-12-25"),
    ('sat: "10:00-14:00"', 'sat: "9:00-14:00"', '"9:00',
     "hours/office/weekly/sat: '9:00-14:00' is not a time range: write hours and minutes with two digits each"),
    ('      sat: "10:00-14:00"', '      saturday: "10:00-14:00"', "saturday",
     "bad day 'saturday' (use mon..sun, ranges like mon-fri, lists like sat,sun)"),
    ('sat: "10:00-14:00"', 'sat: "22:00-24:30"', '"22:00',
     "hours/office/weekly/sat: '22:00-24:30' is not a time range: 24:30 is past the end of the day (24:00 is the "
     "latest end)"),
    ('sat: "10:00-14:00"', 'sat: "10:00-13:75"', '"10:00-13',
     "hours/office/weekly/sat: '10:00-13:75' is not a time range: minute 75 is not a minute (00-59)"),
], ids=["US date", "one-digit hour", "day's full name", "past 24:00", "minute 75"])
def test_hours_mistakes(env: Env, old: str, new: str, anchor: str, message: str) -> None:
    path = env.flows / "hours.yaml"
    edit(path, old, new)
    code, lines = lines_of(env)
    assert code == 1
    assert_reported(lines, at(path, anchor), message)
    assert len(lines) == 1, "\n".join(lines)


def test_dialed_numbers_keep_their_plus_and_zeros(env: Env) -> None:
    from ivr.flows.loader import load

    write(env, "keys.yaml", KEYS.replace("start: m", "numbers: [+15550199, 0100]\nstart: m"))
    loaded = load([env.flows / "keys.yaml"])
    assert loaded.flows["keys"].numbers == ("+15550199", "0100")


def test_anchors_and_merge_keys_still_work(env: Env) -> None:
    write(env, "keys.yaml", """
        flow: keys
        start: m
        prompts:
          hi: {say: Hello}
        nodes:
          m:
            menu: &menu
              prompt: hi
              options: {1: a, 2: b}
          m2:
            menu:
              <<: *menu
              timeout: 3
          a: {goto: m2}
          b: {hangup: true}
        """)
    code, lines = lines_of(env)
    assert code == 0, "\n".join(lines)
