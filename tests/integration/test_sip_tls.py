"""SIP over TLS with real peers (issue 15 items 12-14): baresip over TLS with mandatory SRTP walks the menu; the
appliance registers over TLS (SRV-free, by ``sip.transport_peers``) at a registrar whose certificate the site CA
signed, keeping it alive with RFC 5626 CRLF pings on that one connection, and refuses to talk to one whose
certificate it did not (no REGISTER leaves, one clear log line); with ``client_certs: required`` a client
holding a certificate from another CA is refused at the handshake while one from the site CA is served."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ivr.sip.framing import PING, StreamFramer
from tests.conftest import Env
from tests.integration.appliance import run_appliance
from tests.integration.baresip.client import Baresip, free_sip_port
from tests.integration.pki import Pki, make_pki
from tests.integration.test_baresip import walk_menu_over_srtp

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl (Debian openssl) not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def with_tls(env: Env, pki: Pki, port: int, extra: str = "", sip_extra: str = "", host: str = "127.0.0.1") -> None:
    text = env.config.read_text(encoding="utf-8")
    tls = f"tls: {{listen: '{host}:{port}', cert: '{pki.cert}', key: '{pki.key}', ca: '{pki.ca}'{extra}}}, "
    text = text.replace("sip: {listen: '127.0.0.1:0',", f"sip: {{{tls}{sip_extra}listen: '127.0.0.1:0',", 1)
    assert "tls: {listen" in text
    env.config.write_text(text, encoding="utf-8")


@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip (Debian baresip) not installed")
def test_baresip_over_tls_with_srtp_walks_the_menu(env: Env, pki: Pki, tmp_path: Path) -> None:
    port = free_sip_port()
    with_tls(env, pki, port, sip_extra="srtp: required, ")
    answered = walk_menu_over_srtp(env, Baresip(tmp_path, mediaenc="srtp-mand", cafile=pki.ca),
                                   lambda _udp_port: f"sip:500@127.0.0.1:{port};transport=tls")
    assert answered["transport"] == "tls", answered


@dataclass
class TlsRegistrar:
    """A registrar on 127.0.0.2 over TLS with the given certificate: it answers each REGISTER 200 and keeps
    what it received."""

    cert: Path
    key: Path
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    handshakes: int = 0
    pings: int = 0

    def __post_init__(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self._listener = socket.create_server(("127.0.0.2", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._context = context
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            try:
                with self._context.wrap_socket(raw, server_side=True) as conn:
                    self.handshakes += 1
                    self._talk(conn, deadline)
            except (OSError, ssl.SSLError):
                continue

    def _talk(self, conn: ssl.SSLSocket, deadline: float) -> None:
        conn.settimeout(0.2)
        framer = StreamFramer()
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            for message in framer.feed(data):
                if message == PING:
                    self.pings += 1
                    conn.sendall(b"\r\n")
                    continue
                self.received.append(message)
                if message.startswith(b"REGISTER "):
                    conn.sendall(self._ok(message))

    @staticmethod
    def _ok(request: bytes) -> bytes:
        lines = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        keep = [ln for ln in lines if ln.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"call-id", b"cseq",
                                                                               b"contact")]
        to = next(ln for ln in lines if ln.lower().startswith(b"to:"))
        head = [b"SIP/2.0 200 OK", *keep, to + b";tag=reg1", b"Expires: 300", b"Content-Length: 0"]
        return b"\r\n".join(head) + b"\r\n\r\n"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


@pytest.fixture
def registrar_env(env: Env, pki: Pki) -> Iterator[Env]:
    (env.root / "pbx.secret").write_text("regpass\n")
    yield env


def registration_lines(env: Env, want: str) -> list[str]:
    lines: list[str] = []
    for _ in range(100):  # bounded
        lines = env.ivr("status").json()["registrations"]
        if lines and want in lines[0]:
            break
        time.sleep(0.1)
    return lines


@pytest.mark.parametrize("trusted", [True, False], ids=["site-ca", "rogue-ca"])
def test_registration_over_tls_only_to_a_registrar_the_site_ca_vouches_for(registrar_env: Env, pki: Pki,
                                                                            trusted: bool) -> None:
    env = registrar_env
    registrar = TlsRegistrar(pki.cert if trusted else pki.rogue_cert, pki.key if trusted else pki.rogue_key)
    account = (f"accounts: [{{aor: 'sip:2000@127.0.0.2', registrar: '127.0.0.2:{registrar.port}', "
               "username: '2000', password_file: pbx.secret, keepalive_seconds: 0.5}], "
               "transport_peers: [{peers: [127.0.0.2], transport: tls}], ")
    with_tls(env, pki, free_sip_port(), sip_extra=account)
    try:
        for env_, _port, log in run_appliance(env):
            lines = registration_lines(env_, "registered" if trusted else "failed")
            for _ in range(50):  # bounded: the CRLF keep-alives ride the registration's connection
                if registrar.pings >= 2 or not trusted:
                    break
                time.sleep(0.1)
            text = log.read_text()
    finally:
        registrar.stop()
    if trusted:
        assert lines and lines[0].startswith("sip:2000@127.0.0.2: registered, expires in"), lines
        first = registrar.received[0]
        assert first.startswith(b"REGISTER sip:127.0.0.2") and b"SIP/2.0/TLS" in first, first[:300]
        assert b";transport=tls" in first  # our Contact: the registrar's requests come back over TLS
        assert registrar.pings >= 2 and registrar.handshakes == 1  # RFC 5626 keep-alives on the one connection
    else:
        assert registrar.received == [], registrar.received
        assert lines and "registered" not in lines[0], lines
        refused = [ln for ln in text.splitlines() if "tls connection to 127.0.0.2" in ln]
        assert refused and "CERTIFICATE_VERIFY_FAILED" in refused[0], text[-3000:]


def test_a_client_certificate_from_another_ca_is_refused(env: Env, pki: Pki) -> None:
    port = free_sip_port()
    with_tls(env, pki, port, extra=", client_certs: required", host="127.0.0.2")  # apart from UDP's address
    options = (f"OPTIONS sip:500@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1\r\n"
               "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:500@127.0.0.1>\r\nCall-ID: tls-probe\r\n"
               "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()

    def ask(cert: Path, key: Path) -> bytes:
        """The answer to an OPTIONS; nothing when the connection is refused."""
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(cert, key)
        try:
            with socket.create_connection(("127.0.0.2", port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.2") as conn:
                conn.sendall(options)
                return conn.recv(65536)  # TLS 1.3: a refused client certificate shows here, not in the handshake
        except (ssl.SSLError, ConnectionError):
            return b""

    for env_, _port, log in run_appliance(env):
        assert env_.ivr("status").json()["sip_listening"]["tls"] == f"127.0.0.2:{port}"
        assert ask(pki.cert, pki.key).startswith(b"SIP/2.0 200 OK")
        assert ask(pki.rogue_cert, pki.rogue_key) == b""
        for _ in range(50):
            if "handshake from" in log.read_text():
                break
            time.sleep(0.1)
        refused = [ln for ln in log.read_text().splitlines() if "tls handshake from 127.0.0.1" in ln]
        assert len(refused) == 1 and "CERTIFICATE_VERIFY_FAILED" in refused[0], refused
        assert "Traceback" not in log.read_text()
