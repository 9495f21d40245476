"""Fuzzing the parser: whatever the bytes, only SipParseError may escape (thousands of cases)."""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.sip.framing import MAX_BODY, MAX_HEAD, PING, FramingError, StreamFramer
from ivr.sip.lexical import SipParseError
from ivr.sip.message import check_message, parse_message
from ivr.sip.sdp import SdpParseError, parse_sdp

SEEDS = [p.read_bytes() for p in sorted((Path(__file__).parent / "torture").glob("*.sip"))]
SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INTERESTING = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"@", b"[", b"]", b"=",
    b"%", b"%0", b"\x00", b"\xff", b"\xc3", b"Content-Length: 99999\r\n", b"l: -1\r\n", b"l: 0\r\n",
    b"Via: SIP/2.0/UDP [::1\r\n", b"v: SIP/2.0/UDP h;branch=z9hG4bK;rport=\r\n", b"\r\n ", b"\r\n\t",
    b"\r\n\r\n", b"CSeq: 99999999999 INVITE\r\n", b"To: \"unterminated <sip:a@b>\r\n", b"i:\r\n",
    b"X" * 5000, b"sip:", b"sips:[", b"SIP/2.0 ", b"SIP/2.0 999 x\r\n",
]


def exercise(data: bytes) -> None:
    """Parse and run every helper; only SipParseError is allowed out."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    check_message(msg)
    for helper in ("vias", "via", "from_addr", "to_addr", "cseq", "call_id", "contacts", "routes",
                   "record_routes"):
        try:
            getattr(msg, helper)
        except SipParseError:
            pass
    for name, value in msg.headers:
        assert isinstance(name, str) and isinstance(value, str)
    again = msg.to_bytes()
    parse_message(again)  # canonical output of a parsed message must parse again
    if msg.body:
        try:
            parse_sdp(msg.body)
        except SdpParseError:
            pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(data)))
        if op == 0:  # insert an interesting fragment
            data[pos:pos] = draw(st.sampled_from(INTERESTING))
        elif op == 1:  # delete a run
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == 2:  # random bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=20))
        elif op == 3:  # truncate
            del data[pos:]
        elif op == 4 and data:  # flip one byte
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        else:  # duplicate a slice (repeated / oversized headers)
            end = min(len(data), pos + draw(st.integers(1, 200)))
            data[pos:pos] = data[pos:end] * draw(st.integers(1, 20))
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_torture_messages(data: bytes) -> None:
    exercise(data)


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    exercise(data)


@SETTINGS
@given(
    seed=st.sampled_from(SEEDS),
    length=st.one_of(st.integers(-5, 100_000), st.text(max_size=12)),
    extra=st.binary(max_size=50),
)
def test_content_length_lies(seed: bytes, length: object, extra: bytes) -> None:
    head, _, body = seed.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith((b"content-length", b"l:", b"l :"))]
    lines.append(b"Content-Length: " + str(length).encode("utf-8", "replace"))
    exercise(b"\r\n".join(lines) + b"\r\n\r\n" + body + extra)


@SETTINGS
@given(
    seed=st.sampled_from(SEEDS),
    name=st.sampled_from(["i", "f", "t", "v", "m", "l", "c", "k", "s", "e", "o", "r", "b", "x", "u", "Via",
                          "To", "From", "Contact", "CSeq", "Route", "X-Big"]),
    value=st.text(alphabet=st.characters(codec="utf-8"), max_size=3000),
    fold=st.booleans(),
)
def test_compact_folded_and_oversized_headers(seed: bytes, name: str, value: str, fold: bool) -> None:
    head, sep, body = seed.partition(b"\r\n\r\n")
    encoded = value.encode("utf-8", "surrogatepass")
    if fold:
        encoded = encoded.replace(b" ", b"\r\n ")
    exercise(head + b"\r\n" + name.encode() + b": " + encoded + sep + body)


@SETTINGS
@given(st.text(max_size=400))
def test_sdp_fuzz(text: str) -> None:
    try:
        parse_sdp(text)
    except SdpParseError:
        pass


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(SEEDS + INTERESTING), st.binary(max_size=300)), max_size=8),
       st.integers(min_value=1, max_value=400))
def test_stream_framing_takes_anything(parts: list[bytes], chunk: int) -> None:
    """TCP/TLS bytes in any cut: only FramingError escapes, every message framed is a run of the input, and the
    framer never holds more than its bounds (ivr/sip/framing.py)."""
    data = b"".join(parts)
    framer = StreamFramer()
    framed: list[bytes] = []
    try:
        for i in range(0, len(data), chunk):
            framed += framer.feed(data[i:i + chunk])
    except FramingError:
        return
    assert all(m == PING or m in data for m in framed)
    assert framer.pending <= MAX_HEAD + MAX_BODY + 4
