"""Fuzzing the user agent for stuck calls: mutated but plausible call sequences, an app that answers.

Hypothesis draws sequences of requests a peer could send for a few calls (INVITE, ACK, BYE, CANCEL,
INFO, re-INVITE, OPTIONS, responses to our BYEs), renders each with the To tag the UA gave that call,
then mutates some of them (Content-Length lies, compact, folded and oversized headers, swapped tags,
bad CSeq, truncation, stray bytes). The app answers every IncomingCall the way the daemon could (ring
and answer, answer at once, reject, or leave it to the answer timeout) and every MediaChanged; time
moves only through ``handle_timer``. At the end the app hangs up whatever it still holds and time
runs far past every RFC 3261 timer: every leg must have ended exactly once and nothing may be left
pending (no stuck call, no transaction, no timer).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.sip.lexical import SipParseError
from ivr.sip.message import SipRequest, SipResponse, parse_message
from ivr.sip.ua import UserAgent, UserAgentConfig
from ivr.sip.ua_events import (
    CallConfirmed,
    CallEnded,
    DtmfReceived,
    IncomingCall,
    MediaAnswered,
    MediaChanged,
    OrphanInviteEnded,
)
from ivr.sip.ua_state import LegState

PEER = ("192.0.2.20", 5062)
STRANGER = ("198.51.100.7", 5060)
LOCAL = ("192.0.2.10", 5060)
CALLS = 3
"""Call-IDs the peer uses; few, so that requests keep hitting the same dialogs."""
TIMER_STEPS = 20_000
"""Bound on timer firings in one advance: a timer that never moves on fails instead of hanging."""
FAR = 3600.0

SDP = (
    b"v=0\r\no=alice 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
)
HOLD_SDP = SDP.replace(b"c=IN IP4 192.0.2.20", b"c=IN IP4 0.0.0.0") + b"a=sendonly\r\n"
OUR_SDP = (
    b"v=0\r\no=ivr 77 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=sendrecv\r\n"
)
COMPACT = {"Via": "v", "From": "f", "To": "t", "Call-ID": "i", "Content-Length": "l", "Content-Type": "c",
           "Contact": "m", "Supported": "k"}
BAD_CSEQ = ["CSeq: x INVITE", "CSeq: 4294967296 INVITE", "CSeq: 2 BYE", "CSeq: 3", "CSeq: -1 ACK",
            "CSeq: 0 INVITE", "CSeq: 99999999999999999999 BYE", "CSeq: 1 INVITE\r\nCSeq: 9 BYE"]
PEER_OPS = ["invite", "invite_again", "invite_new_branch", "late_invite", "ack", "ack_new_branch", "bye",
            "cancel", "info", "reinvite", "reinvite_late", "reinvite_hold", "ack_reinvite", "ack_reinvite_sdp",
            "options", "options_in_dialog", "answer_our_request", "register"]


# --------------------------------------------------------------------------------------- the peer


@dataclass
class PeerCall:
    """What the peer knows of one call: its numbering and the To tag the UA answered with."""

    index: int
    to_tag: str | None = None
    cseq: int = 1
    invite_branch: str = ""
    invite_cseq: int = 1
    reinvite_branch: str = ""
    reinvite_cseq: int = 0
    serial: int = 0

    @property
    def call_id(self) -> str:
        return f"fuzz-{self.index}@192.0.2.20"

    @property
    def from_tag(self) -> str:
        return f"peer{self.index}"

    def branch(self) -> str:
        self.serial += 1
        return f"z9hG4bKp{self.index}x{self.serial}"


def render(
    call: PeerCall,
    method: str,
    *,
    branch: str,
    cseq: int,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> bytes:
    lines = [
        f"{method} sip:500@192.0.2.10 SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5062;branch={branch};rport",
        "Max-Forwards: 70",
        f'From: "Fuzz" <sip:+15555550100@192.0.2.20>;tag={call.from_tag}',
        "To: <sip:500@192.0.2.10>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call.call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:fuzz@192.0.2.20:5062>",
        "Record-Route: <sip:192.0.2.30;lr>",
    ]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def respond_to(request: SipRequest, status: int) -> bytes:
    """The peer's response to a request the UA sent (our BYE): headers copied, To tag added."""
    to_value = request.headers.get("To") or ""
    lines = [f"SIP/2.0 {status} Whatever"]
    lines += [f"Via: {v}" for v in request.headers.values("Via")]
    lines += [f"From: {request.headers.get('From')}", f"To: {to_value}", f"Call-ID: {request.call_id}",
              f"CSeq: {request.cseq.seq} {request.cseq.method}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def peer_message(op: str, call: PeerCall, ua_requests: list[SipRequest], pick: int) -> bytes | None:
    """One message of a plausible call sequence for ``call``; None when the op does not apply."""
    tag = call.to_tag
    if op in ("invite", "late_invite", "invite_new_branch"):
        if op == "invite" or not call.invite_branch:
            call.cseq += 1
            call.invite_cseq = call.cseq
        call.invite_branch = call.branch()
        body = b"" if op == "late_invite" else SDP
        return render(call, "INVITE", branch=call.invite_branch, cseq=call.invite_cseq, body=body)
    if op == "invite_again":  # a retransmission: same branch, same CSeq
        if not call.invite_branch:
            return None
        return render(call, "INVITE", branch=call.invite_branch, cseq=call.invite_cseq, body=SDP)
    if op in ("ack", "ack_new_branch"):
        # The 2xx ACK is a new transaction (new branch); the ACK of an error reuses the INVITE's.
        branch = call.branch() if op == "ack_new_branch" else call.invite_branch or call.branch()
        return render(call, "ACK", branch=branch, cseq=call.invite_cseq, to_tag=tag)
    if op in ("ack_reinvite", "ack_reinvite_sdp"):
        body = SDP if op == "ack_reinvite_sdp" else b""
        return render(call, "ACK", branch=call.branch(), cseq=call.reinvite_cseq or call.invite_cseq,
                      to_tag=tag, body=body)
    if op == "cancel":
        if not call.invite_branch:
            return None
        return render(call, "CANCEL", branch=call.invite_branch, cseq=call.invite_cseq)
    if op == "register":
        call.cseq += 1
        return render(call, "REGISTER", branch=call.branch(), cseq=call.cseq)
    if op == "options":
        call.cseq += 1
        return render(call, "OPTIONS", branch=call.branch(), cseq=call.cseq)
    call.cseq += 1
    if op == "bye":
        return render(call, "BYE", branch=call.branch(), cseq=call.cseq, to_tag=tag)
    if op == "info":
        return render(call, "INFO", branch=call.branch(), cseq=call.cseq, to_tag=tag,
                      body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay")
    if op == "options_in_dialog":
        return render(call, "OPTIONS", branch=call.branch(), cseq=call.cseq, to_tag=tag)
    if op.startswith("reinvite"):
        call.reinvite_branch = call.branch()
        call.reinvite_cseq = call.cseq
        body = {"reinvite": SDP, "reinvite_late": b"", "reinvite_hold": HOLD_SDP}[op]
        return render(call, "INVITE", branch=call.reinvite_branch, cseq=call.cseq, to_tag=tag, body=body)
    if op == "answer_our_request":
        if not ua_requests:
            return None
        request = ua_requests[pick % len(ua_requests)]
        return respond_to(request, [100, 200, 200, 481, 408, 500, 603][pick % 7])
    raise AssertionError(op)


# ------------------------------------------------------------------------------------- mutations


def mutate(data: bytes, ops: list[tuple[int, int]]) -> bytes:
    """Apply (kind, number) mutations; ``number`` picks positions and sizes deterministically."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    tail = b""
    for kind, n in ops:
        k = 1 + n % max(len(lines) - 1, 1)  # a header line, never the start line
        if kind == 0:  # Content-Length lie
            value = [0, len(body) + 1, len(body) + 500, max(len(body) - 1, 0), 10**9][n % 5]
            lines = [f"Content-Length: {value}" if ln.lower().startswith(("content-length:", "l:")) else ln
                     for ln in lines]
            if n % 7 == 0:
                lines = [ln.replace("Content-Length: ", "Content-Length: -") for ln in lines]
        elif kind == 1:  # compact header names
            lines = [COMPACT.get(ln.split(":", 1)[0], ln.split(":", 1)[0]) + ":" + ln.split(":", 1)[1]
                     if ":" in ln and i else ln for i, ln in enumerate(lines)]
        elif kind == 2 and k < len(lines):  # folded header (RFC 3261 section 7.3.1 continuation line)
            line = lines[k]
            cut = line.find(" ", line.find(":")) if ":" in line else -1
            if cut > 0:
                lines[k] = line[:cut] + "\r\n  " + line[cut + 1:]
        elif kind == 3:  # oversized header
            size = [1000, 8000, 40000, 70000][n % 4]
            lines.insert(k, "X-Padding: " + "A" * size if n % 2 else "Subject: " + "b," * (size // 2))
        elif kind == 4:  # swapped tags
            lines = [ln.replace(";tag=", ";tag=x", 1) if ln.startswith(("To:", "From:")) and n % 3 == 0 else ln
                     for ln in lines]
            if n % 3 == 1:
                lines = [("From:" + ln[3:] if ln.startswith("To:") else "To:" + ln[5:] if ln.startswith("From:")
                          else ln) for ln in lines]
            elif n % 3 == 2:
                lines = [ln.split(";tag=")[0] if ln.startswith("To:") else ln for ln in lines]
        elif kind == 5:  # bad CSeq
            lines = [BAD_CSEQ[n % len(BAD_CSEQ)] if ln.startswith("CSeq:") else ln for ln in lines]
        elif kind == 6:  # truncation
            whole = "\r\n".join(lines).encode("latin-1") + sep + body
            return whole[: n % (len(whole) + 1)]
        elif kind == 7:  # drop a header
            if k < len(lines):
                del lines[k]
        elif kind == 8:  # duplicate a header
            if k < len(lines):
                lines.insert(k, lines[k])
        elif kind == 9:  # stray bytes
            tail = bytes([n % 256, (n * 7) % 256, 0])
            line = lines[k] if k < len(lines) else ""
            if line:
                pos = n % len(line)
                lines[k % len(lines)] = line[:pos] + tail.decode("latin-1") + line[pos:]
        elif kind == 10:  # another Call-ID or a Via branch without the magic cookie
            lines = [ln.replace("z9hG4bK", "") if ln.startswith("Via:") and n % 2 else
                     ("Call-ID: other-" + str(n % 3)) if ln.startswith("Call-ID:") and not n % 2 else ln
                     for ln in lines]
    return "\r\n".join(lines).encode("latin-1") + sep + body


# ------------------------------------------------------------------------------------------- app


@dataclass
class App:
    """The daemon's side: answers calls and re-INVITEs, and keeps the books the test checks."""

    ua: UserAgent
    policies: list[int]
    now: float = 0.0
    incoming: list[str] = field(default_factory=list)
    call_of_leg: dict[str, str] = field(default_factory=dict)
    ended: Counter[str] = field(default_factory=Counter)
    ua_requests: list[SipRequest] = field(default_factory=list)
    to_tags: dict[str, str] = field(default_factory=dict)
    reinvites: int = 0

    def pump(self) -> None:
        """Read what the UA sent and reported; answer like an app would."""
        for _ in range(1000):
            event = self.ua.next_event()
            if event is None:
                break
            if isinstance(event, IncomingCall):
                assert event.leg_id not in self.incoming, f"leg {event.leg_id} reported twice"
                self.incoming.append(event.leg_id)
                self.call_of_leg[event.leg_id] = event.call_id
                self._answer(event)
            elif isinstance(event, CallEnded):
                assert event.leg_id in self.incoming, f"CallEnded for unknown leg {event.leg_id}"
                self.ended[event.leg_id] += 1
                assert self.ended[event.leg_id] == 1, f"leg {event.leg_id} ended twice"
            elif isinstance(event, MediaChanged):
                self._known(event.leg_id)
                if self.ua.leg_state(event.leg_id) == LegState.CONFIRMED:
                    self.reinvites += 1
                    if self.reinvites % 3:
                        self.ua.answer_reinvite(event.leg_id, OUR_SDP, self.now)
                    else:
                        self.ua.reject_reinvite(event.leg_id, 488, self.now)
            elif isinstance(event, CallConfirmed | MediaAnswered | DtmfReceived):
                self._known(event.leg_id)
            elif isinstance(event, OrphanInviteEnded):
                # a final response to an INVITE whose transaction is gone (the fuzzer answers what it likes): the
                # UA ACKs it and reports it for the endpoint's end_orphan_invite() books; no app leg is involved,
                # and whether the calls still end is what this test checks
                pass
            else:
                raise AssertionError(f"unexpected event {event!r}")
        else:
            raise AssertionError("the UA reports events without end")
        for data, _address in self.ua.datagrams_to_send():
            try:
                msg = parse_message(data)
            except SipParseError as exc:
                raise AssertionError(f"the UA sent an unparsable message: {data[:200]!r}") from exc
            if isinstance(msg, SipRequest):
                self.ua_requests.append(msg)
            elif isinstance(msg, SipResponse) and msg.status > 100:
                try:  # a 400 to a broken request echoes its broken headers
                    tag = msg.to_addr.tag
                    call_id = msg.call_id
                    method = msg.cseq.method
                except SipParseError:
                    continue
                if tag and method == "INVITE":
                    self.to_tags[call_id] = tag

    def _known(self, leg_id: str) -> None:
        assert leg_id in self.incoming and not self.ended[leg_id], f"event for a leg not live: {leg_id}"

    def _answer(self, call: IncomingCall) -> None:
        policy = self.policies[len(self.incoming) % len(self.policies)]
        leg, now = call.leg_id, self.now
        if policy == 0:
            self.ua.ring(leg, now)
            self.ua.answer(leg, OUR_SDP, now)
        elif policy == 1:
            self.ua.answer(leg, OUR_SDP, now)
        elif policy == 2:
            self.ua.reject(leg, 486, now)
        elif policy == 3:
            self.ua.ring(leg, now)  # never answered: the answer timeout ends it
        elif policy == 4:
            self.ua.answer(leg, OUR_SDP, now)
            self.ua.hangup(leg, now)  # the flow ends before the ACK arrives
        # policy 5: nothing at all yet; the app hangs up at the end

    def live_legs(self) -> list[str]:
        return [leg for leg in self.incoming if self.ua.leg_state(leg) != LegState.ENDED]

    def advance(self, seconds: float) -> None:
        """Move time by firing every timer due on the way, each at its own deadline."""
        target = self.now + seconds
        for _ in range(TIMER_STEPS):
            deadline = self.ua.get_timer()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
            self.pump()
        else:
            raise AssertionError(f"timer does not move on: {self.ua.get_timer()} at {self.now}")
        self.now = target


MUTATIONS = [0, 1, 2, 3, 4, 4, 4, 5, 5, 6, 7, 8, 9, 10]
"""Mutation kinds of `mutate`; tags thrice as likely: a wrong tag on an ACK is what strands a call."""

step = st.tuples(
    st.sampled_from(PEER_OPS),
    st.integers(0, CALLS - 1),
    st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10**6)), max_size=3),
    st.sampled_from([0.0, 0.0, 0.01, 0.3, 1.0, 4.0, 17.0, 33.0, 130.0]),
    st.integers(0, 100),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    steps=st.lists(step, min_size=1, max_size=30),
    policies=st.lists(st.integers(0, 5), min_size=1, max_size=6),
    hangups=st.lists(st.tuples(st.integers(0, 29), st.integers(0, CALLS - 1)), max_size=3),
)
def test_no_call_gets_stuck(
    steps: list[tuple[str, int, list[tuple[int, int]], float, int]],
    policies: list[int],
    hangups: list[tuple[int, int]],
) -> None:
    ua = UserAgent(UserAgentConfig(allowed_peers=("192.0.2.0/24",), invite_burst=1000.0), LOCAL)
    app = App(ua, policies)
    calls = [PeerCall(k) for k in range(CALLS)]
    for i, (op, index, mutations, wait, pick) in enumerate(steps):
        call = calls[index]
        call.to_tag = app.to_tags.get(call.call_id)
        data = peer_message(op, call, app.ua_requests, pick)
        if data is not None:
            if mutations:
                data = mutate(data, mutations)
            ua.receive_datagram(data, STRANGER if pick == 99 else PEER, app.now)
            app.pump()
        for at, which in hangups:  # the app's flow ends mid-call (whatever state the leg is in)
            if at == i:
                for leg in app.live_legs():
                    if app.call_of_leg[leg] == calls[which].call_id:
                        ua.hangup(leg, app.now)
                app.pump()
        app.advance(wait)

    # The flows end: the app hangs up what it still holds, then time runs past every timer.
    for leg in app.live_legs():
        ua.hangup(leg, app.now)
    app.pump()
    app.advance(FAR)

    stuck = {leg: ua.leg_state(leg).value for leg in app.live_legs()}
    assert not stuck, f"calls stuck: {stuck}"
    assert all(app.ended[leg] == 1 for leg in app.incoming), {leg: app.ended[leg] for leg in app.incoming}
    timer = ua.get_timer()
    assert timer is None or timer > app.now + FAR, f"timer left at {timer} (now {app.now})"
    # Internal books, read directly: nothing of a finished call may stay behind.
    assert not ua._legs and not ua._dialogs, (ua._legs, ua._dialogs)
    assert not ua._layer._by_id, {k: (type(v).__name__, v.state, v.request.method) for k, v in ua._layer._by_id.items()}
    assert not ua._layer._retransmit_2xx
    assert not ua._tx_leg, ua._tx_leg


def test_ack_with_a_wrong_tag_does_not_strand_the_call() -> None:
    """Found by the fuzzer: an ACK with the 2xx's Call-ID and CSeq but another To tag stopped the 2xx
    retransmission and its ACK timeout, while the UA (rightly) ignored it: the leg stayed answered
    for ever, and even the app's hangup waited for an ACK that never came."""
    ua = UserAgent(UserAgentConfig(allowed_peers=("192.0.2.0/24",)), LOCAL)
    app = App(ua, [1])  # answer at once
    call = PeerCall(0)
    ua.receive_datagram(peer_message("invite", call, [], 0), PEER, 0.0)
    app.pump()
    call.to_tag = app.to_tags[call.call_id]
    ack = peer_message("ack_new_branch", call, [], 0).replace(f";tag={call.to_tag}".encode(), b";tag=wrong")
    ua.receive_datagram(ack, PEER, 0.1)
    app.pump()
    assert ua.leg_state("leg1") == LegState.ANSWERED
    assert ua.get_timer() is not None, "nothing left to end the call"
    ua.hangup("leg1", 0.2)  # the flow is over before the ACK
    app.advance(FAR)
    assert app.ended == Counter({"leg1": 1}) and ua.leg_state("leg1") == LegState.ENDED
    assert ua.get_timer() is None
