"""Which transport a SIP message takes and what that changes in it (RFC 3261 section 18), sans-I/O.

The user agent names peers by (host, port) only; which of UDP, TCP or TLS reaches an address is kept
here, learned from where messages came (a request over a connection is answered on it, section 18.2.2,
and its sender's Via address reuses it, RFC 5923 style), from the ``transport`` parameter of the URIs we
send to (a Contact ``;transport=tcp``, a ``sips:`` URI), and from the configured peers (``sip.transport_peers``).
The transaction layer asks ``of(address)`` for each request and fits the message to it (``fit``): the top
Via names the transport and our port on it, our Contact says ``;transport=``, so the peer's requests and
responses come back the same way. A request too big for a datagram goes over TCP (section 18.1.1) when
TCP is on, and back to UDP if the peer refuses the connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from ivr.sip.lexical import SipParseError
from ivr.sip.message import SipRequest, SipResponse
from ivr.sip.uri import SipUri, parse_name_addr, parse_uri

__all__ = ["STREAMS", "UDP_SIZE_LIMIT", "TransportRule", "Transports", "fit", "uri_transport"]

Address = tuple[str, int]

#: The connection-oriented transports; UDP is the other one.
STREAMS = ("TCP", "TLS")
#: Section 18.1.1: a request larger than 1300 bytes (path MTU unknown) goes over a congestion controlled
#: transport.
UDP_SIZE_LIMIT = 1300
#: Bound on remembered stream addresses (each connection adds one or two).
MAX_REMEMBERED = 4096


@dataclass(frozen=True)
class TransportRule:
    """``sip.transport_peers``: requests to these addresses (CIDRs) or configured names go over ``transport``."""

    peers: tuple[str, ...]
    transport: str

    def matches(self, host: str) -> bool:
        for peer in self.peers:
            if peer.lower() == host.lower():
                return True
            try:
                if ipaddress.ip_address(host.strip("[]").split("%", 1)[0]) in ipaddress.ip_network(peer, strict=False):
                    return True
            except ValueError:
                continue
        return False


@dataclass
class Transports:
    """The transport of each address we talk to; UDP unless a connection, a URI or a rule says otherwise."""

    #: Our port per transport for Via and Contact: {"UDP": 5060, "TCP": 5060, "TLS": 5061}; a transport not
    #: here is not offered (a request that would need it goes over UDP, or fails if a rule demands it).
    ports: dict[str, int] = field(default_factory=lambda: {"UDP": 5060})
    rules: tuple[TransportRule, ...] = ()
    _known: dict[Address, str] = field(default_factory=dict)
    #: Addresses of configured names (a registrar, a trunk) whose rule asks for a stream: kept when a
    #: connection to them fails, so the retry takes the same transport.
    _named: dict[Address, str] = field(default_factory=dict)

    def of(self, address: Address) -> str:
        """UDP, TCP or TLS for a request or response to ``address``."""
        known = self._known.get(address) or self._named.get(address)
        if known is not None:
            return known
        for rule in self.rules:
            if rule.matches(address[0]):
                return rule.transport
        return "UDP"

    def for_name(self, name: str) -> str | None:
        """The rule's transport for a configured proxy or registrar name (before it is resolved)."""
        host = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        for rule in self.rules:
            if rule.matches(host.strip("[]")):
                return rule.transport
        return None

    def learn(self, address: Address, transport: str) -> None:
        """``address`` is reached over ``transport`` (a connection came from it, a URI or look-up said so)."""
        transport = transport.upper()
        if transport == "UDP" and address in self._known:
            del self._known[address]
            return
        if transport == "UDP" or self._known.get(address) == transport:
            return
        if len(self._known) >= MAX_REMEMBERED:
            self._known.pop(next(iter(self._known)))
        self._known[address] = transport

    def name_resolved(self, transport: str, addresses: Iterable[Address]) -> None:
        """A configured name whose rule says ``transport`` resolved to ``addresses``."""
        for address in addresses:
            if len(self._named) >= MAX_REMEMBERED:
                self._named.pop(next(iter(self._named)))
            self._named[address] = transport.upper()

    def forget(self, address: Address) -> None:
        """The connection to ``address`` is gone: its next message follows the rules again."""
        self._known.pop(address, None)

    def learn_target(self, request: SipRequest, address: Address) -> None:
        """The URI a request is sent to (its first Route, else its Request-URI: RFC 3263 section 4.1) asks
        for a transport with ``;transport=`` or ``sips:``; learned for ``address`` unless the URI names
        another IP address (a Route to a proxy we do not use)."""
        try:
            routes = request.headers.values("Route")
            text = str(parse_name_addr(routes[0]).uri) if routes else request.uri
            uri = parse_uri(text)
        except SipParseError:
            return
        if not isinstance(uri, SipUri):
            return
        transport = uri_transport(text)
        if transport is None or transport not in self.ports:
            return
        try:
            if ipaddress.ip_address(uri.host.strip("[]")) != ipaddress.ip_address(address[0]):
                return
        except ValueError:
            pass  # a name: resolved to address by whoever chose it
        self.learn(address, transport)

    def learn_request(self, request: SipRequest, source: Address, transport: str) -> None:
        """A request came from ``source`` over a stream: answers go back on it, and so do our requests to the
        address its Via names, when that is the same host (RFC 5923's alias, which most phones expect
        without saying it: a phone behind NAT cannot take a connection)."""
        if transport not in STREAMS:
            return
        self.learn(source, transport)
        try:
            via = request.via
        except SipParseError:
            return
        host = via.host.strip("[]")
        if host == source[0] and via.port is not None and (host, via.port) != source:
            self.learn((host, via.port), transport)

    def oversized(self, address: Address, size: int) -> str | None:
        """Section 18.1.1: the stream a too-big UDP request switches to, if TCP is on."""
        if size > UDP_SIZE_LIMIT and self.of(address) == "UDP" and "TCP" in self.ports:
            self.learn(address, "TCP")
            return "TCP"
        return None


def uri_transport(uri_text: str) -> str | None:
    """TLS for ``sips:``, else the ``transport`` parameter upper-cased (TCP, TLS, UDP), else None."""
    try:
        uri = parse_uri(uri_text.strip().strip("<>"))
    except SipParseError:
        return None
    if not isinstance(uri, SipUri):
        return None
    if uri.scheme.lower() == "sips":
        return "TLS"
    value = uri.params.get("transport")
    return value.upper() if value else None


def fit(message: SipRequest | SipResponse, transport: str, ports: dict[str, int]) -> None:
    """Make ``message`` say the stream ``transport`` it goes out on: our top Via (requests), our Contact. Our own
    port on that transport replaces the UDP port where one was written (TLS listens apart). Over UDP nothing
    changes: the user agent writes its messages for UDP."""
    if transport == "UDP":
        return
    udp_port = ports.get("UDP")
    port = ports.get(transport, udp_port)
    if isinstance(message, SipRequest):
        via = message.via
        if via.transport.upper() != transport:
            via.transport = transport
            if via.port == udp_port:
                via.port = port
            message.set_top_via(via)
    contacts = message.headers.values("Contact")
    if not contacts:
        return
    fitted: list[str] = []
    for value in contacts:
        try:
            contact = parse_name_addr(value)
        except SipParseError:
            fitted.append(value)
            continue
        uri = contact.uri
        if isinstance(uri, SipUri) and "transport" not in uri.params and uri.scheme.lower() == "sip":
            uri.params["transport"] = transport.lower()
            if uri.port == udp_port:
                uri.port = port
            value = str(contact)
        fitted.append(value)
    _replace(message, "Contact", fitted)


def _replace(message: SipRequest | SipResponse, name: str, values: Iterable[str]) -> None:
    message.headers.remove(name)
    for value in values:
        message.headers.add(name, value)
