"""Handing a SIP caller to an agent: blind REFER, AMI Redirect, or a bridge the appliance holds itself.

``transfer.mode`` (ivr.config.TransferConfig):
- ``refer``: REFER in the caller's dialog (RFC 3515); accepted and a 2xx sipfrag NOTIFY = transferred, and we
  end our dialog with the caller at once (RFC 5589 section 6: the transferor's BYE; chan_sip never sends one).
  Refused (405/501/603..., a failing sipfrag, a timeout): bridge instead.
- ``bridge``: call the destination ourselves (SipEndpoint.call) and relay audio and keys between the two
  legs (ivr.rtp.bridge) until either side hangs up, then hang up the other.
- ``ami``: AMI Redirect of the caller's Asterisk channel (X-IVR-Caller-Channel, set by docs/asterisk's
  dialplan) to the queue/extension context; without an AMI link or a channel name: bridge.

Every way hands the PBX the IVR call id, so its queue_log rows join to the IVR call (issue 13): an
``X-IVR-Call-ID`` header on the REFER (Asterisk: ``HASH(TRANSFER_DATA,X-IVR-Call-ID)`` with
``GET_TRANSFERRER_DATA``) and in its Refer-To URI (RFC 3261 section 19.1.1: a transferee that follows RFC 3515
copies it into the INVITE it sends), the same header on the bridge's INVITE, and the channel variable
``IVR_CALL_ID`` (Setvar) before an AMI Redirect. A node's ``data: [name]`` goes the same ways, as the headers
``X-IVR-Var-<name>`` and the channel variables ``IVR_VAR_<NAME>`` (issue 17: the agent sees who is calling).

The engine stays in its transfer step for the whole bridged call (``transfer`` returns when the bridge
ends), so the call record ends with the bridge. A transfer that fails returns ``ok=False`` and the engine
takes the node's failure target. Where the caller is provably with the PBX or an agent (``referred``,
``redirected``, ``bridged``), the engine's progress callback is awaited before anything else happens, so its
``transfer.progress`` event is committed first (ivr.engine.call.TransferProgress).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from ivr.adapters.netutil import local_ip_towards
from ivr.config import TransferConfig
from ivr.engine.call import TransferProgress, TransferResult, TransferTarget
from ivr.errors import CallerHungUp
from ivr.proto.sdes import Crypto, answered, offer_crypto
from ivr.rtp.bridge import MediaBridge
from ivr.sip.sdp import PCMA, PCMU, TELEPHONE_EVENT, build_offer, parse_sdp, remote_media, sendable_ptime

if TYPE_CHECKING:
    from ivr.adapters.sip_call import SipCall

__all__ = ["CALLER_CHANNEL_HEADERS", "CALL_ID_HEADER", "CALL_ID_VARIABLE", "DATA_HEADER_PREFIX",
           "DATA_VARIABLE_PREFIX", "TransferContext", "Transferer", "data_headers", "data_variables", "refer_uri"]

log = logging.getLogger(__name__)

#: Where the caller's Asterisk channel name arrives (docs/asterisk/README.md section 2), first match wins.
CALLER_CHANNEL_HEADERS = ("X-IVR-Caller-Channel", "X-Asterisk-Channel")
#: The IVR call id as a SIP header (REFER, the bridge's INVITE) and as an Asterisk channel variable (Redirect).
CALL_ID_HEADER = "X-IVR-Call-ID"
CALL_ID_VARIABLE = "IVR_CALL_ID"
#: A transfer node's ``data: [name]`` as a SIP header ``X-IVR-Var-<name>`` and as an Asterisk channel variable
#: ``IVR_VAR_<NAME>`` (inherited: ``__``), for the agent's screen (docs/asterisk/README.md, "Data to the agent").
DATA_HEADER_PREFIX = "X-IVR-Var-"
DATA_VARIABLE_PREFIX = "IVR_VAR_"
UUI_HEADER = "User-to-User"
#: After a successful AMI Redirect Asterisk ends our leg; we wait this long for its BYE.
BYE_WAIT = 5.0
OFFER_CODECS = (PCMU, PCMA, TELEPHONE_EVENT)


def refer_uri(destination: str, host: str) -> str:
    """``sip:DEST@host`` (an IPv6 host in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"sip:{destination}@{host}"


def with_headers(uri: str, headers: tuple[tuple[str, str], ...]) -> str:
    """``uri?A=1&B=2``: the headers the referred INVITE should carry (RFC 3261 section 19.1.1, escaped)."""
    return uri + "?" + "&".join(f"{n}={quote(v, safe='')}" for n, v in headers) if headers else uri


def data_headers(target: TransferTarget, user_to_user: str | None = None) -> tuple[tuple[str, str], ...]:
    """The node's ``data:`` as SIP headers: ``account`` → ``X-IVR-Var-account``; with ``user_to_user`` naming
    one of them, that value also as ``User-to-User: HEX;encoding=hex`` (RFC 7433)."""
    out = [(DATA_HEADER_PREFIX + name, value) for name, value in target.data]
    out += [(UUI_HEADER, f"{value.encode().hex()};encoding=hex") for name, value in target.data
            if user_to_user is not None and name == user_to_user]
    return tuple(out)


def data_variables(data: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """``data:`` as Asterisk channel variables: ``account`` → ``__IVR_VAR_ACCOUNT`` (``__``: inherited by the
    channels the call goes on to, the agent's included); for a Setvar before a Redirect and for an Originate."""
    return {f"__{DATA_VARIABLE_PREFIX}{name.upper()}": value for name, value in data}


@dataclass
class TransferContext:
    """What a transfer needs from the daemon: settings, the SIP endpoint, the media engine, the AMI link."""

    settings: TransferConfig | None
    endpoint: Any  # ivr.sip.endpoint.SipEndpoint
    media: Any  # ivr.rtp.session.MediaEngine
    ami: Any = None  # ivr.adapters.ami.AmiAdapter or None
    sdp_address: str | None = None  # our address for SDP c= (default: towards the peer)
    srtp_for: Callable[[str], str] = lambda _host: "off"  # sip.srtp's mode for a peer (SipSettings.srtp_for)


class _Report(Protocol):
    async def __call__(self, stage: str, **data: Any) -> None: ...


class Transferer:
    """Runs one transfer of one call according to ``transfer.mode``."""

    def __init__(self, context: TransferContext) -> None:
        self.context = context
        self._tasks: set[asyncio.Task[None]] = set()

    async def transfer(self, call: SipCall, target: TransferTarget,
                       progress: TransferProgress | None = None) -> TransferResult:
        settings = self.context.settings
        if settings is None:
            return TransferResult(False, "transfer not configured (no transfer: section)")
        leg = call.leg
        if leg.ended.is_set():
            raise CallerHungUp()
        why: list[str] = []

        async def report(stage: str, **data: Any) -> None:
            if progress is not None:
                await progress(stage, data)

        if settings.mode == "ami":
            result = await self._redirect(call, target, settings, why, report)
            if result is not None:
                return result
        elif settings.mode == "refer" and not hasattr(call.leg, "refer"):
            # a leg we placed (a SIP callback) cannot REFER yet: the bridge keeps the transfer working
            why.append("REFER: not available on a call the appliance placed")
        elif settings.mode == "refer":
            result = await self._refer(call, target, settings, why, report)
            if result is not None:
                return result
        return await self._bridge(call, target, settings, why, report)

    # -- REFER

    async def _refer(self, call: SipCall, target: TransferTarget, settings: TransferConfig,
                     why: list[str], report: _Report) -> TransferResult | None:
        leg: Any = call.leg
        host = settings.refer_domain or leg.source[0]
        uri = refer_uri(target.destination, host)
        try:
            async with asyncio.timeout(settings.refer_timeout + 5.0):
                headers = ((CALL_ID_HEADER, call.call_id), *data_headers(target, settings.user_to_user))
                outcome = await leg.refer(with_headers(uri, headers), extra_headers=headers)
        except TimeoutError:
            why.append("REFER: no final NOTIFY")
            return None
        if leg.ended.is_set() and not outcome.ok:
            raise CallerHungUp()
        if not outcome.ok:
            log.info("refer refused call_id=%s status=%d detail=%s: bridging", call.call_id, outcome.status,
                     outcome.detail)
            why.append(f"REFER refused ({outcome.detail})")
            return None
        await report("referred")
        # RFC 5589 section 6: the transfer succeeded, the transferor ends the dialog. Waiting for the
        # transferee's BYE instead kept the node open 5 s with chan_sip, which never sends one.
        if not leg.ended.is_set():
            with contextlib.suppress(TimeoutError, CallerHungUp):
                await call.hangup()
        return TransferResult(True, f"REFER 202 / {outcome.detail}")

    async def _wait_peer_bye(self, call: SipCall) -> None:
        """The transferee leaves by BYE (RFC 5589 section 6); a peer that does not is hung up by Telephony."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BYE_WAIT):
                await call.leg.ended.wait()

    # -- AMI Redirect

    async def _redirect(self, call: SipCall, target: TransferTarget, settings: TransferConfig,
                        why: list[str], report: _Report) -> TransferResult | None:
        ami = self.context.ami
        leg: Any = call.leg
        header = getattr(leg, "header", None)
        channel = next((c for c in (header(h) for h in CALLER_CHANNEL_HEADERS) if c), None) if header else None
        if ami is None or not channel:
            why.append("AMI: no link" if ami is None else "AMI: no caller channel header")
            return None
        context = settings.ami_queue_context if target.kind == "queue" else settings.ami_extension_context
        try:  # on the channel before it moves: the queue's events then name this IVR call ("__": inherited)
            await ami.setvar(f"__{CALL_ID_VARIABLE}", call.call_id, channel)
        except Exception as exc:  # the Redirect says whether the caller can still be moved
            log.warning("ami setvar %s failed call_id=%s channel=%s: %s", CALL_ID_VARIABLE, call.call_id, channel, exc)
        for variable, value in data_variables(target.data).items():  # the agent's screen: ${IVR_VAR_ACCOUNT}
            try:
                await ami.setvar(variable, value, channel)
            except Exception as exc:
                log.warning("ami setvar %s failed call_id=%s: %s", variable.lstrip("_"), call.call_id, exc)
        try:
            await ami.redirect(channel, context, target.destination)
        except Exception as exc:  # AmiError, the link down: the caller is still ours, bridge instead
            log.warning("ami redirect failed call_id=%s channel=%s: %s", call.call_id, channel, exc)
            why.append(f"AMI Redirect failed ({exc})")
            return None
        await report("redirected", channel=channel)
        await self._wait_peer_bye(call)
        return TransferResult(True, f"AMI Redirect {channel} to {context},{target.destination},1")

    # -- bridging

    async def _bridge(self, call: SipCall, target: TransferTarget, settings: TransferConfig,
                      why: list[str], report: _Report) -> TransferResult:
        leg: Any = call.leg
        endpoint, media = self.context.endpoint, self.context.media
        prefix = "; ".join(why) + "; " if why else ""
        if endpoint is None or media is None:
            return TransferResult(False, prefix + "bridge: no SIP endpoint or media engine")
        if settings.bridge_proxy:
            host, _, port_text = settings.bridge_proxy.rpartition(":")
            proxy = (host.strip("[]"), int(port_text))
        else:
            proxy = (leg.source[0], 5060)
        address = self.context.sdp_address or _local_ip_towards(proxy[0])
        session = await media.open_session(call_id=f"{call.call_id}-agent", beside=call.media)  # one worker relays
        try:
            mode = self.context.srtp_for(proxy[0])
            crypto = srtp_offer(mode)
            offer = build_offer(OFFER_CODECS, local_address=address, local_port=session.local_port,
                                session_id=str(session.local_port), session_version="1", crypto=crypto,
                                srtp_required=mode == "required")
            from_user = settings.from_user or call.caller or "ivr"
            local_host = endpoint.local_address[0]
            agent = await call._or_hangup(endpoint.call(
                refer_uri(target.destination, settings.refer_domain or proxy[0]),
                from_uri=refer_uri(from_user, local_host), sdp_offer=offer.to_bytes(), proxy=proxy,
                ring_timeout=settings.ring_timeout,
                extra_headers=((CALL_ID_HEADER, call.call_id), *data_headers(target, settings.user_to_user)),
            ))
            if not agent.answered:
                result = agent.result
                what = f"{result.outcome.value} {result.status or ''}".strip() if result is not None else "failed"
                return TransferResult(False, f"{prefix}bridge: {what}")
            try:
                if not configure_answered(session, agent.remote_sdp, crypto, mode == "required"):
                    return TransferResult(False, f"{prefix}bridge: no usable codec (or no SRTP, required) in the"
                                                 " agent's answer")
                return await self._relay(call, agent, session, prefix, report)
            finally:
                if not agent.ended.is_set():
                    with contextlib.suppress(TimeoutError, CallerHungUp):
                        await agent.hangup()
        finally:
            await session.close()

    async def _relay(self, call: SipCall, agent: Any, session: Any, prefix: str,
                     report: _Report) -> TransferResult:
        leg: Any = call.leg
        bridge = MediaBridge(call.media, session, digit_to_a=lambda d: self._spawn(leg.send_dtmf(d)),
                             digit_to_b=lambda d: self._spawn(agent.send_dtmf(d)))
        saved_leg, saved_agent = leg.on_dtmf, agent.on_dtmf
        leg.on_dtmf = lambda d: bridge.digit_to_b(d)  # INFO keys too
        agent.on_dtmf = lambda d: bridge.digit_to_a(d)
        log.info("bridge up call_id=%s agent_call_id=%s", call.call_id, agent.call_id)
        bridge.start()
        caller_gone: asyncio.Future[None] | None = None
        agent_gone: asyncio.Future[bool] | None = None
        try:
            # the agent's dialog goes with the proof: a crash during the bridge must not leave the agent in silence
            record = agent.dialog_record() if hasattr(agent, "dialog_record") else None
            await report("bridged", agent_call_id=agent.call_id, agent_dialog=record)
            caller_gone = asyncio.ensure_future(call._until_gone())
            agent_gone = asyncio.ensure_future(agent.ended.wait())
            await asyncio.wait({caller_gone, agent_gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiters = {t for t in (caller_gone, agent_gone) if t is not None}
            for task in waiters:
                task.cancel()
            if waiters:
                await asyncio.wait(waiters, timeout=1.0)
            await bridge.stop()
            leg.on_dtmf, agent.on_dtmf = saved_leg, saved_agent
        by = "agent" if agent.ended.is_set() else "caller"
        log.info("bridge down call_id=%s ended_by=%s stats=%s", call.call_id, by, bridge.stats)
        if by == "agent":
            with contextlib.suppress(TimeoutError, CallerHungUp):
                await call.hangup()
        else:
            with contextlib.suppress(TimeoutError, CallerHungUp):
                await agent.hangup()
        return TransferResult(True, f"{prefix}bridged" if prefix else "bridged")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("bridge key not relayed: %s", task.exception())


def srtp_offer(mode: str) -> Crypto | None:
    """Our offer's ``a=crypto`` for a peer whose ``sip.srtp`` mode is ``mode`` (a fresh key), or None."""
    return offer_crypto(secrets.token_bytes(30)) if mode in ("optional", "required") else None


def configure_answered(session: Any, sdp: bytes | None, offered: Crypto | None = None,
                       required: bool = False) -> bool:
    """Point an RTP session we made the offer for (the agent's leg, a callback's, a late-offer caller's) at the
    answer's address, in the first G.711 codec it kept, with SRTP when we offered it (``offered``) and the answer
    took it; False when it did not and SRTP is ``required``, or the answer is unusable."""
    try:
        remote = remote_media(parse_sdp(sdp or b""))
    except ValueError:
        return False
    if remote is None:
        return False
    audio = [c for c in remote.codecs if c.name.upper() in ("PCMU", "PCMA")]
    if not audio:
        return False
    keys = answered(offered, list(remote.crypto)) if offered is not None else None
    if keys is None and required:
        return False
    te = next((c for c in remote.codecs if c.name.lower() == "telephone-event"), None)
    session.configure(remote=(remote.address, remote.port), payload_type=audio[0].payload_type,
                      telephone_event_pt=te.payload_type if te else None, ptime_ms=sendable_ptime(remote.ptime),
                      send=not remote.on_hold, srtp=keys)
    return True


def _local_ip_towards(peer: str) -> str:
    return local_ip_towards(peer, "127.0.0.1")
