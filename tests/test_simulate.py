"""`ivr simulate` drives every sample flow through each branch; each run is in `ivr calls --json`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Env

OPEN = "2026-12-01T10:00"  # a Tuesday morning in New York


def simulate(env: Env, *args: str) -> dict[str, Any]:
    r = env.ivr("simulate", *args, "--json")
    assert r.code == 0, r.err
    result = r.json()
    recorded = {c["call_id"]: c for c in env.calls(simulated=True)}[result["call_id"]]
    assert recorded["path"] == result["path"] and recorded["outcome"] == result["outcome"]
    assert recorded["flow_version"] == result["version"] and recorded["ended_at"]
    return result


def test_main_menu_to_billing_with_confirm_and_survey(env: Env) -> None:
    r = simulate(env, "main", "--at", OPEN, "-i", "1", "-i", "1234567#", "-i", "1", "-i", "1", "-i", "4",
                 "-i", "10")
    assert r["outcome"] == "hangup" and r["detail"] == "goodbye"
    assert r["path"] == ["greet", "say_morning", "check_hours", "main_menu", "billing", "billing.account",
                         "billing.billing_menu", "billing.online", "billing.done", "survey", "survey.csat",
                         "survey.nps", "survey.back", "goodbye"]
    assert r["variables"]["account"] == "1234567"
    assert r["variables"]["csat"] == 4 and r["variables"]["nps"] == 10
    assert "  ♪ You entered" in r["transcript"]
    readback = r["transcript"][r["transcript"].index("  ♪ You entered") + 1:][:7]
    assert readback == [f"  ♪ {d}" for d in "1234567"]


def test_no_input_retries_then_failure_target(env: Env) -> None:
    r = simulate(env, "main", "--at", OPEN, "-i", "silence", "-i", "silence", "-i", "silence")
    assert r["outcome"] == "transferred" and r["detail"] == "extension 2000"
    assert r["path"][-2:] == ["main_menu", "operator"]
    text = "\n".join(r["transcript"])
    assert "no input (1 of 3)" in text and "no input (3 of 3)" in text
    # First a long greeting; after a timeout the apology, then the short re-prompt.
    assert text.count("For billing, press 1. For technical support, press 2.") == 1
    assert text.count("Sorry, I didn't hear anything.") == 2
    assert text.count("Press 1 for billing, 2 for support, or 0 for the operator.") == 2


def test_no_match_counted_separately_from_no_input(env: Env) -> None:
    r = simulate(env, "main", "--at", OPEN, "-i", "7", "-i", "silence", "-i", "8", "-i", "2")
    assert r["outcome"] == "queued" and r["detail"] == "support"
    text = "\n".join(r["transcript"])
    assert "no match for '7' (1 of 3)" in text and "no input (1 of 3)" in text
    assert "no match for '8' (2 of 3)" in text


SPOKEN_MENU = """
flow: spoken
numbers: ["600"]
start: menu
prompts:
  menu: "Say billing or support."
  billing: "Billing."
  support: "Support."
nodes:
  menu:
    menu:
      prompt: menu
      options:
        1: {goto: billing, say: [billing, invoice]}
        2: {goto: support, say: [support, technical support]}
  billing:
    hangup: billing
  support:
    hangup: support
"""


def test_speech_chooses_option_and_low_confidence_is_no_match(env: Env) -> None:
    """A menu with English keywords (for a box with an English model; the samples listen only in Korean)."""
    (env.flows / "spoken.yaml").write_text(SPOKEN_MENU, encoding="utf-8")
    r = simulate(env, "spoken", "-i", "say:billing@0.2", "-i", "say:I need technical support please")
    assert r["outcome"] == "hangup" and r["path"] == ["menu", "support"]
    assert "no match for 'billing' (1 of 3)" in "\n".join(r["transcript"])


def test_hours_closed_holiday_override_and_emergency(env: Env) -> None:
    assert simulate(env, "main", "--at", "2026-12-01T19:30")["path"][-1] == "closed"  # after hours
    assert simulate(env, "main", "--at", "2026-12-06T11:00")["path"][-1] == "closed"  # Sunday
    assert simulate(env, "main", "--at", "2026-12-25T10:00")["path"][-1] == "holiday"
    assert simulate(env, "main", "--at", "2026-12-24T13:00")["path"][-1] == "closed"  # short day
    assert simulate(env, "main", "--at", "2026-12-24T11:00", "-i", "hangup")["path"][-1] == "main_menu"
    assert simulate(env, "main", "--at", "2026-12-31T10:00")["path"][-1] == "closed"  # override: closed
    assert env.ivr("closed", "office", "on", "--reason", "storm").code == 0
    r = simulate(env, "main", "--at", OPEN)
    assert r["path"][-1] == "closed"
    assert any("emergency switch" in line for line in r["transcript"])
    env.ivr("closed", "office", "off")
    assert simulate(env, "main", "--at", OPEN, "-i", "hangup")["path"][-1] == "main_menu"


NIGHT_FLOW = """
flow: night
numbers: ["200"]
start: when
prompts:
  open: "The night desk is open."
  closed: "The night desk is closed."
nodes:
  when:
    hours: {schedule: support, open: is_open, closed: is_closed}
  is_open:
    hangup: open
  is_closed:
    hangup: closed
"""


@pytest.mark.parametrize(("at", "last"), [
    ("2026-12-05T19:59", "is_closed"),  # Saturday before the late shift
    ("2026-12-05T23:00", "is_open"),
    ("2026-12-06T01:30", "is_open"),  # Sunday morning: still Saturday's shift
    ("2026-12-06T02:00", "is_closed"),
    ("2026-12-01T12:30", "is_closed"),  # weekday lunch gap
    ("2026-12-01T13:00", "is_open"),
])
def test_schedule_range_past_midnight_and_gaps(env: Env, at: str, last: str) -> None:
    (env.flows / "night.yaml").write_text(NIGHT_FLOW, encoding="utf-8")
    r = simulate(env, "night", "--at", at)
    assert r["path"][-1] == last


def test_collect_invalid_then_not_confirmed_then_ok(env: Env) -> None:
    r = simulate(env, "billing", "-i", "123#", "-i", "555123#", "-i", "2", "-i", "5551234#", "-i", "1", "-i", "2")
    text = "\n".join(r["transcript"])
    assert "invalid entry '123' (1 of 3)" in text  # too short
    assert "not confirmed 555123" in text
    assert r["variables"]["account"] == "5551234"
    assert r["path"] == ["account", "billing_menu", "payments"]
    assert r["outcome"] == "transferred" and r["detail"] == "queue payments"


def test_collect_pattern_rejects_entry(env: Env) -> None:
    r = simulate(env, "billing", "-i", "0123456#", "-i", "hangup")
    assert "invalid entry '0123456' (1 of 3)" in "\n".join(r["transcript"])  # no leading zero allowed


def test_collect_max_attempts_goes_to_failure(env: Env) -> None:
    r = simulate(env, "billing", "-i", "silence", "-i", "12#", "-i", "silence")
    assert "no valid entry in 3 attempts" in "\n".join(r["transcript"])
    assert r["path"][-1] == "payments"  # the node's failure target


def test_inter_digit_timeout_ends_entry(env: Env) -> None:
    # "555" then a pause: the entry is 3 digits, too short; then a full one ended by max_digits (10).
    r = simulate(env, "billing", "-i", "555", "-i", "1234567890", "-i", "1", "-i", "1")
    assert "invalid entry '555'" in "\n".join(r["transcript"])
    assert r["variables"]["account"] == "1234567890"


def test_survey_invalid_and_skipped(env: Env) -> None:
    r = simulate(env, "survey", "-i", "9", "-i", "3", "-i", "silence", "-i", "silence")
    assert r["variables"]["csat"] == 3 and r["variables"].get("nps") is None
    text = "\n".join(r["transcript"])
    assert text.count("Please press a number in the range.") == 1  # 9 is outside CSAT's 1-5
    assert r["outcome"] == "hangup"


def test_spanish_switches_prompts(env: Env) -> None:
    r = simulate(env, "main", "--at", OPEN, "-i", "9", "-i", "0")
    assert r["variables"]["lang"] == "es"
    assert "  ♪ Le comunicamos con la operadora." in r["transcript"]


def test_vip_caller_routed_by_condition(env: Env) -> None:
    r = simulate(env, "main", "--caller", "+15550101234")
    assert r["path"] == ["greet", "vip", "vip_transfer"]
    assert r["outcome"] == "transferred" and r["detail"] == "extension 2100"


def test_afternoon_greeting_uses_time_condition(env: Env) -> None:
    r = simulate(env, "main", "--at", "2026-12-01T15:00", "-i", "hangup")
    assert r["path"][:2] == ["greet", "say_hello"]
    assert r["outcome"] == "caller_hangup" and r["detail"] == "main_menu"


def test_typed_ahead_keys_skip_the_prompt(env: Env) -> None:
    # Keys typed in one burst during the greeting: "0" chooses the operator without hearing the menu.
    r = simulate(env, "billing", "-i", "1234567#1", "-i", "2")
    text = "\n".join(r["transcript"])
    assert "prompt skipped: keys typed ahead" in text
    assert r["variables"]["account"] == "1234567"


@pytest.mark.parametrize("flow", ["main", "billing", "survey"])
def test_every_sample_flow_hangs_up_cleanly_when_caller_leaves(env: Env, flow: str) -> None:
    r = simulate(env, flow, "--at", OPEN, "-i", "hangup")
    assert r["outcome"] == "caller_hangup"


def test_flow_file_path_and_dialed_routing(env: Env) -> None:
    r = simulate(env, str(env.flows / "survey.yaml"), "-i", "5", "-i", "silence", "-i", "silence")
    assert r["flow"] == "survey" and r["variables"]["csat"] == 5


def test_unknown_flow_is_a_clear_error(env: Env) -> None:
    r = env.ivr("simulate", "mian")
    assert r.code == 2 and "unknown flow 'mian'" in r.err
