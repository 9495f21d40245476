"""N callers over SIP/TLS with SDES-SRTP for bench/load.py ``--transport tls`` (sipp here has no TLS and no
SRTP): the same call as bench/load_files/dtmf_call.xml, INVITE (RTP/SAVP, PCMU + telephone-event, our
``a=crypto``), ACK, listen to the menu for ``--hold`` seconds, key 2 by RFC 4733 (seven packets 20 ms apart,
the last three with the end bit, as sipp's pcap), then answer the IVR's BYE. Each caller has its own TLS
connection (a phone does), verifies the appliance's certificate against ``--ca``, and decrypts the first
packets the appliance sends with the key of its answer (counted: a figure that the media really is SRTP).

Prints one JSON object: per call ``invite_200_ms``, ``key_end`` (wall clock of the first end packet, to match
the capture), ``ivr_rtp_port``, ``srtp_ok`` / ``srtp_failed``, ``error``. Bounded: every wait has a limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import ssl
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pylibsrtp import Policy, Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.sip.framing import PING, StreamFramer  # noqa: E402  (the repo's own framing: a bench tool)

SUITE = "AES_CM_128_HMAC_SHA1_80"
TE_PT = 101
CHECKED_PACKETS = 10


@dataclass
class CallResult:
    index: int
    invite_200_ms: float | None = None
    key_end: float | None = None
    ivr_rtp_port: int | None = None
    srtp_ok: int = 0
    srtp_failed: int = 0
    bye: bool = False
    error: str | None = None


def policy(key: bytes, direction: int) -> Policy:
    p = Policy(key=key, ssrc_type=direction, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    return p


class Caller:
    def __init__(self, index: int, args: argparse.Namespace, context: ssl.SSLContext) -> None:
        self.i = index
        self.args = args
        self.context = context
        self.result = CallResult(index)
        self.key = secrets.token_bytes(30)
        self.call_id = f"tls-{os.getpid()}-{index}@127.0.0.1"
        self.tag = secrets.token_hex(4)
        self.framer = StreamFramer()
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()

    def request(self, method: str, cseq: int, to_tag: str = "", body: bytes = b"", ctype: str = "") -> bytes:
        host, port = self.args.target
        lines = [f"{method} sip:700@{host}:{port};transport=tls SIP/2.0",
                 f"Via: SIP/2.0/TLS 127.0.0.1:{self.local_port};branch=z9hG4bK{secrets.token_hex(6)};rport",
                 f'From: "TLS Caller" <sip:+1555{self.i:04d}@127.0.0.1>;tag={self.tag}',
                 f"To: <sip:700@{host}:{port}>" + (f";tag={to_tag}" if to_tag else ""),
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:caller@127.0.0.1:{self.local_port};transport=tls>", "Max-Forwards: 70"]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def sdp(self) -> bytes:
        inline = base64.b64encode(self.key).decode()
        return ("v=0\r\no=tls 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.rtp_port} RTP/SAVP 0 {TE_PT}\r\na=rtpmap:0 PCMU/8000\r\n"
                f"a=rtpmap:{TE_PT} telephone-event/8000\r\na=fmtp:{TE_PT} 0-15\r\na=ptime:20\r\n"
                f"a=crypto:1 {SUITE} inline:{inline}\r\n").encode()

    async def next_message(self, timeout: float) -> bytes:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def read(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for message in self.framer.feed(data):
                if message != PING:
                    self.messages.put_nowait(message)

    async def run(self, start_at: float, key_at: float) -> CallResult:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtp.setblocking(False)
        self.rtp_port = rtp.getsockname()[1]
        reader_task: asyncio.Task[None] | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            host, port = self.args.target
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self.context, server_hostname=host), 15)
            self.local_port = writer.get_extra_info("sockname")[1]
            reader_task = asyncio.create_task(self.read(reader))
            t0 = time.monotonic()
            writer.write(self.request("INVITE", 1, body=self.sdp(), ctype="application/sdp"))
            while True:
                message = await self.next_message(30)
                status = message.split(b" ", 2)[1] if message.startswith(b"SIP/2.0 ") else b""
                if status == b"200":
                    break
                if status and not status.startswith(b"1"):
                    raise RuntimeError(f"INVITE answered {status.decode()}")
            self.result.invite_200_ms = 1000 * (time.monotonic() - t0)
            head, _, body = message.partition(b"\r\n\r\n")
            to_tag = next(line.split(b"tag=", 1)[1].split(b";")[0].decode() for line in head.split(b"\r\n")
                          if line.lower().startswith(b"to:"))
            sdp_lines = body.decode().splitlines()
            remote_port = int(next(line.split()[1] for line in sdp_lines if line.startswith("m=audio")))
            crypto = next(line for line in body.decode().splitlines() if line.startswith("a=crypto:"))
            their_key = base64.b64decode(crypto.split("inline:", 1)[1].split("|")[0].strip())
            self.result.ivr_rtp_port = remote_port
            writer.write(self.request("ACK", 1, to_tag=to_tag))
            inbound = Session(policy(their_key, Policy.SSRC_ANY_INBOUND))
            outbound = Session(policy(self.key, Policy.SSRC_ANY_OUTBOUND))
            loop = asyncio.get_running_loop()
            deadline = time.monotonic() + 10
            while self.result.srtp_ok + self.result.srtp_failed < CHECKED_PACKETS and time.monotonic() < deadline:
                try:
                    packet = await asyncio.wait_for(loop.sock_recv(rtp, 2048), 2)
                except TimeoutError:
                    break
                try:
                    inbound.unprotect(packet)
                    self.result.srtp_ok += 1
                except Exception:
                    self.result.srtp_failed += 1
            await asyncio.sleep(max(0.0, key_at - time.monotonic()))
            ssrc, seq, ts = secrets.randbits(32), secrets.randbits(15), secrets.randbits(31)
            for n in range(7):
                end = n >= 4
                duration = min(n + 1, 5) * 160
                payload = struct.pack("!BBH", 2, (0x80 if end else 0) | 10, duration)
                header = struct.pack("!BBHII", 0x80, (0x80 if n == 0 else 0) | TE_PT, (seq + n) & 0xFFFF, ts, ssrc)
                await loop.sock_sendto(rtp, outbound.protect(header + payload), ("127.0.0.1", remote_port))
                if end and self.result.key_end is None:
                    self.result.key_end = time.time()
                if n < 6:
                    await asyncio.sleep(0.02)
            while True:  # the chosen prompt, then the IVR's BYE
                message = await self.next_message(60)
                if message.startswith(b"BYE "):
                    head = message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                    keep = [ln for ln in head if ln.split(b":", 1)[0].lower() in (b"via", b"from", b"to", b"call-id",
                                                                                 b"cseq")]
                    writer.write(b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0"]) + b"\r\n\r\n")
                    self.result.bye = True
                    break
            await writer.drain()
        except Exception as exc:  # a failed call is a figure, not the end of the run
            self.result.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if reader_task is not None:
                reader_task.cancel()
                with contextlib.suppress(BaseException):
                    await reader_task
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)
            rtp.close()
        return self.result


async def main_async(args: argparse.Namespace) -> list[CallResult]:
    context = ssl.create_default_context(cafile=str(args.ca))
    begin = time.monotonic() + 0.5
    all_up = begin + args.calls / args.rate
    callers = [Caller(i, args, context) for i in range(args.calls)]
    tasks = [c.run(begin + i / args.rate, all_up + args.settle + i / args.rate) for i, c in enumerate(callers)]
    return list(await asyncio.gather(*tasks))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port of the appliance's TLS listener")
    p.add_argument("--ca", type=Path, required=True)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=8.0)
    args = p.parse_args()
    host, _, port = args.target.rpartition(":")
    args.target = (host, int(port))
    results = asyncio.run(main_async(args))
    print(json.dumps([asdict(r) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
