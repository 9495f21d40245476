"""Run a real baresip (Debian's 1.0) headless on loopback and drive it through ctrl_tcp.

No audio device: the source is ``aufile`` reading a WAV of silence (``ausine`` only
does 48 kHz), the player ``aubridge`` (a bridge
nobody reads). No stdin UI (``stdio.so`` needs a terminal); commands and events travel as JSON in
netstrings over the ``ctrl_tcp`` socket, bound to 127.0.0.1. Every wait is bounded.

Or (``default_account``) with the config baresip writes itself, edited only for the above, and (``netns``)
inside a network namespace, its ctrl_tcp reached from there (test_baresip_default).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
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
CLONE_NEWNET = 0x40000000  # setns(2): the network namespace

ACCOUNTS = "<sip:baresip@127.0.0.1:{sip_port}>;regint=0;audio_codecs=PCMU\n"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_sip_port() -> int:
    """A port for baresip's SIP: it listens on UDP and TCP at the port and, for TLS, on TCP at the port + 1.

    Drawn below the kernel's ephemeral range (``ip_local_port_range``, 32768 up by default): a port the kernel
    handed out as free can be taken a moment later by any outgoing connection on the box (a CI run once lost
    baresip's TLS port, ``127.0.0.1:48348``, that way); one below that range can only clash with a listener."""
    for port in random.sample(range(10000, 19999), 200):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tls:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
                tls.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free for SIP over UDP, TCP and TLS on 127.0.0.1")


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


class Baresip:
    """One baresip process with a private config dir; ``events`` holds everything it reported."""

    def __init__(self, workdir: Path, mediaenc: str | None = None, auto_answer: bool = False,
                 user: str = "baresip", cafile: Path | None = None, *, netns: str | None = None,
                 default_account: str | None = None) -> None:
        """``mediaenc``: the account's media encryption (``srtp``: best effort, RTP/AVP with a=crypto;
        ``srtp-mand``: RTP/SAVP), with baresip's own srtp module (libre's SRTP). ``cafile``: the CAs its SIP over
        TLS trusts (``sip_cafile``); dial a ``;transport=tls`` URI to use it.

        ``netns``: run it in that network namespace (``ip netns exec``); its ctrl_tcp is reached there.
        ``default_account``: no config of ours but baresip's own, see :meth:`generate_default_config`."""
        self.dir = workdir / "baresip"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.netns = netns
        self.log = self.dir / "baresip.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.events: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self._buf = b""
        if default_account is not None:
            self.generate_default_config(default_account)
            return
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
        self.args = ["-4"]

    def generate_default_config(self, account: str, timeout: float = 15.0) -> None:
        """baresip's DEFAULT configuration: started once in the empty dir, it writes its config, accounts and
        contacts templates; it is stopped once it says it is ready. Then only what a headless run needs:

        - ``module_app ctrl_tcp.so`` uncommented: commands and events without a terminal (its stdio UI fails
          to load without one); it listens where the template says, ``ctrl_tcp_listen 0.0.0.0:4444``;
        - ``module aufile.so`` and ``module aubridge.so`` uncommented, and ``audio_source``, ``audio_player``
          and ``audio_alert`` moved from ``alsa,default`` to a WAV of silence and a bridge nobody reads: with
          no sound card baresip hangs up the moment the call is answered (``alsa: could not open auplay
          device 'default'``, ``session closed: Unknown error -2``);
        - ``account`` appended to the accounts template, which has none (baresip cannot dial without one).

        Everything else (stun/turn/ice modules, no sip_listen, no net_interface, epoll, rtcp_mux no, ...)
        stays as baresip wrote it; the edits are asserted to apply to the template's exact lines."""
        with self.log.open("wb") as log:
            first = subprocess.Popen([*self._prefix(), "baresip", "-f", str(self.dir)], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and first.poll() is None and "baresip is ready" not in self.output():
                time.sleep(0.1)
        finally:
            first.terminate()
            try:
                first.wait(timeout=5)
            except subprocess.TimeoutExpired:
                first.kill()
                first.wait(timeout=5)
        self.first_start = self.output()
        config = (self.dir / "config").read_text(encoding="utf-8")  # raises if it wrote none: say so
        silence = synth.write_wav(self.dir / "silence.wav", synth.silence(SILENCE_SECONDS))
        edits = {"#module_app\t\tctrl_tcp.so\n": "module_app\t\tctrl_tcp.so\n",
                 "#module\t\t\taufile.so\n": "module\t\t\taufile.so\n",
                 "#module\t\t\taubridge.so\n": "module\t\t\taubridge.so\n",
                 "audio_player\t\talsa,default\n": "audio_player\t\taubridge,nobody\n",
                 "audio_source\t\talsa,default\n": f"audio_source\t\taufile,{silence}\n",
                 "audio_alert\t\talsa,default\n": "audio_alert\t\taubridge,nobody\n"}
        for line, edited in edits.items():
            assert config.count(line) == 1, (line, config)
            config = config.replace(line, edited)
        (self.dir / "config").write_text(config, encoding="utf-8")
        listen = re.search(r"^ctrl_tcp_listen\s+\S+:(\d+)", config, re.MULTILINE)
        assert listen is not None, config
        self.ctrl_port = int(listen.group(1))
        with (self.dir / "accounts").open("a", encoding="utf-8") as f:
            f.write(account.rstrip("\n") + "\n")
        self.args = ["-s"]  # a command-line flag, not config: its SIP trace (with the SDP) goes to its log

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _connect(self) -> socket.socket:
        """A connection to its ctrl_tcp, made inside its network namespace when it has one (the socket stays
        there; this thread comes back to its own namespace at once)."""
        if self.netns is None:
            return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1.0)
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{self.netns}", "rb") as there:
            if libc.setns(there.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {self.netns}")
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1.0)
            finally:
                if libc.setns(home.fileno(), CLONE_NEWNET) != 0:  # never carry on in the wrong namespace
                    os.write(2, f"setns back from {self.netns} failed: errno {ctypes.get_errno()}\n".encode())
                    os._exit(70)

    def start(self, timeout: float = 15.0) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*self._prefix(), "baresip", *self.args, "-f", str(self.dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.sock = self._connect()
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
