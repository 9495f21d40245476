"""Wires SIP and RTP to the engine: each INVITE becomes an RTP session, an SDP answer and one engine call.

The SIP endpoint (ivr.sip.endpoint) and the media engine (ivr.rtp.session) are the only sockets; this
module decides what an incoming call gets — 488 when no codec fits, 503 when no RTP port is free — and
puts the SIP facts (Call-ID, codec, disposition, end reason) in the call's event log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from ivr.adapters.netutil import local_ip_towards
from ivr.adapters.sip_call import SipCall
from ivr.adapters.transfer import TransferContext, Transferer, configure_answered, srtp_offer
from ivr.config import Config, SipAccount
from ivr.engine.context import Outcome, Recorder
from ivr.errors import CallerHungUp
from ivr.sip.dns import DnsResolver
from ivr.sip.endpoint import RESOLVE_TIMEOUT, InboundLeg, SipEndpoint
from ivr.sip.register import RegistrationConfig
from ivr.sip.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Answer,
    NoMatch,
    SessionDescription,
    build_offer,
    negotiate_answer,
    parse_sdp,
    remote_media,
    sendable_ptime,
)
from ivr.sip.session_timer import SessionTimerConfig
from ivr.sip.ua import UserAgentConfig
from ivr.store.eventlog import CallRecorder, EventLog

CALLER_ENDINGS = ("caller hung up", "cancelled")
"""The leg's end reasons (ivr.sip.ua_events.CallEnded) that are the caller's doing."""

log = logging.getLogger("ivr.telephony")

SUPPORTED = (PCMU, PCMA, TELEPHONE_EVENT)
StartCall = Callable[..., "asyncio.Task[Outcome]"]


class SipRecorder(CallRecorder):
    """The call's recorder, adding the SIP facts right after ``call.started`` and before ``call.ended``."""

    def __init__(self, events: EventLog, call_id: str, facts: dict[str, Any], leg: InboundLeg, call: SipCall):
        super().__init__(events, call_id)
        self.facts = facts
        self.leg = leg
        self.sip_call = call

    async def begin(self, call: Any, flow: Any, version: str) -> None:
        await super().begin(call, flow, version)
        await self.log.append("sip.answered", self.call_id, **self.facts)

    async def end(self, outcome: Any, path: list[str], variables: dict[str, object]) -> None:
        # the caller ended it only by a BYE or CANCEL of theirs; a call still up now is ended by our BYE next
        by = "caller" if not self.sip_call.hung_up_by_us and self.leg.end_reason in CALLER_ENDINGS else "ivr"
        reason = "rtp timeout" if self.sip_call.rtp_timed_out else (self.leg.end_reason or outcome.kind)
        await self.log.append("sip.ended", self.call_id, reason=reason, by=by)
        await super().end(outcome, path, variables)


class Telephony:
    def __init__(self, config: Config, events: EventLog, start_call: StartCall, media: Any, *,
                 speech: Any = None, ami: Any = None) -> None:
        self.config = config
        self.ami = ami  # ivr.adapters.ami.AmiAdapter or None: transfer by AMI Redirect needs it
        self.speech = speech  # ivr.adapters.speech.SpeechService or None
        self.events = events
        self.start_call = start_call
        self.media = media  # ivr.rtp.session.MediaEngine
        self.calls: set[asyncio.Task[None]] = set()
        self.notes: set[asyncio.Task[int]] = set()  # event-log appends from sync SIP callbacks
        self.registering: set[asyncio.Task[None]] = set()
        self.accepting = True
        sip = config.sip
        self.endpoint = SipEndpoint(
            UserAgentConfig(allowed_peers=sip.allowed_peers, external_address=sip.external_address,
                            session_timer=SessionTimerConfig(sip.session_expires, sip.min_se),
                            invite_rate=sip.invite_rate, invite_burst=sip.invite_burst, max_calls=sip.max_calls,
                            peer_limits=sip.peer_limits, log_numbers=config.privacy is None,
                            transport_rules=sip.transport_rules),
            sip.host, sip.port, self._on_call,
            resolver=DnsResolver(sip.dns_servers, timeout=RESOLVE_TIMEOUT),
            tcp=sip.tcp, tls=sip.tls, tls_port=sip.tls_port, tls_host=sip.tls_host,
        )

    async def start(self) -> None:
        await self.media.start()
        await self.endpoint.start()
        for account in self.config.sip.accounts:
            task = asyncio.create_task(self._register(account), name=f"register-{account.aor}")
            self.registering.add(task)
            task.add_done_callback(self.registering.discard)
        host, port = self.endpoint.local_address
        log.info("sip ready on %s:%d rtp %d-%d", host, port, self.config.sip.rtp_port_min,
                 self.config.sip.rtp_port_max)

    async def _register(self, account: SipAccount) -> None:
        """Hand the account to the user agent, which keeps it registered; only a registrar name that does
        not resolve is retried here (the core never resolves names)."""
        config = RegistrationConfig(aor=account.aor, registrar=account.registrar, username=account.username,
                                    password=account.password, expires=account.expires,
                                    contact_user=account.contact_user, keepalive=account.keepalive,
                                    keepalive_seconds=account.keepalive_seconds)
        delay = 2.0
        while True:
            try:
                await self.endpoint.register(config)
                log.info("registering %s at %s", account.aor, account.registrar)
                return
            except (OSError, TimeoutError) as exc:
                log.warning("registrar %s not reachable (%s); retrying in %.0f s", account.registrar, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300.0)

    def registrations(self) -> list[str]:
        return self.endpoint.registration_lines()

    async def stop(self, grace: float = 2.0) -> None:
        for task in self.registering:
            task.cancel()
        self.accepting = False
        await self.endpoint.stop(grace)
        if self.calls:
            await asyncio.wait(self.calls, timeout=grace + 5)
        await self.media.stop()

    def _on_call(self, leg: InboundLeg) -> None:
        task = asyncio.create_task(self._run(leg), name=f"sip-{leg.call_id}")
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    def _configured_address(self, peer: str | None = None) -> str | None:
        """Our address for SDP (c=, o=) with `peer`: the external address when configured, else the
        public address a registrar at `peer` saw us at (NAT, learned from received/rport), else a
        specific listen address; None: it depends on the peer (listening on any address)."""
        sip = self.config.sip
        if sip.external_address:
            return sip.external_address
        learned = self.endpoint.public_address_for(peer)
        if learned is not None:
            return learned[0]
        return sip.host if sip.host not in ("0.0.0.0", "::") else None

    def _comedia(self, host: str) -> bool:
        """Whether this signalling source's media is taken from wherever it first comes (sip.comedia_peers)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(p, strict=False) for p in self.config.sip.comedia_peers)

    def _sdp_address(self, leg: InboundLeg) -> str:
        return self._configured_address(leg.source[0]) or local_ip_towards(leg.source[0], "127.0.0.1")

    async def _run(self, leg: InboundLeg) -> None:
        call_id = str(uuid.uuid4())
        base = {"sip_call_id": leg.call_id, "from": leg.caller, "to": leg.dialed,
                "source": f"{leg.source[0]}:{leg.source[1]}"}
        if not self.accepting:
            await leg.reject(503, retry_after=30)  # draining for a restart or update: come back shortly
            await self.events.append("sip.rejected", call_id, status=503, reason="shutting down", **base)
            return
        try:
            session = await self.media.open_session(call_id=call_id)
            session.comedia = self._comedia(leg.source[0])
        except Exception as exc:  # port range exhausted: tell the caller to retry rather than fail silently
            log.warning("no RTP port for call %s: %s", leg.call_id, exc)
            await leg.reject(503, retry_after=5)
            await self.events.append("sip.rejected", call_id, status=503, reason=str(exc), **base)
            return
        try:
            await self._answer_and_run(call_id, leg, session, base)
        except CallerHungUp:
            await self.events.append("sip.cancelled", call_id, reason=leg.end_reason or "caller left", **base)
        finally:
            await session.close()

    async def _answer_and_run(self, call_id: str, leg: InboundLeg, session: Any, base: dict[str, Any]) -> None:
        address = self._sdp_address(leg)
        version = 1
        # SRTP (sip.srtp, per source): our key for the whole call, so a re-INVITE keeps the stream's keys
        srtp_mode, srtp_key = self.config.sip.srtp_for(leg.source[0]), secrets.token_bytes(30)
        if leg.offer is not None:
            result = negotiate_answer(leg.offer, SUPPORTED, local_address=address, local_port=session.local_port,
                                      session_id=str(session.local_port), session_version=str(version), srtp=srtp_mode,
                                      srtp_key=srtp_key)
            if isinstance(result, NoMatch):
                await leg.reject(488)
                await self.events.append("sip.rejected", call_id, status=488, reason=result.reason, **base)
                return
            self._configure(session, result)
            await leg.ring()
            await leg.answer(result.sdp.to_bytes())
            facts = {**base, "transport": leg.transport, "codec": result.codec.name,
                     "telephone_event": result.telephone_event is not None,
                     "ptime": result.ptime, "offer": "early", "rtp_port": session.local_port,
                     "srtp": result.srtp.suite if result.srtp else None}
        else:  # late offer: we offer (SRTP where the source's mode asks: RTP/SAVP when required), the answer is
            # in the ACK
            crypto = srtp_offer(srtp_mode)
            offer = build_offer(SUPPORTED, local_address=address, local_port=session.local_port,
                                session_id=str(session.local_port), session_version=str(version), crypto=crypto,
                                srtp_required=srtp_mode == "required")
            await leg.ring()
            body = await leg.answer(offer.to_bytes())
            if not configure_answered(session, body, crypto, srtp_mode == "required"):
                await leg.hangup()
                reason = "no codec in ACK" if srtp_mode != "required" else "no codec, or no SRTP (required), in ACK"
                await self.events.append("sip.rejected", call_id, status=488, reason=reason, **base)
                return
            remote = remote_media(parse_sdp(body or b""))
            assert remote is not None  # configure_answered took it
            audio = [c for c in remote.codecs if c.name.upper() in ("PCMU", "PCMA")]
            te = next((c for c in remote.codecs if c.name.lower() == "telephone-event"), None)
            keys = session.srtp_keys
            facts = {**base, "transport": leg.transport, "codec": audio[0].name, "telephone_event": te is not None,
                     "ptime": sendable_ptime(remote.ptime), "offer": "late", "rtp_port": session.local_port,
                     "srtp": keys.suite if keys is not None else None}
        call = SipCall(call_id, leg, session, rtp_timeout=self.config.rtp_timeout_seconds, speech=self.speech,
                       speech_verify=self.config.speech.verify, speech_language=self.config.speech.language)
        call.transferer = Transferer(TransferContext(self.config.transfer, self.endpoint, self.media, self.ami,
                                                     self._configured_address(leg.source[0]),
                                                     self.config.sip.srtp_for))

        def reinvite(offer: SessionDescription) -> bytes:
            nonlocal version
            version += 1
            result = negotiate_answer(offer, SUPPORTED, local_address=address, local_port=session.local_port,
                                      session_id=str(session.local_port), session_version=str(version), srtp=srtp_mode,
                                      srtp_key=srtp_key)
            if isinstance(result, NoMatch):
                raise ValueError(result.reason)  # the endpoint answers 488 and the call stays up
            self._configure(session, result)
            call.on_hold = result.remote.on_hold
            note = asyncio.get_running_loop().create_task(
                self.events.append("sip.media", call_id, remote=f"{result.remote.address}:{result.remote.port}",
                                   direction=str(result.remote.direction), hold=result.remote.on_hold)
            )
            self.notes.add(note)
            note.add_done_callback(self.notes.discard)
            return result.sdp.to_bytes()

        leg.on_media_changed = reinvite
        recorder: Recorder = SipRecorder(self.events, call_id, facts, leg, call)
        try:
            await self.start_call(call, recorder)
        finally:
            # Whatever ended the engine's run (RTP silence, max length, an error, shutdown), the caller's leg
            # is released with a BYE; when the caller left first this does nothing.
            if not leg.ended.is_set():
                try:
                    await leg.hangup()
                except (TimeoutError, CallerHungUp):
                    pass

    @staticmethod
    def _configure(session: Any, answer: Answer) -> None:
        session.configure(
            remote=(answer.remote.address, answer.remote.port),
            payload_type=answer.codec.payload_type,
            telephone_event_pt=answer.telephone_event.payload_type if answer.telephone_event else None,
            ptime_ms=answer.ptime,
            send=answer.send_media,
            srtp=answer.srtp,
        )
