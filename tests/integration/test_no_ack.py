"""A 200 OK never ACKed (a caller's side that lost it, a broken NAT): the box ends the call at Timer H with
its BYE, the outcome ``no_ack``, and ``sip.ended`` agreeing — not a flow run on to the RTP timeout with a
caller who never got the answer (issue 15 defect 9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration.appliance import run_appliance
from tests.integration.scenarios import HEAD, _request, sdp_offer
from tests.integration.test_calls import events_of, last_call, sipp

NO_ACK = (HEAD.format(name="answered, never ACKed")
          + '  <send retrans="500">\n    <![CDATA[\n\n'
          + _request("INVITE", 1, to_tag=False, body=sdp_offer(True), ctype="application/sdp")
          + "\n    ]]>\n  </send>\n"
          '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
          '  <recv response="200"/>\n'
          '  <recv request="BYE" timeout="60000"/>\n  <send>\n    <![CDATA[\n\n'
          "      SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n      [last_To:]\n"
          "      [last_Call-ID:]\n      [last_CSeq:]\n      Content-Length: 0\n\n    ]]>\n  </send>\n"
          "</scenario>\n")


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    text = env.config.read_text(encoding="utf-8")
    env.config.write_text(text + "calls: {rtp_timeout_seconds: 120}\n", encoding="utf-8")  # not the RTP timeout
    yield from run_appliance(env)


def test_an_answer_never_acked_ends_at_timer_h(appliance: tuple[Env, int, Path]) -> None:
    env, port, _ = appliance
    sipp(NO_ACK, port, env.root, timeout=90)
    call = last_call(env)
    assert call["outcome"] == "no_ack", call
    ended = [e.data for e in events_of(env, str(call["call_id"])) if e.type == "sip.ended"]
    assert ended == [{"reason": "no ACK", "by": "ivr"}], ended
