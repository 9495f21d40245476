"""Run a real baresip (Debian's 1.0) headless on loopback and drive it through ctrl_tcp.

No audio device: the source is ``aufile`` reading a WAV of silence (``ausine`` only
does 48 kHz), the player ``aubridge`` (a bridge
nobody reads). No stdin UI (``stdio.so`` needs a terminal); commands and events travel as JSON in
netstrings over the ``ctrl_tcp`` socket, bound to 127.0.0.1. Every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ivr.speech import synth

CONFIG = """\
poll_method\t\tpoll
sip_listen\t\t127.0.0.1:{sip_port}
net_interface\t\t127.0.0.1
call_local_timeout\t30
call_max_calls\t\t1
audio_player\t\taubridge,nobody
audio_source\t\taufile,{silence}
audio_alert\t\taubridge,nobody
audio_buffer\t\t20-160
rtp_ports\t\t{rtp_min}-{rtp_max}
rtcp_mux\t\tno
jitter_buffer_delay\t1-10
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\taufile.so
module\t\t\taubridge.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}
"""

SILENCE_SECONDS = 60

ACCOUNTS = "<sip:baresip@127.0.0.1:{sip_port}>;regint=0;audio_codecs=PCMU\n"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_sip_port() -> int:
    """A port free for UDP and TCP both: baresip listens for SIP on the two at once."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


class Baresip:
    """One baresip process with a private config dir; ``events`` holds everything it reported."""

    def __init__(self, workdir: Path, mediaenc: str | None = None, auto_answer: bool = False,
                 user: str = "baresip", cafile: Path | None = None) -> None:
        """``mediaenc``: the account's media encryption (``srtp``: best effort, RTP/AVP with a=crypto;
        ``srtp-mand``: RTP/SAVP), with baresip's own srtp module (libre's SRTP). ``cafile``: the CAs its SIP over
        TLS trusts (``sip_cafile``); dial a ``;transport=tls`` URI to use it."""
        self.dir = workdir / "baresip"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_sip_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        # 8 kHz 16-bit mono, longer than any test call
        silence = synth.write_wav(self.dir / "silence.wav", synth.silence(SILENCE_SECONDS))
        rtp_min = 20000 + (self.sip_port % 1000) * 10  # a small private range; baresip picks within it
        (self.dir / "config").write_text(
            CONFIG.format(silence=silence, sip_port=self.sip_port, ctrl_port=self.ctrl_port,
                          rtp_min=rtp_min, rtp_max=rtp_min + 9),
            encoding="utf-8",
        )
        if mediaenc is not None:
            with (self.dir / "config").open("a", encoding="utf-8") as f:
                f.write("module\t\t\tsrtp.so\n")
        if cafile is not None:
            with (self.dir / "config").open("a", encoding="utf-8") as f:
                f.write(f"sip_cafile\t\t{cafile}\n")
        account = ACCOUNTS.format(sip_port=self.sip_port).replace("sip:baresip@", f"sip:{user}@")
        if mediaenc is not None:
            account = account.replace("\n", f";mediaenc={mediaenc}\n")
        if auto_answer:  # a phone that picks up by itself: the callback dialer's customer
            account = account.replace("\n", ";answermode=auto\n")
        (self.dir / "accounts").write_text(account, encoding="utf-8")
        (self.dir / "contacts").write_text("", encoding="utf-8")
        self.log = self.dir / "baresip.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.events: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self._buf = b""

    def start(self, timeout: float = 15.0) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["baresip", "-4", "-f", str(self.dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1.0)
                break
            except OSError:
                time.sleep(0.1)
        if self.sock is None:
            raise AssertionError(f"baresip ctrl_tcp never listened (exit {self.proc.poll()})\n{self.output()}")
        self.sock.settimeout(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Send one long command (like ``/dial``) and wait for its response."""
        assert self.sock is not None
        token = f"t{len(self.responses)}-{name}"
        msg = {"command": name, "params": params, "token": token}
        self.sock.sendall(netstring(json.dumps(msg).encode()))
        found = self._wait(lambda: next((r for r in self.responses if r.get("token") == token), None), timeout)
        if found is None:
            raise AssertionError(f"no response to {name} {params}\n{self.output()}")
        return found

    def wait_event(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        """The first event of type ``kind`` (e.g. ``CALL_ESTABLISHED``), waiting with a bound."""
        found = self._wait(lambda: next((e for e in self.events if e.get("type") == kind), None), timeout)
        if found is None:
            seen = [e.get("type") for e in self.events]
            raise AssertionError(f"baresip never reported {kind} (saw {seen})\n{self.output()}")
        return found

    def _wait(self, find: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.2) + 2):
            found = find()
            if found is not None or time.monotonic() > deadline:
                return found
            self._read()
        return find()

    def _read(self) -> None:
        assert self.sock is not None
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError:
            time.sleep(0.2)
            return
        if not chunk:
            time.sleep(0.2)  # baresip closed the socket: nothing more will come
            return
        self._buf += chunk
        while True:
            head, sep, rest = self._buf.partition(b":")
            if not sep or not head.isdigit():
                return
            size = int(head)
            if len(rest) < size + 1:
                return
            body, self._buf = rest[:size], rest[size + 1 :]
            msg = json.loads(body)
            if msg.get("event"):
                self.events.append(msg)
            elif msg.get("response"):
                self.responses.append(msg)

    def stop(self, timeout: float = 5.0) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
