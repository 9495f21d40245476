"""The load benchmark's baseline: a pyVoIP 1.6.8 answering app doing what the bench's menu flow does.

It answers, plays the menu prompt, waits for a key, stops the prompt and plays the next one, then hangs
up. Run by bench/load.py in its own venv (bench/.venv-pyvoip, made by the bench), never imported by it:

    bench/.venv-pyvoip/bin/python bench/pyvoip_answer.py --sip-port P --server-port S \
        --rtp-ports 42000-43999 --menu menu.u8 --chosen chosen.u8

Audio files are what pyVoIP's ``write_audio`` takes: 8 kHz mono unsigned 8-bit raw. Two things pyVoIP
1.6.8 needs that are not the app's business, done here as plainly as possible:
- it REGISTERs with its "server" at start and sends every response to that server's address, so the
  server is sipp's SIP port: before sipp starts, this script answers that one REGISTER itself (200 OK),
  then frees the port for sipp;
- it has no call to stop a prompt, so barge-in swaps the call's send buffer for an empty one before the
  next prompt is written (what a pyVoIP IVR has to do; the library's own pacing is left untouched).
The app acts on a key when pyVoIP reports it (at the key's first RFC 2833 packet); pyVoIP itself runs
the call callback 1 s after the INVITE (a threading.Timer in VoIPPhone), so it answers after 1 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path

from pyVoIP.RTP import RTPPacketManager
from pyVoIP.VoIP import CallState, InvalidStateError, VoIPCall, VoIPPhone

POLL = 0.01
"""Seconds between DTMF polls (pyVoIP has no DTMF callback for apps; its examples poll)."""
KEY_TIMEOUT = 120.0


def answer_register(sock: socket.socket, deadline: float) -> bool:
    """Answer pyVoIP's start-up REGISTER with 200 OK (headers echoed, as a registrar would)."""
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(8192)
        except TimeoutError:
            continue
        text = data.decode("utf8", "replace")
        if not text.startswith("REGISTER "):
            continue
        keep = [line for line in text.split("\r\n")
                if line.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq", "contact")]
        reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
        sock.sendto(reply.encode(), addr)
        return True
    return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--server-port", type=int, required=True, help="sipp's SIP port (pyVoIP's 'server')")
    p.add_argument("--rtp-ports", default="42000-43999")
    p.add_argument("--menu", type=Path, required=True)
    p.add_argument("--chosen", type=Path, required=True)
    args = p.parse_args()
    menu, chosen = args.menu.read_bytes(), args.chosen.read_bytes()
    low, high = (int(x) for x in args.rtp_ports.split("-"))
    counts = {"answered": 0, "keys": 0, "hung_up": 0, "errors": 0}
    lock = threading.Lock()

    def count(key: str) -> None:
        with lock:
            counts[key] += 1

    def on_call(call: VoIPCall) -> None:
        try:
            call.answer()
            count("answered")
            call.write_audio(menu)
            deadline = time.monotonic() + KEY_TIMEOUT
            while call.state == CallState.ANSWERED and time.monotonic() < deadline:
                if call.get_dtmf() == "2":
                    break
                time.sleep(POLL)
            else:
                return
            count("keys")
            for client in call.RTPClients:  # barge-in: drop what is left of the menu prompt
                client.pmout = RTPPacketManager()
            call.write_audio(chosen)
            time.sleep(len(chosen) / 8000 + 0.1)
            if call.state == CallState.ANSWERED:
                call.hangup()
                count("hung_up")
        except (InvalidStateError, OSError) as exc:
            count("errors")
            print(f"call {getattr(call, 'call_id', '?')}: {exc!r}", file=sys.stderr)

    reg = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reg.bind(("127.0.0.1", args.server_port))
    phone = VoIPPhone("127.0.0.1", args.server_port, "bench", "bench", myIP="127.0.0.1", callCallback=on_call,
                      sipPort=args.sip_port, rtpPortLow=low, rtpPortHigh=high)
    helper = threading.Thread(target=answer_register, args=(reg, time.monotonic() + 20), daemon=True)
    helper.start()
    phone.start()  # returns once registered
    helper.join()
    reg.close()
    print("ready", flush=True)
    try:
        for line in sys.stdin:  # the bench closes stdin (or sends "stop") to end the run
            if line.strip() == "stop":
                break
    finally:
        print(f"counts {counts}", flush=True)
    # Not phone.stop(): it would unREGISTER with sipp's port, which is gone by now, and wait 30 s for it.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
