"""SDP (RFC 4566) parsing and serialization, and audio offer/answer (RFC 3264), sans-I/O.

Only what a G.711 IVR needs: PCMU/PCMA plus telephone-event (RFC 4733), ptime, direction and hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from ivr.proto.sdes import Crypto, SrtpKeys, choose

__all__ = [
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Answer",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "NoMatch",
    "Origin",
    "SdpParseError",
    "SessionDescription",
    "build_offer",
    "negotiate_answer",
    "parse_sdp",
    "remote_media",
]


class SdpParseError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Direction(StrEnum):
    """RFC 3264 section 5.1 / RFC 4566 section 6 media direction attributes."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """The direction an answerer uses for this offered direction (RFC 3264 section 6.1)."""
        return {
            Direction.SENDONLY: Direction.RECVONLY,
            Direction.RECVONLY: Direction.SENDONLY,
        }.get(self, self)


@dataclass(frozen=True)
class Codec:
    """An RTP payload format; `payload_type` is ours for an offer, the offerer's in an answer."""

    name: str
    payload_type: int
    clock_rate: int = 8000
    channels: int = 1
    fmtp: str | None = None

    def same_format(self, other: Codec) -> bool:
        return (
            self.name.lower() == other.name.lower()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
TELEPHONE_EVENT = Codec("telephone-event", 101, fmtp="0-16")

# RFC 3551 section 6: static payload types that need no rtpmap.
_STATIC: dict[int, Codec] = {0: PCMU, 8: PCMA, 3: Codec("GSM", 3), 4: Codec("G723", 4), 9: Codec("G722", 9),
                             18: Codec("G729", 18)}


@dataclass(frozen=True)
class Origin:
    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    address: str
    net_type: str = "IN"
    addr_type: str = "IP4"

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"

    @property
    def is_hold_address(self) -> bool:
        """RFC 3264 section 8.4: c=0.0.0.0 is the RFC 2543 way of putting a stream on hold."""
        return self.address in ("0.0.0.0", "::")


Attribute = tuple[str, str | None]


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    port_count: int | None = None
    title: str | None = None

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [value or "" for key, value in self.attributes if key == name]

    @property
    def direction(self) -> Direction | None:
        for key, _ in self.attributes:
            if key in Direction._value2member_map_:
                return Direction(key)
        return None

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            ptime = int(float(value))
        except ValueError:
            return None
        return ptime if 0 < ptime <= 1000 else None

    def codecs(self) -> list[Codec]:
        """The formats in offer order, resolved through rtpmap/fmtp or the static table."""
        rtpmaps: dict[str, tuple[str, int, int]] = {}
        for value in self.attribute_values("rtpmap"):
            m = re.match(r"\s*([0-9]+)\s+([^/\s]+)/([0-9]+)(?:/([0-9]+))?", value)
            if m:
                rtpmaps[m.group(1)] = (m.group(2), int(m.group(3)), int(m.group(4) or 1))
        fmtps: dict[str, str] = {}
        for value in self.attribute_values("fmtp"):
            fmt_name, _, params = value.strip().partition(" ")
            fmtps[fmt_name] = params.strip()
        out: list[Codec] = []
        for fmt in self.formats:
            if not fmt.isdigit() or int(fmt) > 127:
                continue
            pt = int(fmt)
            if fmt in rtpmaps:
                name, rate, channels = rtpmaps[fmt]
                out.append(Codec(name, pt, rate, channels, fmtps.get(fmt)))
            elif pt in _STATIC:
                out.append(replace(_STATIC[pt], fmtp=fmtps.get(fmt)))
        return out

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.title is not None:
            out.append(f"i={self.title}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        return out


@dataclass
class SessionDescription:
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[str] = field(default_factory=lambda: ["0 0"])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)
    #: Session-level lines we do not interpret (i, u, e, p, z, k, r), kept in order as (type, value).
    other: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0

    def to_bytes(self) -> bytes:
        """RFC 4566 section 5 order: v o s [i u e p] c b t [r z k] a, then each m section."""
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        lines += [f"{t}={v}" for t, v in self.other if t in "iuep"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={b}" for b in self.bandwidths]
        lines += [f"t={t}" for t in self.timing]
        lines += [f"{t}={v}" for t, v in self.other if t in "rzk"]
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for media in self.media:
            lines += media.lines()
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @property
    def direction(self) -> Direction | None:
        for key, _ in self.attributes:
            if key in Direction._value2member_map_:
                return Direction(key)
        return None


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError("bad c= line")
    address = parts[2].split("/", 1)[0]  # drop multicast TTL / count
    return Connection(address=address, net_type=parts[0], addr_type=parts[1])


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name:
        raise SdpParseError("empty a= line")
    return (name, rest if colon else None)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse a session description (RFC 4566 section 5); raises only `SdpParseError`."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpParseError("invalid UTF-8") from None
    else:
        text = data
    sdp = SessionDescription(timing=[])
    seen_v = seen_o = False
    current: MediaDescription | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip("\r")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpParseError(f"bad line {line[:20]!r}")
        kind, value = line[0], line[2:]
        if kind == "v":
            if value.strip() != "0":
                raise SdpParseError("unsupported SDP version")
            seen_v = True
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpParseError("bad o= line")
            sdp.origin = Origin(*parts)
            seen_o = True
        elif kind == "s":
            sdp.session_name = value
        elif kind == "t":
            sdp.timing.append(value)
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpParseError("bad m= line")
            port_text, slash, count = parts[1].partition("/")
            if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
                raise SdpParseError("bad media port")
            if slash and (not count.isascii() or not count.isdigit()):
                raise SdpParseError("bad media port count")
            current = MediaDescription(
                media=parts[0],
                port=int(port_text),
                proto=parts[2],
                formats=parts[3:],
                port_count=int(count) if slash else None,
            )
            sdp.media.append(current)
        elif kind == "c":
            if current is None:
                sdp.connection = _parse_connection(value)
            else:
                current.connection = _parse_connection(value)
        elif kind == "a":
            if current is None:
                sdp.attributes.append(_parse_attribute(value))
            else:
                current.attributes.append(_parse_attribute(value))
        elif kind == "b":
            (sdp.bandwidths if current is None else current.bandwidths).append(value)
        elif kind == "i" and current is not None:
            current.title = value
        elif current is None:
            sdp.other.append((kind, value))
        # Unknown media-level lines (k=) are dropped.
    if not seen_v or not seen_o:
        raise SdpParseError("missing v= or o= line")
    if not sdp.timing:
        sdp.timing = ["0 0"]
    return sdp


# --------------------------------------------------------------------------------------------------
# Offer/answer (RFC 3264)


@dataclass(frozen=True)
class RemoteMedia:
    """Where and how the peer's audio stream flows, from its offer or answer."""

    address: str
    port: int
    direction: Direction
    codecs: tuple[Codec, ...]
    ptime: int | None
    crypto: tuple[str, ...] = ()
    """Its ``a=crypto`` values (SDES, ivr/proto/sdes.py)."""

    @property
    def on_hold(self) -> bool:
        """The peer does not want to receive (sendonly/inactive, or the RFC 2543 c=0.0.0.0 form)."""
        return self.direction in (Direction.SENDONLY, Direction.INACTIVE) or self.address in ("0.0.0.0", "::")


def _audio_connection(sdp: SessionDescription, media: MediaDescription) -> Connection | None:
    return media.connection or sdp.connection


def remote_media(sdp: SessionDescription) -> RemoteMedia | None:
    """The first active audio stream of a description (answer or offer), or None."""
    for media in sdp.media:
        if media.media == "audio" and media.port != 0:
            conn = _audio_connection(sdp, media)
            if conn is None:
                return None
            direction = media.direction or sdp.direction or Direction.SENDRECV
            return RemoteMedia(conn.address, media.port, direction, tuple(media.codecs()), media.ptime,
                               tuple(media.attribute_values("crypto")))
    return None


@dataclass(frozen=True)
class Answer:
    """A successful negotiation: the SDP to send and the media parameters to run RTP with."""

    sdp: SessionDescription
    codec: Codec
    telephone_event: Codec | None
    remote: RemoteMedia
    direction: Direction
    ptime: int
    srtp: SrtpKeys | None = None
    """The SDES keys when the answer takes SRTP (``negotiate_answer``'s ``srtp``), else None: plain RTP."""

    @property
    def send_media(self) -> bool:
        """Whether we should send RTP at all (not to a held or 0.0.0.0 peer)."""
        return self.direction in (Direction.SENDRECV, Direction.SENDONLY) and not self.remote.on_hold


@dataclass(frozen=True)
class NoMatch:
    """No acceptable audio stream in the offer: answer 488 Not Acceptable Here (RFC 3261 13.3.1.1)."""

    reason: str


MAX_FRAMES_PER_PACKET = 10


def sendable_ptime(wanted: int | None) -> int:
    """The packet time we send for an offer's ``a=ptime`` (or none): whole 20 ms G.711 frames, 20 to 200 ms.
    Anything else (10, 30 ms) is sent as 20 ms and answered as 20, so the answer never says one thing while
    the RTP does another (a=ptime is only a preference, RFC 4566 section 6)."""
    if wanted is None or wanted % 20 or not 20 <= wanted <= 20 * MAX_FRAMES_PER_PACKET:
        return 20
    return wanted


def negotiate_answer(
    offer: SessionDescription,
    supported: Sequence[Codec],
    *,
    local_address: str,
    local_port: int,
    session_id: str,
    session_version: str = "0",
    default_ptime: int = 20,
    username: str = "-",
    srtp: str = "off",
    srtp_key: bytes | None = None,
) -> Answer | NoMatch:
    """Answer an offer (RFC 3264 section 6): one m= line per offered line, one audio stream accepted.

    The codec chosen is the offerer's most preferred one that we support; telephone-event keeps the
    offerer's dynamic payload type (RFC 3264 section 6.1: the answer uses the offer's numbers).

    ``srtp`` (``off``, ``optional``, ``required``; ivr/proto/sdes.py): an ``RTP/SAVP`` stream is taken only when
    it is not ``off`` and has an ``a=crypto`` we can honour; an ``RTP/AVP`` one with ``a=crypto`` (best-effort
    SRTP, as baresip's ``srtp`` and Asterisk offer it) gets SRTP too unless ``off``; ``required`` refuses
    plain RTP. ``srtp_key``: the 30 random bytes our side sends with.
    """
    wanted_events = next((c for c in supported if c.name.lower() == "telephone-event"), None)
    audio_codecs = [c for c in supported if c.name.lower() != "telephone-event"]
    answer_media: list[MediaDescription] = []
    chosen: tuple[Codec, Codec | None, RemoteMedia, Direction, int, Crypto | None, SrtpKeys | None] | None = None
    why = "no acceptable audio stream"
    for media in offer.media:
        rejected = MediaDescription(media.media, 0, media.proto, media.formats[:1] or ["0"])
        proto = "RTP/SAVP" if media.proto.upper() == "RTP/SAVP" else "RTP/AVP"
        if chosen is not None or media.media != "audio" or media.port == 0 or (
                "RTP/AVP" not in media.proto and proto != "RTP/SAVP"):
            answer_media.append(rejected)  # RFC 3264 section 6: rejected stream, port zero
            continue
        crypto: Crypto | None = None
        keys: SrtpKeys | None = None
        lines = media.attribute_values("crypto")
        if srtp != "off" and lines and srtp_key is not None:
            picked = choose(lines, srtp_key)
            if picked is not None:
                crypto, keys = picked
        if keys is None and (proto == "RTP/SAVP" or srtp == "required"):
            why = ("SRTP required (sip.srtp) and the offer has no a=crypto we can use" if srtp == "required"
                   else "an SRTP stream (RTP/SAVP) without an a=crypto we can use, or SRTP off (sip.srtp)")
            answer_media.append(rejected)
            continue
        conn = _audio_connection(offer, media)
        offered = media.codecs()
        codec = next((o for o in offered for s in audio_codecs if o.same_format(s)), None)
        if conn is None or codec is None:
            answer_media.append(rejected)
            continue
        events = None
        if wanted_events is not None:
            rate = codec.clock_rate
            matching = (o for o in offered if o.same_format(wanted_events) and o.clock_rate == rate)
            events = next(matching, None)
            if events is not None and events.fmtp is None:
                events = replace(events, fmtp=wanted_events.fmtp)
        offered_direction = media.direction or offer.direction or Direction.SENDRECV
        ptime = sendable_ptime(media.ptime or default_ptime)
        remote = RemoteMedia(conn.address, media.port, offered_direction, tuple(offered), media.ptime)
        direction = offered_direction.reversed()
        chosen = (codec, events, remote, direction, ptime, crypto, keys)
        answer_media.append(_audio_section(local_port, codec, events, direction, ptime, proto=proto,
                                           crypto=crypto))
    if chosen is None:
        return NoMatch(why)
    codec, events, remote, direction, ptime, crypto, keys = chosen
    sdp = SessionDescription(
        origin=Origin(username, session_id, session_version, "IN", _addr_type(local_address), local_address),
        session_name="-",
        connection=Connection(local_address, addr_type=_addr_type(local_address)),
        media=answer_media,
    )
    return Answer(sdp, codec, events, remote, direction, ptime, keys)


def _addr_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _audio_section(
    port: int, codec: Codec | Sequence[Codec], events: Codec | None, direction: Direction, ptime: int, *,
    proto: str = "RTP/AVP", crypto: Crypto | None = None,
) -> MediaDescription:
    codecs = [codec] if isinstance(codec, Codec) else list(codec)
    if events is not None:
        codecs.append(events)
    attributes: list[Attribute] = []
    for c in codecs:
        rate = f"{c.clock_rate}/{c.channels}" if c.channels != 1 else str(c.clock_rate)
        attributes.append(("rtpmap", f"{c.payload_type} {c.name}/{rate}"))
        if c.fmtp is not None:
            attributes.append(("fmtp", f"{c.payload_type} {c.fmtp}"))
    attributes.append(("ptime", str(ptime)))
    attributes.append((direction.value, None))
    if crypto is not None:
        attributes.append(("crypto", crypto.line()))
    formats = [str(c.payload_type) for c in codecs]
    return MediaDescription("audio", port, proto, formats, attributes=attributes)


def build_offer(
    codecs: Sequence[Codec],
    *,
    local_address: str,
    local_port: int,
    session_id: str,
    session_version: str = "0",
    ptime: int = 20,
    direction: Direction = Direction.SENDRECV,
    username: str = "-",
    crypto: Crypto | None = None,
    srtp_required: bool = False,
) -> SessionDescription:
    """Our own offer (RFC 3264 section 5) with one audio stream, codecs in our order of preference. With
    ``crypto`` it asks for SRTP: ``RTP/SAVP`` when ``srtp_required``, else ``RTP/AVP`` with the ``a=crypto``
    (best effort: a peer without SRTP answers plain RTP)."""
    audio = [c for c in codecs if c.name.lower() != "telephone-event"]
    events = next((c for c in codecs if c.name.lower() == "telephone-event"), None)
    if not audio:
        raise ValueError("an offer needs at least one audio codec")
    return SessionDescription(
        origin=Origin(username, session_id, session_version, "IN", _addr_type(local_address), local_address),
        connection=Connection(local_address, addr_type=_addr_type(local_address)),
        media=[_audio_section(local_port, audio, events, direction, ptime, crypto=crypto,
                              proto="RTP/SAVP" if crypto is not None and srtp_required else "RTP/AVP")],
    )
