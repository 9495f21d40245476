"""Pure tests of ivr.proto.ami: framing, partial reads, garbage, repeated keys, serialization, correlation."""

from __future__ import annotations

import hashlib
import random

import pytest

from ivr.proto.ami import (
    MAX_LINE,
    ActionCorrelator,
    AmiAction,
    AmiBanner,
    AmiEvent,
    AmiMessage,
    AmiParser,
    AmiResponse,
    event,
    login_key,
    response,
    serialize_action,
)
from tests.ami.peer import FIXTURES, load_sections, transcript

SECTIONS = [
    ("login.txt", "challenge"),
    ("login.txt", "login_ok"),
    ("actions.txt", "originate_response"),
    ("queuestatus.txt", "queuestatus"),
    ("queuesummary.txt", "queuesummary"),
    ("coreshowchannels.txt", "coreshowchannels"),
    ("queue_events.txt", "events"),
]


def wire(name: str, section: str, newline: str = "\r\n") -> bytes:
    text = load_sections(name)[section].replace("${ActionID}", "42")
    return text.replace("\n", newline).encode()


def parse_all(data: bytes, chunks: list[int] | None = None, banner: bool = False) -> list[object]:
    parser = AmiParser(expect_banner=banner)
    out: list[object] = []
    if chunks is None:
        out.extend(parser.feed(data))
    else:
        pos = 0
        for size in chunks:
            out.extend(parser.feed(data[pos : pos + size]))
            pos += size
        out.extend(parser.feed(data[pos:]))
    return out


def test_banner_then_messages() -> None:
    data = b"Asterisk Call Manager/5.0.2\r\n" + wire("login.txt", "challenge")
    out = parse_all(data, banner=True)
    assert out[0] == AmiBanner("Asterisk Call Manager", "5.0.2")
    assert isinstance(out[1], AmiResponse)
    assert out[1].get("challenge") == "${Challenge}"  # keys are case-insensitive


def test_no_banner_is_read_as_messages() -> None:
    parser = AmiParser()
    out = parser.feed(b"Response: Success\r\nActionID: 1\r\n\r\n")
    assert parser.banner is None
    assert [type(m) for m in out] == [AmiResponse]


@pytest.mark.parametrize("name,section", SECTIONS)
def test_every_split_point_gives_the_same_messages(name: str, section: str) -> None:
    data = wire(name, section)
    whole = parse_all(data)
    assert whole and all(isinstance(m, AmiMessage) for m in whole)
    assert parse_all(data, [1] * len(data)) == whole  # byte by byte, CRLF split too
    rng = random.Random(name + section)
    for _ in range(20):
        assert parse_all(data, [rng.randint(1, 40) for _ in range(len(data) // 10)]) == whole


@pytest.mark.parametrize("name,section", SECTIONS)
def test_bare_lf_reads_like_crlf(name: str, section: str) -> None:
    assert parse_all(wire(name, section, "\n")) == parse_all(wire(name, section))


@pytest.mark.parametrize("name,section", SECTIONS)
def test_round_trip_is_byte_exact(name: str, section: str) -> None:
    data = wire(name, section)
    msgs = parse_all(data)
    # Asterisk writes an empty value as "Key: " (astman_append "%s: %s\r\n"); the fixtures trim that space.
    assert b"".join(m.serialize() for m in msgs if isinstance(m, AmiMessage)) == data.replace(b":\r\n", b": \r\n")


def test_repeated_keys_are_all_kept() -> None:
    data = (
        b"Event: Newchannel\r\nChannel: PJSIP/1-1\r\nChanVariable: CALLBACK_ID=cb-7\r\n"
        b"ChanVariable(PJSIP/1-1): QUEUE_PRIO=5\r\nVariable: A=1\r\nVariable: B=x=y\r\n\r\n"
    )
    (msg,) = parse_all(data)
    assert isinstance(msg, AmiEvent)
    assert msg.get_all("Variable") == ["A=1", "B=x=y"]
    assert msg.variables() == {"CALLBACK_ID": "cb-7", "QUEUE_PRIO": "5", "A": "1", "B": "x=y"}


def test_getvar_answer_is_not_a_variable_line() -> None:
    (msg,) = parse_all(b"Response: Success\r\nActionID: 3\r\nVariable: CALLBACK_ID\r\nValue: cb-7\r\n\r\n")
    assert isinstance(msg, AmiResponse) and msg.variables() == {}
    assert msg["Value"] == "cb-7"


def test_legacy_follows_output_keeps_blank_lines() -> None:
    data = (
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 9\r\n"
        b"Name/username   Host\r\n\r\nUptime: 10s\r\n--END COMMAND--\r\n\r\n"
        b"Event: After\r\n\r\n"
    )
    out = parse_all(data)
    assert len(out) == 2
    follows = out[0]
    assert isinstance(follows, AmiResponse) and follows.status == "Follows"
    assert follows.action_id == "9"
    assert follows.output == ("Name/username   Host", "", "Uptime: 10s")
    assert isinstance(out[1], AmiEvent) and out[1].name == "After"
    assert parse_all(follows.serialize()) == [follows]


def test_garbage_is_survived_and_counted() -> None:
    data = (FIXTURES / "garbage.bin.txt").read_bytes().split(b"## garbage\n", 1)[1]
    data = b"\x00\xff\xfe binary\r\n\r\n" + data + b"\r\n"
    parser = AmiParser(expect_banner=False)
    out = parser.feed(data)
    assert [m.name for m in out if isinstance(m, AmiMessage)] == ["Success", "Newchannel"]
    ev = out[-1]
    assert isinstance(ev, AmiEvent)
    assert ev.unparsed == (": no key here", "Bad Key With Spaces: x")
    assert ev.get("Uniqueid") == "1700000999.1"
    assert parser.errors == 3  # binary block, the two colon-less lines, the event with a bad line
    # and the next good message still parses
    assert parser.feed(b"Response: Success\r\nActionID: 2\r\n\r\n")[0].name == "Success"  # type: ignore[union-attr]


def test_overlong_line_is_cut_and_parsing_goes_on() -> None:
    parser = AmiParser(expect_banner=False)
    assert parser.feed(b"Event: Big\r\nData: " + b"x" * (MAX_LINE + 10)) == []
    assert parser.feed(b"y" * 100 + b"\r\n\r\nResponse: Success\r\nActionID: 1\r\n\r\n") == [
        AmiEvent((("Event", "Big"),)),  # the cut line is gone, the rest of its message kept
        AmiResponse((("Response", "Success"), ("ActionID", "1"))),
    ]
    assert parser.errors >= 1


def test_serialize_action_with_variables_and_booleans() -> None:
    data = serialize_action(
        "Originate", "a-1", {"Channel": "PJSIP/100", "Async": True, "CallerID": None}, {"CALLBACK_ID": "cb-1"}
    )
    assert data == (
        b"Action: Originate\r\nActionID: a-1\r\nChannel: PJSIP/100\r\nAsync: true\r\nVariable: CALLBACK_ID=cb-1\r\n\r\n"
    )
    (parsed,) = AmiParser(expect_banner=False).feed(data)
    assert isinstance(parsed, AmiAction) and parsed.serialize() == data


def test_serialize_refuses_line_breaks() -> None:
    with pytest.raises(ValueError, match="line break"):
        serialize_action("Setvar", "1", {"Value": "x\r\nAction: Hangup"})


def test_login_key_is_md5_of_challenge_and_secret() -> None:
    assert login_key("840415273", "s3cret") == hashlib.md5(b"840415273s3cret").hexdigest()
    assert len(login_key("1", "2")) == 32


# -- correlation -----------------------------------------------------------------------------------------


def test_list_completes_at_complete_event_with_unrelated_events_interleaved() -> None:
    c = ActionCorrelator()
    c.expect("q1", "QueueStatus", list_events=True)
    msgs = transcript("queuestatus.txt", "queuestatus", ActionID="q1")
    unrelated = [event("Newchannel", {"Channel": "PJSIP/9"}), event("Hangup", {"Channel": "PJSIP/8"}, "other")]
    stream = [msgs[0], msgs[1], unrelated[0], msgs[2], unrelated[1], *msgs[3:]]
    passed, done = [], []
    for m in stream:
        r = c.feed(m)
        if not r.consumed:
            passed.append(m)
        if r.done:
            done.append(r.done)
    assert passed == unrelated
    assert len(done) == 1 and done[0].action == "QueueStatus"
    assert len(done[0].events) == 9
    assert done[0].final is not None and done[0].final.name == "QueueStatusComplete"
    assert c.pending() == {}


def test_error_ends_a_list_at_once_and_events_may_overtake_their_response() -> None:
    c = ActionCorrelator()
    c.expect("l", "CoreShowChannels", list_events=True)
    c.expect("e", "QueueStatus", list_events=True)
    assert c.feed(event("CoreShowChannel", {"Channel": "X"}, "l")).consumed  # before its response
    r = c.feed(response("Error", "e", {"Message": "Permission denied"}))
    assert r.done is not None and r.done.response.is_error
    assert c.feed(response("Success", "l", {"EventList": "start"})).done is None
    r = c.feed(event("CoreShowChannelsComplete", {"EventList": "Complete"}, "l"))
    assert r.done is not None and [e.get("Channel") for e in r.done.events] == ["X"]


def test_final_event_for_async_originate() -> None:
    c = ActionCorrelator()
    c.expect("o", "Originate", final_event="OriginateResponse")
    assert c.feed(response("Success", "o", {"Message": "Originate successfully queued"})).done is None
    r = c.feed(event("OriginateResponse", {"Response": "Failure", "Reason": "5"}, "o"))
    assert r.done is not None and r.done.final is not None and r.done.final["Reason"] == "5"


def test_unknown_and_duplicate_responses_pass_through() -> None:
    c = ActionCorrelator()
    c.expect("p", "Ping")
    assert not c.feed(response("Success", "zzz")).consumed
    assert c.feed(response("Success", "p")).done is not None
    assert not c.feed(response("Success", "p")).consumed
    with pytest.raises(ValueError):
        c.expect("x", "Ping")
        c.expect("x", "Ping")
