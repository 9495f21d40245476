"""SRTP offered in the 200 of a late-offer INVITE (one without SDP): with ``sip.srtp: required`` the 200's offer
is RTP/SAVP with our ``a=crypto`` and the ACK's answer with its key is taken; with ``optional`` the offer is
RTP/AVP with ``a=crypto`` and a plain answer gives plain RTP. Before, a late-offer call was refused (488) where
SRTP was required and never got SRTP where it was optional."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.integration.appliance import run_appliance
from tests.integration.test_calls import last_call, sipp

THEIR_KEY = "WnD7c1ksDulZ8fW9oLkMRBZlrJcCa1DqQ4o3d9bz"  # 30 bytes, base64: the caller's SDES key


def late_offer(proto: str, crypto: bool) -> str:
    offer_check = "RTP/SAVP" if proto == "RTP/SAVP" else "RTP/AVP"
    answer_crypto = f"      a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}\n" if crypto else ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="late offer with SRTP">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15555550142@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true">
    <action>
      <ereg regexp="m=audio [0-9]+ {offer_check} " search_in="body" check_it="true" assign_to="m"/>
      <ereg regexp="a=crypto:[0-9]+ AES_CM_128_HMAC_SHA1_80 inline:" search_in="body" check_it="true"
            assign_to="c"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15555550142@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] {proto} 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
{answer_crypto}
    ]]>
  </send>
  <pause milliseconds="1500"/>
  <send retrans="500">
    <![CDATA[

      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15555550142@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <Reference variables="m,c"/>
</scenario>
"""


@pytest.mark.parametrize(("mode", "proto", "crypto", "suite"), [
    ("required", "RTP/SAVP", True, "AES_CM_128_HMAC_SHA1_80"),
    ("optional", "RTP/AVP", False, None),
])
def test_a_late_offer_call_gets_srtp_in_our_offer(env: Env, mode: str, proto: str, crypto: bool,
                                                  suite: str | None) -> None:
    text = env.config.read_text().replace("rtp_ports: 31000-31999}", f"rtp_ports: 31000-31999, srtp: {mode}}}", 1)
    assert f"srtp: {mode}" in text
    env.config.write_text(text)
    for env_, port, _log in run_appliance(env):
        sipp(late_offer(proto, crypto), port, env_.root)
        call = last_call(env_)
    events = asyncio.run(read_events(Path(env.state) / "ivr.db", str(call["call_id"])))
    answered = next(e for e in events if e.type == "sip.answered")
    assert answered.data["offer"] == "late" and answered.data["srtp"] == suite, answered.data
