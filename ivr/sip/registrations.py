"""The UA's registered accounts: each account's `Registration` state machine, where its REGISTERs go (RFC
3263 failover between the registrar's addresses), its keep-alives, and which transactions are its.

Split out of ivr/sip/ua.py: the UA hands transaction events here first (``on_response``/``on_timeout`` say
whether the transaction was an account's) and calls ``flush`` after each batch to send what the accounts
queued. No I/O: requests go through the shared `TransactionLayer`, raw keep-alive datagrams are collected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from ivr.sip.lexical import SipParseError
from ivr.sip.message import SipResponse
from ivr.sip.register import Registration, RegistrationConfig, RegistrationState, RegistrationStatus
from ivr.sip.resolve import Failover, parse_host
from ivr.sip.transaction import Address, TransactionLayer
from ivr.sip.uri import SipUri, parse_uri

log = logging.getLogger("ivr.sip.ua")


def _norm(host: str) -> str:
    return host.strip().strip("[]").lower()


def uri_host(uri: str) -> str | None:
    """The host of a sip:/sips: URI ("sip:200@pbx.example.com:5060" -> "pbx.example.com"); None otherwise."""
    try:
        parsed = parse_uri(uri.strip().strip("<>"))
    except SipParseError:
        return None
    return parsed.host_port[0] if isinstance(parsed, SipUri) else None


def account_hosts(config: RegistrationConfig, resolved: Iterable[Address] = ()) -> set[str]:
    """Every name an account's server goes by: its AOR's domain, its registrar's host, and the addresses that
    registrar resolved to (so a call to the PBX by IP finds an account configured by name)."""
    hosts = {_norm(host) for host, _ in resolved}
    try:
        hosts.add(_norm(parse_host(config.registrar).host))
    except ValueError:
        pass
    aor = uri_host(config.aor)
    if aor:
        hosts.add(_norm(aor))
    return hosts


def credentials_for(accounts: Sequence[RegistrationConfig], hosts: Iterable[str],
                    resolved: Mapping[str, Sequence[Address]] | None = None) -> tuple[str, str] | None:
    """The digest user and password for an outbound call to ``hosts`` (its Request-URI host, its proxy's name
    and addresses): those of the first ``sip.accounts`` entry whose server is one of them. One rule for every
    outbound leg (bridge, callback, ...): a PBX that challenges our INVITE knows us by the account we register
    there. ``resolved`` maps an AOR to its registrar's addresses. None when no account matches."""
    wanted = {_norm(h) for h in hosts if h}
    for config in accounts:
        if account_hosts(config, (resolved or {}).get(config.aor, ())) & wanted:
            return config.username, config.password
    return None


class Accounts:
    def __init__(self, layer: TransactionLayer) -> None:
        self._layer = layer
        #: Each account's registration and where its REGISTERs go.
        self._entries: dict[str, tuple[Registration, Failover]] = {}
        self._reg_tx: dict[str, Registration] = {}
        self._keepalive_tx: dict[str, Registration] = {}
        self._raw: list[tuple[bytes, Address]] = []

    def add(self, config: RegistrationConfig, destination: Address | Failover, advertised: Address, *,
            user_agent: str, learn_address: bool, now: float) -> tuple[Registration, Failover]:
        if config.aor in self._entries:
            raise ValueError(f"{config.aor} is registered already")
        failover = destination if isinstance(destination, Failover) else Failover.fixed(destination)
        reg = Registration(config, advertised, user_agent=user_agent, learn_address=learn_address)
        self._entries[config.aor] = (reg, failover)
        reg.start(now)
        return reg, failover

    def update_registrar(self, aor: str, targets: list[Address], expires_at: float | None) -> bool:
        entry = self._entries.get(aor)
        if entry is None:
            return False
        entry[1].update(targets, expires_at)
        return True

    def registrar_of(self, aor: str) -> Failover | None:
        entry = self._entries.get(aor)
        return entry[1] if entry is not None else None

    def public_address_for(self, peer_host: str) -> Address | None:
        """The address the registrar at `peer_host` saw us at (received/rport of its 2xx)."""
        for reg, failover in self._entries.values():
            if reg.public_address is not None and any(host == peer_host for host, _ in failover.targets):
                return reg.public_address
        return None

    def unregister(self, aor: str, now: float) -> bool:
        entry = self._entries.get(aor)
        if entry is None:
            return False
        entry[0].unregister(now)
        return True

    def unregister_all(self, now: float) -> None:
        for reg, _ in self._entries.values():
            reg.unregister(now)

    def statuses(self) -> list[RegistrationStatus]:
        return [reg.status() for reg, _ in self._entries.values()]

    @property
    def settled(self) -> bool:
        return not any(reg.in_flight for reg, _ in self._entries.values())

    def get_timer(self) -> float | None:
        timers = [t for reg, _ in self._entries.values() if (t := reg.get_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for reg, _ in self._entries.values():
            reg.handle_timer(now)

    def take_raw(self) -> list[tuple[bytes, Address]]:
        raw, self._raw = self._raw, []
        return raw

    # -- transaction events (True: the transaction was an account's)

    def on_response(self, tx: str, response: SipResponse, now: float) -> bool:
        keepalive = self._keepalive_tx.get(tx)
        if keepalive is not None:
            if response.status >= 200:
                keepalive.on_keepalive_response(now)
            return True
        reg = self._reg_tx.get(tx)
        if reg is None:
            return False
        reg.on_response(response, now)
        self._registrar_answered(reg, response.status, now)
        return True

    def on_timeout(self, tx: str, now: float, why: str = "timeout") -> bool:
        keepalive = self._keepalive_tx.get(tx)
        if keepalive is not None:
            keepalive.on_keepalive_timeout(now)
            return True
        reg = self._reg_tx.get(tx)
        if reg is None:
            return False
        reg.on_timeout(now, why)
        self._registrar_answered(reg, None, now, why)
        return True

    def on_terminated(self, tx: str) -> None:
        self._reg_tx.pop(tx, None)
        self._keepalive_tx.pop(tx, None)

    def flush(self, now: float) -> list[tuple[str, RegistrationStatus]]:
        """Send what the registrations queued; returns the accounts whose status changed."""
        changed = []
        for reg, failover in self._entries.values():
            destination = failover.current
            for request in reg.requests_to_send():
                self._reg_tx[self._layer.send_request(request, destination, now)] = reg
            for keepalive in reg.keepalives_to_send():
                if isinstance(keepalive, bytes):
                    self._raw.append((keepalive, destination))
                else:
                    self._keepalive_tx[self._layer.send_request(keepalive, destination, now)] = reg
            if reg.take_changed():
                changed.append((reg.config.aor, reg.status()))
        return changed

    def _registrar_answered(self, reg: Registration, status: int | None, now: float, why: str = "timeout") -> None:
        """RFC 3263 section 4.3: a REGISTER that timed out (status None) or got 503 moves the account to
        the registrar's next address at once; a 2xx ends the round of failures. Once every address
        failed, the registration's own backoff applies and the next try starts from the best one."""
        failover = self._entries[reg.config.aor][1]
        if status is not None and 200 <= status < 300:
            failover.succeeded()
            return
        if (status is not None and status != 503) or reg.state != RegistrationState.RETRYING:
            return
        failed = failover.current
        following = failover.failed()
        if following is not None:
            log.warning("sip registrar %s:%d failed (%s) aor=%s: trying %s:%d", failed[0], failed[1],
                        status or why, reg.config.aor, following[0], following[1])
            reg.retry_now(now)
