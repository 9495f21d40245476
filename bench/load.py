"""Load benchmark: sipp drives N concurrent calls through a DTMF menu, against `ivr run` and pyVoIP 1.6.8.

Each caller (bench/load_files/dtmf_call.xml) listens to a long menu prompt, presses 2 by RFC 2833, hears
the next prompt and answers the IVR's BYE. Calls start at ``--rate`` per second and each one waits
``N / rate + --settle`` seconds before its key, so all N are up at once for ``--settle`` seconds.

What is measured, per implementation and N:
- calls attempted / completed / failed (sipp's own counts);
- INVITE -> 200 p50/p99 and the IVR's RTP send interval p50/p99/max (gaps between consecutive packets of
  each stream) and DTMF -> next prompt, all FROM A PACKET CAPTURE (dumpcap on lo, capture filter on the
  IVR's SIP port and RTP port range). DTMF -> next prompt runs from the first end-of-event packet of the
  key to the first packet of the next prompt on that stream: for ivr the packet with the RTP marker bit
  (we set it on the first packet of every prompt), for pyVoIP (which never sets the marker) the first
  packet whose payload is the next prompt's first frame as pyVoIP encodes it;
- the IVR's CPU (average over the calls, and the peak 1 s) and RSS (before, peak, per call) and sipp's
  CPU, sampled from /proc every 0.2 s.

With ``--inband`` (ivr only) the callers offer no telephone-event (bench/load_files/inband_call.xml), so the
daemon's in-band DTMF detector listens to every call: each caller talks (espeak-ng, looped) from its answer
until its key, the detector's costly case, and then sends key 2 as a tone in its audio (sox, 120 ms, -8 dB
per tone). The key's time in the capture is its last tone frame; every key heard (or not) and any other
digit (talk-off) is counted from the event log.

With ``--speech-calls K`` (ivr only), once the N calls are up K more sipp callers
(bench/load_files/speech_call.xml) keep speaking keywords to a listening menu (speech_flow.yaml), so the
daemon decodes speech on its own threads beside the DTMF calls: the send interval is also given for the time
all K are up, and every recognition (how many, accepted, end of speech → result) from the event log.

Run:  .venv/bin/python bench/load.py [--calls 10,50,100,200,300] [--impl ivr,pyvoip] [--json]
      .venv/bin/python bench/load.py --calls 100 --impl ivr --settle 60 --speech-calls 24
      .venv/bin/python bench/load.py --calls 200 --impl ivr --inband
Figures only, nothing asserted. Needs sipp, dumpcap (wireshark-common), espeak-ng and sox, and root (or
capture rights) for dumpcap and sipp's pcap play. The pyVoIP venv (bench/.venv-pyvoip) is made on first
use with ``python3 -m venv`` and ``pip install pyVoIP==1.6.8``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
FILES = BENCH / "load_files"
PYVOIP_VENV = BENCH / ".venv-pyvoip"
PYVOIP_PIN = "pyVoIP==1.6.8"
RTP_RANGES = {"ivr": (40000, 41999), "pyvoip": (42000, 43999)}
SERVICE = "700"
SPEECH_SERVICE = "701"
TE_PT = 101
MENU_TEXT = ("Welcome to the load test line. This menu prompt is long on purpose, so that the caller can press "
             "a key while it plays. Press 2 to hear the next prompt.")
CHOSEN_TEXT = "You chose two. Goodbye."
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- small helpers --------------------------------------------------------------------------------------

def free_port() -> int:
    """A free UDP port outside the RTP ranges (the capture tells streams apart by those ranges)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not any(lo <= port <= hi for lo, hi in RTP_RANGES.values()):
            return port
    raise RuntimeError("no free UDP port outside the RTP ranges")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def r2(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def make_prompts(work: Path, menu_seconds: float) -> dict[str, Path]:
    """The two prompts as 8 kHz WAV (espeak-ng + sox), and pyVoIP's unsigned 8-bit raw copies."""
    tmp = work / "tts"
    tmp.mkdir()
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp / "m.wav"), MENU_TEXT], check=True)
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp / "c.wav"), CHOSEN_TEXT], check=True)
    out = {"menu": work / "menu.wav", "chosen": work / "chosen.wav"}
    one = float(subprocess.run(["soxi", "-D", str(tmp / "m.wav")], capture_output=True, text=True,
                               check=True).stdout)
    repeats = max(0, int(menu_seconds / max(one, 0.5)))
    subprocess.run(["sox", str(tmp / "m.wav"), "-r", "8000", "-c", "1", "-b", "16", str(out["menu"]),
                    "repeat", str(repeats)], check=True)
    # Leading silence trimmed: the next prompt's first frame is sound, so a capture can recognise it.
    subprocess.run(["sox", str(tmp / "c.wav"), "-r", "8000", "-c", "1", "-b", "16", str(out["chosen"]),
                    "silence", "1", "0.02", "1%"], check=True)
    for name in ("menu", "chosen"):
        u8 = work / f"{name}.u8"
        subprocess.run(["sox", str(out[name]), "-r", "8000", "-c", "1", "-e", "unsigned", "-b", "8", "-t", "raw",
                        str(u8)], check=True)
        out[f"{name}_u8"] = u8
    return out


def pyvoip_first_frame(chosen_u8: bytes) -> bytes:
    """The payload of the first packet pyVoIP sends of the next prompt (its own µ-law encoding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the module pyVoIP itself encodes with (removed in Python 3.13)
    return audioop.lin2ulaw(audioop.bias(chosen_u8[:160], 1, -128), 1)


def ensure_pyvoip() -> Path:
    python = PYVOIP_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PYVOIP_VENV} with {PYVOIP_PIN} ...", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(PYVOIP_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PYVOIP_PIN], check=True)
    return python


# -- /proc sampling -------------------------------------------------------------------------------------

def proc_sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS kB) of a process, all threads; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return cpu, rss


class Sampler(threading.Thread):
    """Samples named processes every 0.2 s: (monotonic time, CPU s, RSS kB) per name; a name for several
    processes (the media workers) gets their sums."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids: dict[str, tuple[int, ...]] = {}
        self.samples: dict[str, list[tuple[float, float, int]]] = {}
        self.halt = threading.Event()

    def watch(self, name: str, *pids: int) -> None:
        self.samples.setdefault(name, [])
        self.pids[name] = pids

    def run(self) -> None:
        while not self.halt.wait(0.2):
            now = time.monotonic()
            for name, pids in list(self.pids.items()):
                each = [proc_sample(pid) for pid in pids]
                if each and all(s is not None for s in each):  # one gone: a sum would be a drop, not a figure
                    self.samples[name].append((now, sum(s[0] for s in each if s is not None),
                                               sum(s[1] for s in each if s is not None)))

    def cpu(self, name: str, t0: float, t1: float) -> tuple[float | None, float | None]:
        """(average %, peak % over any 1 s) of one core between t0 and t1."""
        pts = [s for s in self.samples.get(name, []) if t0 <= s[0] <= t1]
        if len(pts) < 2:
            return None, None
        avg = 100 * (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])
        peak = 0.0
        j = 0
        for i in range(len(pts)):
            while j < i and pts[i][0] - pts[j][0] > 1.0:
                j += 1
            if j < i and pts[i][0] - pts[j][0] >= 0.8:
                peak = max(peak, 100 * (pts[i][1] - pts[j][1]) / (pts[i][0] - pts[j][0]))
        return avg, peak

    def rss(self, name: str, before: float, t1: float) -> tuple[int | None, int | None]:
        """(RSS kB at the last sample before ``before``, peak RSS kB up to t1)."""
        pts = self.samples.get(name, [])
        base = [s[2] for s in pts if s[0] <= before]
        peak = [s[2] for s in pts if s[0] <= t1]
        return (base[-1] if base else None), (max(peak) if peak else None)


# -- the capture ------------------------------------------------------------------------------------------

def read_pcap(path: Path) -> list[tuple[float, int, int, bytes]]:
    """UDP/IPv4 datagrams of a classic pcap (Ethernet or Linux cooked link): (time, sport, dport, payload)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    link_len = {1: 14, 113: 16, 0: 4}.get(linktype)
    if link_len is None:
        raise ValueError(f"{path}: link type {linktype} not handled")
    rec = struct.Struct(endian + "IIII")
    scale = 1e-9 if nano else 1e-6
    out: list[tuple[float, int, int, bytes]] = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        pkt = data[off:off + incl]
        off += incl
        ip = link_len
        if len(pkt) < ip + 28 or pkt[ip] >> 4 != 4 or pkt[ip + 9] != 17:
            continue
        ihl = (pkt[ip] & 0x0F) * 4
        udp = ip + ihl
        sport, dport, ulen = struct.unpack_from("!HHH", pkt, udp)
        out.append((sec + frac * scale, sport, dport, pkt[udp + 8:udp + ulen]))
    return out


def write_rtp_pcap(path: Path, ulaw: bytes, payload_type: int = 0) -> float:
    """``ulaw`` as a classic pcap of RTP packets (Ethernet/IPv4/UDP on loopback, 20 ms apart), for sipp's
    play_pcap_audio; returns the audio's length in seconds."""
    frames = [ulaw[i:i + 160].ljust(160, b"\xff") for i in range(0, len(ulaw), 160)]
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    ssrc = 0x5EEC4
    for k, frame in enumerate(frames):
        rtp = struct.pack("!BBHII", 0x80, payload_type | (0x80 if k == 0 else 0), k & 0xFFFF, k * 160, ssrc) + frame
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k & 0xFFFF, 0, 64, 17, 0,
                           b"\x7f\x00\x00\x01", b"\x7f\x00\x00\x01")
        csum = sum(struct.unpack("!10H", head))
        csum = (csum & 0xFFFF) + (csum >> 16)
        csum = (csum & 0xFFFF) + (csum >> 16)
        head = head[:10] + struct.pack("!H", ~csum & 0xFFFF) + head[12:]
        pkt = b"\x00" * 12 + b"\x08\x00" + head + udp
        t = k * 0.02
        out.append(struct.pack("<IIII", int(t), round((t % 1) * 1e6), len(pkt), len(pkt)) + pkt)
    path.write_bytes(b"".join(out))
    return len(frames) * 0.02


def speech_caller(work: Path, settle: float, calls: int, rate: float) -> tuple[Path, int, float]:
    """The speech callers' scenario: a pcap of three keywords from the sample's reliable set, each after a
    pause (espeak-ng Korean, µ-law), looped for as long as the DTMF calls stay up together. Returns
    (scenario, loops, seconds per loop)."""
    from ivr.proto import g711
    from ivr.speech import synth

    pcm = synth.silence(0.8)
    for word in ("아니요", "네", "예약"):
        pcm += synth.speak(word, "ko", 175) + synth.silence(1.6)
    seconds = write_rtp_pcap(work / "speech.pcap", g711.ulaw_encode(pcm))
    play = seconds + 0.2
    loops = max(1, int((settle - calls / rate - 6.0) / play))
    xml = (FILES / "speech_call.xml").read_text()
    xml = xml.replace("@PCAP@", str(work / "speech.pcap")).replace("@PAUSE_MS@", str(round(play * 1000)))
    (work / "speech_call.xml").write_text(xml.replace("@LOOPS@", str(loops)))
    return work / "speech_call.xml", loops, play


def speech_figures(db: Path) -> dict[str, Any]:
    """Every recognition the daemon logged (event log ``input.speech``): how many, accepted, and end of
    speech → result (``after_speech_ms``: the detector's hangover plus decoding, what the caller waits)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = [json.loads(d) for (d,) in con.execute("SELECT data FROM events WHERE type = 'input.speech'")]
        refused = con.execute("SELECT count(*) FROM events WHERE type = 'speech.unavailable'").fetchone()[0]
    finally:
        con.close()
    after = [float(r["after_speech_ms"]) for r in rows if "after_speech_ms" in r]
    return {"recognitions": len(rows), "accepted": sum(1 for r in rows if r.get("accepted")),
            "after_speech_p50_ms": r2(pct(after, 0.5)), "after_speech_p95_ms": r2(pct(after, 0.95)),
            "after_speech_max_ms": r2(max(after)) if after else None, "turns_refused": refused}


INBAND_SPEECH = ("Hello, I am calling about my bill. My account number is three four five six seven eight, "
                 "and I would like to talk to somebody about the last payment, please.")


def inband_caller(work: Path, talk_seconds: float, bye_timeout_s: float) -> tuple[Path, tuple[bytes, bytes]]:
    """The in-band callers' scenario: a pcap of speech (espeak-ng, looped) for ``talk_seconds``, then key 2 as
    a tone (sox), then quiet. Returns (scenario, (first, last) frame of the key as µ-law RTP payloads)."""
    tmp = work / "inband"
    tmp.mkdir()
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp / "talk.wav"), INBAND_SPEECH], check=True)
    one = float(subprocess.run(["soxi", "-D", str(tmp / "talk.wav")], capture_output=True, text=True,
                               check=True).stdout)
    subprocess.run(["sox", str(tmp / "talk.wav"), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw",
                    str(tmp / "talk.ul"), "repeat", str(max(0, int(talk_seconds / max(one, 0.5))))], check=True)
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(tmp / "key.ul"), "synth",
                    "0.12", "sine", "697", "synth", "0.12", "sine", "mix", "1336", "gain", "-8"], check=True)
    talk = (tmp / "talk.ul").read_bytes()[: int(talk_seconds * 8000) // 160 * 160]
    talk = talk.ljust(int(talk_seconds * 8000) // 160 * 160, b"\xff")
    key = (tmp / "key.ul").read_bytes()
    key = key[: len(key) // 160 * 160]
    write_rtp_pcap(work / "inband.pcap", talk + b"\xff" * 1600 + key + b"\xff" * 16000)
    xml = (FILES / "inband_call.xml").read_text().replace("@PCAP@", str(work / "inband.pcap"))
    (work / "inband_call.xml").write_text(xml.replace("@BYE_TIMEOUT_MS@", str(int(1000 * bye_timeout_s))))
    return work / "inband_call.xml", (key[:160], key[-160:])


def inband_figures(db: Path) -> dict[str, Any]:
    """Keys the daemon heard in-band (event log ``input.dtmf``): key 2, any other digit (talk-off), and the
    calls that reached the next prompt (``menu.choice``)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        digits = [json.loads(d) for (d,) in con.execute("SELECT data FROM events WHERE type = 'input.dtmf'")]
        choices = con.execute("SELECT count(*) FROM events WHERE type = 'menu.choice'").fetchone()[0]
    finally:
        con.close()
    return {"keys_heard": sum(1 for d in digits if d.get("digit") == "2"),
            "other_digits": sum(1 for d in digits if d.get("digit") != "2"),
            "sources": sorted({str(d.get("source")) for d in digits}), "menu_choices": choices}


def sip_head(payload: bytes) -> tuple[str, str, str] | None:
    """(first line, Call-ID, CSeq method) of a SIP message."""
    try:
        text = payload.decode("utf-8", "replace")
    except Exception:
        return None
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    call_id = cseq = ""
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name in ("call-id", "i"):
            call_id = value.strip()
        elif name == "cseq":
            cseq = value.strip().split()[-1] if value.strip() else ""
    return lines[0], call_id, cseq


@dataclass
class CaptureFigures:
    packets: int = 0
    invite_200_ms: list[float] = field(default_factory=list)
    invites_unanswered: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    streams: int = 0
    dtmf_ms: list[float] = field(default_factory=list)
    keys_without_prompt: int = 0
    window_gaps_ms: list[float] = field(default_factory=list)
    """Send gaps that ended inside the window (while all --speech-calls were up)."""
    gap_ends: list[float] = field(default_factory=list)
    """When each of gaps_ms ended (capture time), for the tail over the run (send_p99_by_10s)."""


def analyse(path: Path, sip_port: int, rtp: tuple[int, int], first_frame: bytes | None,
            window: tuple[float, float] | None = None, inband_key: tuple[bytes, bytes] | None = None,
            keys_given: dict[int, list[list[float]]] | None = None) -> CaptureFigures:
    """INVITE -> 200, per-stream send gaps, key end -> next prompt, from the capture (see the module doc).
    ``keys_given``: the keys' times per IVR port as the callers sent them (SRTP hides the end bit)."""
    fig = CaptureFigures()
    invites: dict[str, float] = {}
    answers: dict[str, float] = {}
    sent: dict[tuple[int, int], list[tuple[float, bool, bytes]]] = {}
    keys: dict[int, list[list[float]]] = dict(keys_given or {})
    """Per IVR port, each key as [first event packet, first end-of-event packet (or none yet)]."""
    lo, hi = rtp
    for t, sport, dport, payload in read_pcap(path):
        fig.packets += 1
        if dport == sip_port or sport == sip_port:
            head = sip_head(payload)
            if head is None:
                continue
            first, call_id, method = head
            if dport == sip_port and first.startswith("INVITE "):
                invites.setdefault(call_id, t)
            elif sport == sip_port and first.startswith("SIP/2.0 200") and method == "INVITE":
                answers.setdefault(call_id, t)
            continue
        if len(payload) < 12 or payload[0] >> 6 != 2 or 192 <= payload[1] <= 223:
            continue  # not RTP, or RTCP (RFC 5761 section 4: its packet types; the IVR sends reports)
        if lo <= sport <= hi:
            ssrc = int.from_bytes(payload[8:12], "big")
            sent.setdefault((sport, ssrc), []).append((t, bool(payload[1] & 0x80), payload[12:]))
        elif inband_key is not None and lo <= dport <= hi:
            body = payload[12:]
            port_keys = keys.setdefault(dport, [])
            if body == inband_key[0]:
                port_keys.append([t])  # the key's first tone frame
            elif body == inband_key[1] and port_keys and len(port_keys[-1]) == 1:
                port_keys[-1].append(t)  # and its last: the key's end, as the RFC 2833 end packet
        elif keys_given is None and lo <= dport <= hi and payload[1] & 0x7F == TE_PT and len(payload) >= 16:
            port_keys = keys.setdefault(dport, [])
            if not port_keys or t - port_keys[-1][0] > 1.0:
                port_keys.append([t])  # a new key (one key's packets span 140 ms here)
            if payload[13] & 0x80 and len(port_keys[-1]) == 1:
                port_keys[-1].append(t)  # the first of the (repeated) end packets
    for call_id, t0 in invites.items():
        if call_id in answers:
            fig.invite_200_ms.append(1000 * (answers[call_id] - t0))
        else:
            fig.invites_unanswered += 1
    by_port: dict[int, list[list[tuple[float, bool, bytes]]]] = {}
    for (port, _ssrc), pkts in sent.items():
        fig.streams += 1
        fig.gaps_ms.extend(1000 * (b[0] - a[0]) for a, b in zip(pkts, pkts[1:], strict=False))
        fig.gap_ends.extend(b[0] for b in pkts[1:])
        if window is not None:
            fig.window_gaps_ms.extend(1000 * (b[0] - a[0]) for a, b in zip(pkts, pkts[1:], strict=False)
                                      if window[0] <= b[0] <= window[1])
        by_port.setdefault(port, []).append(pkts)
    for port, port_keys in keys.items():
        for key in port_keys:
            if len(key) < 2:
                fig.keys_without_prompt += 1
                continue
            t_start, t_end = key
            found = None
            for pkts in by_port.get(port, []):
                if not pkts or not pkts[0][0] <= t_start <= pkts[-1][0] + 1.0:
                    continue
                # From the key's first packet: an IVR may act on key-down (pyVoIP does), then the figure
                # is negative.
                for t, marker, body in pkts:
                    if t > t_start and (body == first_frame if first_frame is not None else marker):
                        found = t
                        break
            if found is None:
                fig.keys_without_prompt += 1
            else:
                fig.dtmf_ms.append(1000 * (found - t_end))
    return fig


# -- one run ----------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    impl: str
    calls: int
    rate: float
    load_avg_before: tuple[float, float, float]
    attempted: int = 0
    completed: int = 0
    failed: int = 0
    invite_200_p50_ms: float | None = None
    invite_200_p99_ms: float | None = None
    invites_unanswered: int = 0
    send_interval_p50_ms: float | None = None
    send_interval_p99_ms: float | None = None
    send_interval_max_ms: float | None = None
    streams: int = 0
    dtmf_next_prompt_p50_ms: float | None = None
    dtmf_next_prompt_p99_ms: float | None = None
    dtmf_next_prompt_max_ms: float | None = None
    keys_without_prompt: int = 0
    inband: dict[str, Any] = field(default_factory=dict)
    """With --inband: keys heard, other digits (talk-off), menu choices, from the event log."""
    window: tuple[float, float] | None = None
    window_send_interval_p50_ms: float | None = None
    window_send_interval_p99_ms: float | None = None
    window_send_interval_max_ms: float | None = None
    window_gaps: int = 0
    ivr_cpu_avg_pct: float | None = None
    media_cpu_avg_pct: float | None = None
    """The media workers' CPU (ivr.rtp.worker), summed (% of one core), beside the daemon's own in ivr_cpu_*; None
    without one. With more than one (--media-workers), each one's is in the notes."""
    media_cpu_peak_pct: float | None = None
    media_rss_peak_mb: float | None = None
    ivr_cpu_peak_pct: float | None = None
    ivr_rss_before_mb: float | None = None
    ivr_rss_peak_mb: float | None = None
    ivr_rss_per_call_mb: float | None = None
    sipp_cpu_avg_pct: float | None = None
    sipp_cpu_peak_pct: float | None = None
    capture_cpu_avg_pct: float | None = None
    packets_captured: int = 0
    capture_dropped: int | None = None
    speech_calls: int = 0
    speech_completed: int = 0
    speech_failed: int = 0
    speech: dict[str, Any] = field(default_factory=dict)
    """With --speech-calls: recognitions, accepted, after_speech p50/p95/max ms, turns refused."""
    notes: list[str] = field(default_factory=list)


def wait_line(proc: subprocess.Popen[str], want: str, timeout: float) -> bool:
    """Read the process's stdout until a line starting with ``want`` (bounded in time)."""
    assert proc.stdout is not None
    box: list[bool] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(want):
                box.append(True)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return bool(box)


def disk_hog(folder: Path) -> subprocess.Popen[Any]:
    """Other I/O on the state directory's disk, as on a box that also logs, backs up or updates: dd writing
    64 MiB with O_DSYNC over and over (bounded: 1,000 rounds at most, stopped with the run)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = (f"for i in $(seq 1000); do dd if=/dev/zero of={folder / 'hog'} bs=1M count=64 oflag=dsync "
              "status=none; done")
    return subprocess.Popen(["sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def start_ivr(work: Path, prompts: dict[str, Path], sip_port: int, rtp: tuple[int, int], *, speech_calls: int = 0,
              decode_nice: int | None = None, unsaved_seconds: float | None = None,
              tls: tuple[int, Any] | None = None, media_worker: bool = True,
              media_priority: int | None = None, media_workers: int | None = None) -> subprocess.Popen[Any]:
    """``tls``: (port, tests.integration.pki.Pki): SIP over TLS there with SRTP required, beside UDP.
    ``media_worker``: ``sip.media_worker`` (the calls' media in a worker process; false: on the main loop);
    ``media_priority``, ``media_workers``: ``sip.media_priority``, ``sip.media_workers`` (None: the config
    default)."""
    flows = work / "flows"
    flows.mkdir()
    shutil.copy(FILES / "flow.yaml", flows / "load.yaml")
    shutil.copy(prompts["menu"], flows / "menu.wav")
    shutil.copy(prompts["chosen"], flows / "chosen.wav")
    if speech_calls:
        shutil.copy(FILES / "speech_flow.yaml", flows / "speech.yaml")
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(flows / "tone.wav"), "synth", "0.25",
                        "sine", "440", "vol", "0.3"], check=True)
        nice = "" if decode_nice is None else f", decode_nice: {decode_nice}"
        speech = f"speech: {{enabled: true, max_streams: {max(24, speech_calls)}{nice}}}\n"
    else:
        speech = "speech: {enabled: false}\n"
    config = work / "ivr.yaml"
    config.write_text(
        "site: {id: load-bench}\n"
        f"state_dir: {work / 'var'}\n"
        f"flows_dir: {flows}\n"
        "log: {level: warning}\n"
        "calls: {rtp_timeout_seconds: 120"  # callers send no audio before their key (sipp)
        + ("" if unsaved_seconds is None else f", navigation_unsaved_seconds: {unsaved_seconds}") + "}\n"
        f"sip: {{listen: '127.0.0.1:{sip_port}', rtp_ports: {rtp[0]}-{rtp[1]}, "
        f"media_worker: {str(media_worker).lower()}"
        + ("" if media_priority is None else f", media_priority: {media_priority}")
        + ("" if media_workers is None else f", media_workers: {media_workers}")
        + ("" if tls is None else f", srtp: required, tls: {{listen: '127.0.0.1:{tls[0]}', cert: '{tls[1].cert}', "
                                  f"key: '{tls[1].key}'}}") + "}\n"
        + speech,
        encoding="utf-8",
    )
    log = (work / "ivr.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(config), "run"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (work / "var" / "ivr.sock").exists():
            r = subprocess.run([sys.executable, "-m", "ivr.cli", "--config", str(config), "status"], cwd=ROOT,
                               capture_output=True, text=True)
            if r.returncode == 0 and json.loads(r.stdout).get("sip"):
                return proc
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"ivr run did not start: {(work / 'ivr.log').read_text()[-2000:]}")


def media_worker_pids(pid: int, want: int) -> list[int]:
    """The daemon's media workers (ivr.rtp.worker), its child processes: once ``want`` of them run (they start
    beside the daemon's READY), or what runs after 10 s."""
    found: list[int] = []
    deadline = time.monotonic() + 10
    while True:
        found = []
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                if b"ivr.rtp.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except OSError:
                continue
        if len(found) >= want or time.monotonic() > deadline:
            return sorted(found)
        time.sleep(0.1)


def start_pyvoip(work: Path, prompts: dict[str, Path], sip_port: int, server_port: int,
                 rtp: tuple[int, int]) -> subprocess.Popen[Any]:
    python = ensure_pyvoip()
    proc = subprocess.Popen(
        [str(python), str(BENCH / "pyvoip_answer.py"), "--sip-port", str(sip_port), "--server-port",
         str(server_port), "--rtp-ports", f"{rtp[0]}-{rtp[1]}", "--menu", str(prompts["menu_u8"]),
         "--chosen", str(prompts["chosen_u8"])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(work / "pyvoip.log").open("w"), text=True)
    if not wait_line(proc, "ready", 40):
        proc.kill()
        raise RuntimeError(f"pyVoIP did not start: {(work / 'pyvoip.log').read_text()[-2000:]}")
    return proc


def start_capture(work: Path, sip_port: int, rtp: tuple[int, int]) -> tuple[subprocess.Popen[Any], Path, Path]:
    pcap, err = work / "capture.pcap", work / "dumpcap.err"
    proc = subprocess.Popen(["dumpcap", "-i", "lo", "-P", "-B", "128", "-f",
                             f"udp and (portrange {rtp[0]}-{rtp[1]} or port {sip_port})", "-w", str(pcap)],
                            stdout=subprocess.DEVNULL, stderr=err.open("w"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        if "Capturing on" in err.read_text(errors="replace"):
            time.sleep(0.3)
            return proc, pcap, err
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"dumpcap did not start: {err.read_text()[-1000:]}")


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def sipp_counts(stats: Path) -> tuple[int, int, int]:
    """(created, successful, failed) from sipp's -trace_stat CSV (last line, cumulative columns)."""
    lines = [x for x in stats.read_text(errors="replace").splitlines() if x.strip()]
    if len(lines) < 2:
        return 0, 0, 0
    head, last = lines[0].split(";"), lines[-1].split(";")
    row = dict(zip(head, last, strict=False))
    return int(row.get("TotalCallCreated", 0)), int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))


def speech_calls(work: Path, args: argparse.Namespace, n: int, ivr_sip: int, t_start: float,
                 res: RunResult) -> tuple[float, float] | None:
    """Once all N DTMF calls are up, ``--speech-calls`` more callers who keep speaking keywords to the
    daemon; returns the wall-clock window in which all of them were up (for the send interval beside them)."""
    k = args.speech_calls
    rate = 5.0
    scenario, loops, play = speech_caller(work, args.settle, k, rate)
    time.sleep(max(0.0, t_start + n / args.rate + 1.0 - time.monotonic()))
    stats = work / "sipp_speech_stats.csv"
    cmd = ["sipp", f"127.0.0.1:{ivr_sip}", "-sf", str(scenario), "-s", SPEECH_SERVICE, "-m", str(k), "-l", str(k),
           "-r", str(rate), "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()),
           "-timeout", f"{int(k / rate + loops * play + 120)}s", "-nostdin", "-trace_stat", "-stf", str(stats),
           "-fd", "1", "-trace_err"]
    print(f"speech calls starting: {k}, {loops} × {play:.1f} s of keywords each", file=sys.stderr, flush=True)
    begin = time.time()
    with (work / "sipp_speech.out").open("w") as out:
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=k / rate + loops * play + 150)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            res.notes.append("speech sipp killed after its time limit")
    res.speech_calls = k
    _, res.speech_completed, res.speech_failed = sipp_counts(stats)
    first_up, last_up = begin + k / rate + 1.0, begin + loops * play - 1.0
    return (first_up, last_up) if last_up > first_up else None


def run_one(impl: str, n: int, args: argparse.Namespace, prompts: dict[str, Path], root: Path,
            first_frame: bytes | None) -> RunResult:
    work = root / f"{impl}-{n}"
    work.mkdir()
    res = RunResult(impl=impl, calls=n, rate=args.rate, load_avg_before=os.getloadavg())
    rtp = RTP_RANGES[impl]
    impl_sip, sipp_sip, sipp_media = free_port(), free_port(), free_port()
    capture, pcap, cap_err = start_capture(work, impl_sip, rtp)
    sampler = Sampler()
    target: subprocess.Popen[Any] | None = None
    hog: subprocess.Popen[Any] | None = None
    window: tuple[float, float] | None = None
    inband_key: tuple[bytes, bytes] | None = None
    tls: tuple[int, Any] | None = None
    keys_given: dict[int, list[list[float]]] | None = None
    callers: list[dict[str, Any]] = []
    workers: list[int] = []
    try:
        if impl == "ivr":
            if args.transport == "tls":
                sys.path.insert(0, str(ROOT))
                from tests.integration.pki import make_pki  # the tests' openssl-made CA and certificate

                pki = make_pki(work / "pki")
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind(("127.0.0.1", 0))
                    tls = (int(probe.getsockname()[1]), pki)
            target = start_ivr(work, prompts, impl_sip, rtp, speech_calls=args.speech_calls,
                               decode_nice=args.decode_nice, unsaved_seconds=args.unsaved_seconds, tls=tls,
                               media_worker=args.media_worker == "on", media_priority=args.media_priority,
                               media_workers=args.media_workers)
            if args.media_worker == "on":
                workers = media_worker_pids(target.pid, args.media_workers or 1)
            if workers:
                sampler.watch("media", *workers)
            if len(workers) > 1:
                for worker in workers:
                    sampler.watch(f"media {worker}", worker)
        else:
            target = start_pyvoip(work, prompts, impl_sip, sipp_sip, rtp)
        sampler.watch(impl, target.pid)
        sampler.watch("dumpcap", capture.pid)
        sampler.start()
        if args.disk_hog:
            hog = disk_hog(work / "var")
        time.sleep(1.0)  # a baseline RSS sample, and the daemon settled
        if len(workers) == 1:
            with contextlib.suppress(OSError):
                res.notes.append(f"media worker nice {os.getpriority(os.PRIO_PROCESS, workers[0])} "
                                 f"(daemon {os.getpriority(os.PRIO_PROCESS, target.pid)})")
        elif workers:
            with contextlib.suppress(OSError):
                nices = ", ".join(f"pid {w} nice {os.getpriority(os.PRIO_PROCESS, w)}" for w in workers)
                res.notes.append(f"{len(workers)} media workers: {nices} "
                                 f"(daemon {os.getpriority(os.PRIO_PROCESS, target.pid)})")
        hold_ms = int(1000 * (n / args.rate + args.settle))
        stats = work / "sipp_stats.csv"
        scenario = FILES / "dtmf_call.xml"
        if args.inband:
            scenario, inband_key = inband_caller(work, hold_ms / 1000, 60 + hold_ms / 1000)
        cmd = ["sipp", f"127.0.0.1:{impl_sip}", "-sf", str(scenario), "-s", SERVICE,
               "-m", str(n), "-l", str(n), "-r", str(args.rate), "-d", str(hold_ms),
               "-i", "127.0.0.1", "-p", str(sipp_sip), "-mi", "127.0.0.1", "-mp", str(sipp_media),
               "-timeout", f"{int(hold_ms / 1000 + 120)}s", "-nostdin", "-max_socket", "2048",
               "-trace_stat", "-stf", str(stats), "-fd", "1", "-trace_err"]
        t_start = time.monotonic()
        print(f"calls starting: {impl} N={n}, all up in {n / args.rate:.1f} s, first key in {hold_ms / 1000:.1f} s",
              file=sys.stderr, flush=True)
        if tls is not None:  # sipp has no TLS or SRTP here: bench/tls_callers.py places the same calls
            cmd = [sys.executable, str(BENCH / "tls_callers.py"), "--target", f"127.0.0.1:{tls[0]}", "--ca",
                   str(tls[1].ca), "--calls", str(n), "--rate", str(args.rate), "--settle", str(args.settle)]
        with (work / "sipp.out").open("w") as out:
            sipp = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT)
            sampler.watch("sipp", sipp.pid)
            if impl == "ivr" and args.speech_calls:
                window = speech_calls(work, args, n, impl_sip, t_start, res)
            try:
                sipp.wait(timeout=hold_ms / 1000 + 200)
            except subprocess.TimeoutExpired:
                sipp.kill()
                sipp.wait()
                res.notes.append("sipp killed after its time limit")
        t_end = time.monotonic()
        time.sleep(0.5)
        if tls is not None:
            out_text = (work / "sipp.out").read_text()
            callers = json.loads(out_text[out_text.index("["):]) if "[" in out_text else []
            res.attempted = n
            res.completed = sum(1 for c in callers if c["bye"] and not c["error"])
            res.failed = n - res.completed
            keys_given = {int(c["ivr_rtp_port"]): [[c["key_end"], c["key_end"]]] for c in callers
                          if c["key_end"] is not None and c["ivr_rtp_port"] is not None}
            ok, bad = sum(c["srtp_ok"] for c in callers), sum(c["srtp_failed"] for c in callers)
            res.notes.append(f"TLS+SRTP: the callers decrypted {ok} of the appliance's first packets, {bad} failed")
            errors = sorted({str(c["error"]) for c in callers if c["error"]})
            if errors:
                res.notes.append(f"caller errors: {errors[:3]}")
        else:
            res.attempted, res.completed, res.failed = sipp_counts(stats)
        if sipp.returncode not in (0, 1):
            res.notes.append(f"sipp exit {sipp.returncode}")
        res.ivr_cpu_avg_pct, res.ivr_cpu_peak_pct = sampler.cpu(impl, t_start, t_end)
        res.media_cpu_avg_pct, res.media_cpu_peak_pct = sampler.cpu("media", t_start, t_end)
        steps = [t_start + 10 * k for k in range(int((t_end - t_start) // 10) + 1)] + [t_end]
        each = [f"media {w}" for w in workers] if len(workers) > 1 else []
        for name in each:
            avg, peak = sampler.cpu(name, t_start, t_end)
            res.notes.append(f"{name} CPU avg/peak % {fmt(r2(avg))} / {fmt(r2(peak))}")
        for name in (impl, "media", *each):
            cpu_by_10s = [sampler.cpu(name, a, b)[0] for a, b in zip(steps, steps[1:], strict=False) if b - a >= 2]
            if any(x is not None for x in cpu_by_10s):
                res.notes.append(f"{name} CPU % by 10 s: " + " ".join(fmt(x) for x in cpu_by_10s))
        media_rss = sampler.rss("media", t_start, t_end)[1]
        res.media_rss_peak_mb = media_rss / 1024 if media_rss is not None else None
        res.sipp_cpu_avg_pct, res.sipp_cpu_peak_pct = sampler.cpu("sipp", t_start, t_end)
        res.capture_cpu_avg_pct = sampler.cpu("dumpcap", t_start, t_end)[0]
        before, peak = sampler.rss(impl, t_start, t_end)
        if before is not None and peak is not None:
            res.ivr_rss_before_mb = before / 1024
            res.ivr_rss_peak_mb = peak / 1024
            res.ivr_rss_per_call_mb = (peak - before) / 1024 / n
    finally:
        sampler.halt.set()
        if hog is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hog.pid, signal.SIGTERM)  # the loop and the dd it is in
            hog.wait(timeout=30)
        if target is not None:
            if impl == "pyvoip" and target.stdin is not None:
                with contextlib.suppress(OSError):
                    target.stdin.write("stop\n")
                    target.stdin.close()
                try:
                    target.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    target.kill()
                    target.wait()
            else:
                stop(target)
        stop(capture, signal.SIGINT)
    m = re.findall(r"received/dropped on interface [^\n]*?: (\d+)/(\d+)", cap_err.read_text(errors="replace"))
    if m:
        res.capture_dropped = int(m[-1][1])
    fig = analyse(pcap, impl_sip, rtp, first_frame if impl == "pyvoip" else None, window, inband_key, keys_given)
    if tls is not None:  # INVITE -> 200 as the callers timed it: TLS hides the SIP from the capture
        fig.invite_200_ms = [c["invite_200_ms"] for c in callers if c["invite_200_ms"] is not None]
        fig.invites_unanswered = n - len(fig.invite_200_ms)
    if window is not None:
        res.window = window
        w = fig.window_gaps_ms
        res.window_send_interval_p50_ms, res.window_send_interval_p99_ms = r2(pct(w, 0.5)), r2(pct(w, 0.99))
        res.window_send_interval_max_ms = r2(max(w)) if w else None
        res.window_gaps = len(w)
    res.packets_captured = fig.packets
    if res.speech_calls:
        res.speech = speech_figures(work / "var" / "ivr.db")
    if args.inband:
        res.inband = inband_figures(work / "var" / "ivr.db")
    res.invite_200_p50_ms, res.invite_200_p99_ms = r2(pct(fig.invite_200_ms, 0.5)), r2(pct(fig.invite_200_ms, 0.99))
    res.invites_unanswered = fig.invites_unanswered
    res.send_interval_p50_ms, res.send_interval_p99_ms = r2(pct(fig.gaps_ms, 0.5)), r2(pct(fig.gaps_ms, 0.99))
    res.send_interval_max_ms = r2(max(fig.gaps_ms, default=0.0)) if fig.gaps_ms else None
    if fig.gap_ends:
        first = min(fig.gap_ends)
        by_10s: dict[int, list[float]] = {}
        for end, gap in zip(fig.gap_ends, fig.gaps_ms, strict=True):
            by_10s.setdefault(int((end - first) // 10), []).append(gap)
        res.notes.append("send p99 by 10 s of the run: " + " ".join(
            f"{fmt(pct(gaps, 0.99))}" for _, gaps in sorted(by_10s.items())))
    res.streams = fig.streams
    res.dtmf_next_prompt_p50_ms, res.dtmf_next_prompt_p99_ms = r2(pct(fig.dtmf_ms, 0.5)), r2(pct(fig.dtmf_ms, 0.99))
    res.dtmf_next_prompt_max_ms = r2(max(fig.dtmf_ms)) if fig.dtmf_ms else None
    res.keys_without_prompt = fig.keys_without_prompt
    for name in ("ivr_cpu_avg_pct", "ivr_cpu_peak_pct", "media_cpu_avg_pct", "media_cpu_peak_pct",
                 "media_rss_peak_mb", "sipp_cpu_avg_pct", "sipp_cpu_peak_pct", "capture_cpu_avg_pct",
                 "ivr_rss_before_mb", "ivr_rss_peak_mb"):
        setattr(res, name, r2(getattr(res, name)))
    if res.ivr_rss_per_call_mb is not None:
        res.ivr_rss_per_call_mb = round(res.ivr_rss_per_call_mb, 3)
    if not args.keep:
        pcap.unlink(missing_ok=True)
    return res


# -- output -----------------------------------------------------------------------------------------------

def fmt(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"
    return str(x)


def table(results: list[RunResult]) -> str:
    head = ["impl", "N", "load", "ok/fail", "INV→200 p50/p99", "send p50/p99/max", "DTMF→prompt p50/p99",
            "CPU avg/peak %", "media CPU avg/peak %", "RSS peak MB", "MB/call", "sipp CPU %"]
    rows = [head]
    for r in results:
        rows.append([
            r.impl, str(r.calls), f"{r.load_avg_before[0]:.2f}", f"{r.completed}/{r.failed}",
            f"{fmt(r.invite_200_p50_ms)} / {fmt(r.invite_200_p99_ms)}",
            f"{fmt(r.send_interval_p50_ms)} / {fmt(r.send_interval_p99_ms)} / {fmt(r.send_interval_max_ms)}",
            f"{fmt(r.dtmf_next_prompt_p50_ms)} / {fmt(r.dtmf_next_prompt_p99_ms)}",
            f"{fmt(r.ivr_cpu_avg_pct)} / {fmt(r.ivr_cpu_peak_pct)}",
            f"{fmt(r.media_cpu_avg_pct)} / {fmt(r.media_cpu_peak_pct)}", fmt(r.ivr_rss_peak_mb),
            fmt(r.ivr_rss_per_call_mb), f"{fmt(r.sipp_cpu_avg_pct)} / {fmt(r.sipp_cpu_peak_pct)}",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.impl} N={r.calls}: " + "; ".join(r.notes + [
        f"{r.attempted} attempted", f"{r.streams} RTP streams", f"{r.packets_captured} packets captured",
        f"capture dropped {fmt(r.capture_dropped)}", f"dumpcap CPU {fmt(r.capture_cpu_avg_pct)} %",
        f"INVITEs unanswered {r.invites_unanswered}",
        f"keys without a next prompt {r.keys_without_prompt}"]
        + ([f"in-band: {r.calls} keys sent, " + ", ".join(f"{k} {v}" for k, v in r.inband.items())]
           if r.inband else [])
        + ([f"send interval in the window p50/p99/max {fmt(r.window_send_interval_p50_ms)} / "
            f"{fmt(r.window_send_interval_p99_ms)} / {fmt(r.window_send_interval_max_ms)} ms ({r.window_gaps} gaps)"]
           if r.window else [])
        + ([f"speech calls {r.speech_completed}/{r.speech_failed} of {r.speech_calls}: "
            + ", ".join(f"{k} {fmt(v)}" for k, v in r.speech.items())] if r.speech_calls else [])) for r in results]
    return "\n".join(lines + ["", *notes])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", default="10,50,100,200,300", help="comma-separated concurrent call counts")
    p.add_argument("--impl", default="ivr,pyvoip", help="ivr, pyvoip or both")
    p.add_argument("--rate", type=float, default=10.0,
                   help="new calls per second (default 10: the appliance admits 10 INVITEs/s per source, burst 20)")
    p.add_argument("--settle", type=float, default=8.0,
                   help="seconds all N calls are up together before the first key (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--json-file", type=Path, default=None, help="also write that JSON object to this file")
    p.add_argument("--keep", type=Path, default=None, help="keep captures, logs and configs under this folder")
    p.add_argument("--speech-calls", type=int, default=0, metavar="K",
                   help="ivr only: K more callers who keep speaking keywords to a listening menu once the N calls "
                        "are up, so the daemon decodes speech on its own threads beside them; the send interval is "
                        "also given for the time they are all up, and the recognitions from the event log")
    p.add_argument("--decode-nice", type=int, default=None, metavar="N",
                   help="with --speech-calls: the daemon's speech.decode_nice (default: the config default)")
    p.add_argument("--unsaved-seconds", type=float, default=None, metavar="S",
                   help="ivr only: the daemon's calls.navigation_unsaved_seconds (0: every event durable before the "
                        "call goes on, as before issue 19; default: the config default)")
    p.add_argument("--inband", action="store_true",
                   help="ivr only: callers without telephone-event, who talk until their key and send it as a tone in "
                        "their audio, so the in-band DTMF detector runs for every call")
    p.add_argument("--transport", choices=("udp", "tls"), default="udp",
                   help="ivr only: tls places the calls over SIP/TLS with SDES-SRTP required (bench/tls_callers.py "
                        "instead of sipp, which has neither here; INVITE -> 200 then as the callers time it)")
    p.add_argument("--media-worker", choices=("on", "off"), default="on",
                   help="ivr only: sip.media_worker (on: the calls' media in a worker process, the default; off: on "
                        "the daemon's event loop, as before issue 19 item 2)")
    p.add_argument("--media-priority", type=int, default=None,
                   help="ivr only: sip.media_priority, nice levels the media worker runs above the daemon (default: "
                        "the config's, 10; 0: the same as the daemon)")
    p.add_argument("--media-workers", type=int, default=None, metavar="N",
                   help="ivr only: sip.media_workers, media worker processes the calls are spread over (default: the "
                        "config's, 1); the media CPU figures are their sum, each one's in the notes")
    p.add_argument("--disk-hog", action="store_true",
                   help="run dd ... oflag=dsync in a loop on the state directory's disk during each run")
    args = p.parse_args()
    counts = [int(x) for x in args.calls.split(",") if x.strip()]
    impls = [x.strip() for x in args.impl.split(",") if x.strip()]
    for impl in impls:
        if impl not in RTP_RANGES:
            p.error(f"unknown --impl {impl!r} (ivr, pyvoip)")
    if args.transport == "tls" and (impls != ["ivr"] or args.inband or args.speech_calls):
        p.error("--transport tls needs --impl ivr, without --inband or --speech-calls")
    if args.inband and impls != ["ivr"]:
        p.error("--inband needs --impl ivr")
    if args.media_workers is not None and args.media_workers < 1:
        p.error("--media-workers is 1 or more")
    missing = [t for t in ("sipp", "dumpcap", "espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        p.error(f"not installed: {', '.join(missing)}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="ivr-load-", dir=args.keep))
    else:
        root = Path(tempfile.mkdtemp(prefix="ivr-load-"))
    try:
        prompts = make_prompts(root, max(counts) / args.rate + args.settle + 10)
        first_frame = pyvoip_first_frame(prompts["chosen_u8"].read_bytes())
        results: list[RunResult] = []
        for n in counts:
            for impl in impls:
                try:
                    r = run_one(impl, n, args, prompts, root, first_frame)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    # A server that cannot start is a figure of the run too, not the end of the bench.
                    r = RunResult(impl=impl, calls=n, rate=args.rate, load_avg_before=os.getloadavg(),
                                  notes=[f"not run: {exc}"[:400]])
                results.append(r)
                if not args.json:
                    print(table([r]).splitlines()[2], file=sys.stderr, flush=True)
        doc = json.dumps({"command": sys.argv, "results": [asdict(r) for r in results]}, indent=2)
        if args.json_file is not None:
            args.json_file.write_text(doc + "\n")
        print(doc if args.json else table(results))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
