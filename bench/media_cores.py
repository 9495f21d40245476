"""Micro-benchmark of the media cores: per-20 ms-frame costs, and what 200 calls would need.

Run: .venv/bin/python bench/media_cores.py   (figures only; nothing here is asserted)

Each figure is the best of 5 timed repeats (wall clock), so a busy machine inflates it less than it
inflates an average; the in-band DTMF figures are per call and frame, with that many calls per bank run.
"""

from __future__ import annotations

import math
import struct
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.proto import g711  # noqa: E402
from ivr.proto.dtmf import DtmfBank, TelephoneEventReceiver, telephone_event_frames  # noqa: E402
from ivr.rtp.jitter import JitterBuffer  # noqa: E402
from ivr.rtp.packet import RtpPacket, parse_datagram  # noqa: E402

CALLS = 200
FRAMES_PER_S = 50
BATCHES = (1, 50, 200)
"""In-band DTMF: calls analysed together per bank run (the daemon runs one per phase tick: at 200 calls
and 4 phases, 50 calls a run)."""


def per_call_us(fn: Callable[[], object], number: int = 20000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def report(name: str, us: float) -> None:
    load = us * CALLS * FRAMES_PER_S / 1e6
    print(f"{name:<44} {us:8.2f} us/frame   {CALLS} calls: {100 * load:5.1f} % of one core")


def main() -> None:
    tone = struct.pack("<160h", *(round(12000 * math.sin(2 * math.pi * 1004 * k / 8000)) for k in range(160)))
    ulaw = g711.ulaw_encode(tone)
    alaw = g711.alaw_encode(tone)
    report("g711 ulaw_decode (160 B -> 320 B)", per_call_us(lambda: g711.ulaw_decode(ulaw), 100000))
    report("g711 alaw_decode", per_call_us(lambda: g711.alaw_decode(alaw), 100000))
    report("g711 ulaw_encode (320 B -> 160 B)", per_call_us(lambda: g711.ulaw_encode(tone)))
    report("g711 alaw_encode", per_call_us(lambda: g711.alaw_encode(tone)))

    packet = RtpPacket(payload_type=0, sequence_number=1, timestamp=160, ssrc=7, payload=ulaw)
    wire = packet.serialize()
    report("rtp parse_datagram", per_call_us(lambda: parse_datagram(wire)))
    report("rtp serialize", per_call_us(packet.serialize))

    jb = JitterBuffer()
    state = [0]

    def jitter_cycle() -> None:
        k = state[0]
        state[0] += 1
        jb.push(RtpPacket(0, k & 0xFFFF, k * 160, 7, ulaw), k * 0.02)
        jb.pop(k * 0.02 + 0.005)

    report("jitter push+pop", per_call_us(jitter_cycle))

    frames = [f.payload for f in telephone_event_frames("5", 800)]
    rx = TelephoneEventReceiver()

    def rfc4733() -> None:
        for i, p in enumerate(frames):
            rx.receive(p, 1000, i * 0.02)

    report("rfc4733 receive (per packet)", per_call_us(rfc4733, 5000) / len(frames))

    silence = bytes(320)
    long_tone = struct.pack(
        "<8000h",
        *(
            round(5000 * math.sin(2 * math.pi * 770 * k / 8000) + 5000 * math.sin(2 * math.pi * 1336 * k / 8000))
            for k in range(8000)
        ),
    )
    speech = (ROOT / "tests/proto/fixtures/speech.s16").read_bytes()

    def bank_over(data: bytes, calls: int) -> float:
        """Per call and frame: ``calls`` streams push a 20 ms frame each (each at its own place in the
        audio), one bank run analyses them all, each takes its events: the media tick's path."""
        frames = [data[i : i + 320] for i in range(0, len(data) - 319, 320)]
        bank = DtmfBank()
        detectors = [bank.open() for _ in range(calls)]
        feeds = [iter(frames[(7 * k) % len(frames) :] + frames * (20000 // len(frames) + 1)) for k in range(calls)]

        def tick() -> None:
            for detector, feed in zip(detectors, feeds, strict=True):
                detector.push(next(feed))
            bank.run()
            for detector in detectors:
                detector.take()

        for _ in range(len(frames)):
            tick()  # past the start, and every stream into its audio
        return per_call_us(tick, max(2000 // calls, 10)) / calls

    for name, data in (("silence", silence * 50), ("speech (espeak fixture)", speech), ("a held key", long_tone)):
        for calls in BATCHES:
            report(f"dtmf in-band, {name}, batch of {calls}", bank_over(data, calls))


if __name__ == "__main__":
    main()
