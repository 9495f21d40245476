"""The PBX link's typed actions and the queue monitor, over the managed AMI connection of
``ivr.adapters.ami_link`` (login, reconnect with backoff, keep-alive Ping, framing over asterisk-ami's reader
thread and socket: read that module's docstring for how asterisk-ami 0.1.7 is used).

``AmiAdapter`` is that link plus the actions the appliance runs (Redirect, Originate, Setvar/Getvar, DBGet,
Hangup, CoreShowChannels, QueueStatus/QueueSummary) with their typed results; ``QueueMonitor`` keeps the
pure ``QueueState`` current from QueueStatus snapshots and live queue events.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ivr.adapters.ami_link import AmiConnectionLost, AmiError, AmiLink, AmiSettings
from ivr.pbx.queue_log import EXIT_USER_EVENT, IVR_CALL_ID_VARIABLE, QueueLogEntry, QueueLogMapper
from ivr.pbx.queues import QueueState
from ivr.proto.ami import AmiEvent

__all__ = [
    "QUEUE_EVENTS",
    "AmiAdapter",
    "AmiSettings",  # defined in ami_link; ivr/daemon.py imports it from here with AmiAdapter
    "ChannelInfo",
    "OriginateOutcome",
    "OriginateResult",
    "QueueMonitor",
    "originate_outcome",
]

log = logging.getLogger("ivr.ami")


# -- typed results ------------------------------------------------------------------------------------------


class OriginateOutcome(enum.StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"
    FAILED = "failed"


#: OriginateResponse ``Reason`` is the last control frame read from the new channel before Originate gave up
#: (``enum ast_control_frame_type`` in include/asterisk/frame.h): 1 HANGUP, 2 RING, 3 RINGING, 4 ANSWER,
#: 5 BUSY, 8 CONGESTION; 0 when no channel could be created (bad endpoint, no route).
ORIGINATE_REASONS: Mapping[int, OriginateOutcome] = {
    0: OriginateOutcome.FAILED,
    1: OriginateOutcome.FAILED,
    2: OriginateOutcome.NO_ANSWER,
    3: OriginateOutcome.NO_ANSWER,
    4: OriginateOutcome.ANSWERED,
    5: OriginateOutcome.BUSY,
    8: OriginateOutcome.CONGESTION,
}


def originate_outcome(response: str, reason: str | None) -> OriginateOutcome:
    if response.lower() == "success":
        return OriginateOutcome.ANSWERED
    try:
        code = int(reason or "0")
    except ValueError:
        return OriginateOutcome.FAILED
    outcome = ORIGINATE_REASONS.get(code, OriginateOutcome.FAILED)
    return OriginateOutcome.FAILED if outcome is OriginateOutcome.ANSWERED else outcome


@dataclass(frozen=True)
class OriginateResult:
    outcome: OriginateOutcome
    reason: int
    channel: str
    uniqueid: str
    action_id: str


@dataclass(frozen=True)
class ChannelInfo:
    """One channel from CoreShowChannels (event CoreShowChannel)."""

    channel: str
    uniqueid: str
    linkedid: str
    context: str
    exten: str
    priority: str
    state: str
    caller_id_num: str
    application: str
    application_data: str
    duration: str
    bridge_id: str

    @classmethod
    def from_event(cls, ev: AmiEvent) -> ChannelInfo:
        g = ev.get
        return cls(
            channel=g("Channel") or "",
            uniqueid=g("Uniqueid") or "",
            linkedid=g("Linkedid") or "",
            context=g("Context") or "",
            exten=g("Exten") or "",
            priority=g("Priority") or "",
            state=g("ChannelStateDesc") or "",
            caller_id_num=g("CallerIDNum") or "",
            application=g("Application") or "",
            application_data=g("ApplicationData") or "",
            duration=g("Duration") or "",
            bridge_id=g("BridgeId") or "",
        )

# -- the adapter --------------------------------------------------------------------------------------------


class AmiAdapter(AmiLink):
    """The managed AMI link (``AmiLink``: connect, login, subscribe, keep alive, reconnect, ``action``) with
    the typed actions the appliance runs."""

    async def redirect(self, channel: str, context: str, exten: str, priority: int = 1) -> None:
        """Send ``channel`` to ``context,exten,priority`` (e.g. the queue-entry context of docs/asterisk)."""
        values: dict[str, str | int] = {"Channel": channel, "Context": context, "Exten": exten, "Priority": priority}
        await self.action("Redirect", values)

    async def originate(
        self,
        channel: str,
        *,
        context: str,
        exten: str,
        priority: int = 1,
        caller_id: str | None = None,
        ring_timeout: float = 30.0,
        variables: Mapping[str, str] | None = None,
        account: str | None = None,
    ) -> OriginateResult:
        """Place a call with ``Async: true`` and wait for its ``OriginateResponse``.

        ``variables`` (e.g. ``CALLBACK_ID``) are set on the new channel. The wait is the action timeout
        plus ``ring_timeout``. If the link drops before the OriginateResponse, ``AmiConnectionLost`` is raised:
        the call may still be up in Asterisk; reconcile with ``core_show_channels`` and its variables.
        """
        result = await self.action(
            "Originate",
            {
                "Channel": channel,
                "Context": context,
                "Exten": exten,
                "Priority": priority,
                "CallerID": caller_id,
                "Timeout": int(ring_timeout * 1000),
                "Account": account,
                "Async": True,
            },
            variables=variables,
            timeout=self.settings.action_timeout + ring_timeout,
            final_event="OriginateResponse",
        )
        ev = result.final
        assert ev is not None
        reason = ev.get("Reason") or "0"
        return OriginateResult(
            outcome=originate_outcome(ev.get("Response") or "", reason),
            reason=int(reason) if reason.isdigit() else 0,
            channel=ev.get("Channel") or channel,
            uniqueid=ev.get("Uniqueid") or "",
            action_id=result.action_id,
        )

    async def setvar(self, variable: str, value: str, channel: str | None = None) -> None:
        await self.action("Setvar", {"Channel": channel, "Variable": variable, "Value": value})

    async def getvar(self, variable: str, channel: str | None = None) -> str | None:
        """The variable's value; None when Asterisk has no value for it (empty ``Value:``)."""
        result = await self.action("Getvar", {"Channel": channel, "Variable": variable})
        value = result.response.get("Value")
        return value if value else None

    async def dbget(self, family: str, key: str) -> str | None:
        """An AstDB value (``DBGet``: main/db.c, a list of one ``DBGetResponse``); None when there is no such
        entry (``Response: Error`` "Database entry not found"). Other failures raise."""
        try:
            result = await self.action("DBGet", {"Family": family, "Key": key}, list_events=True)
        except AmiError as exc:
            if type(exc) is AmiError and exc.response is not None and "not found" in exc.reason.lower():
                return None
            raise
        for ev in result.events:
            if ev.name == "DBGetResponse":
                return ev.get("Val") or None
        return None

    async def hangup(self, channel: str, cause: int | None = None) -> None:
        await self.action("Hangup", {"Channel": channel, "Cause": cause})

    async def core_show_channels(self) -> list[ChannelInfo]:
        result = await self.action("CoreShowChannels", list_events=True)
        return [ChannelInfo.from_event(ev) for ev in result.events if ev.name == "CoreShowChannel"]

    async def queue_status(self, queue: str | None = None) -> tuple[AmiEvent, ...]:
        """QueueParams/QueueMember/QueueEntry events (feed them to ``QueueState.apply_status``)."""
        return (await self.action("QueueStatus", {"Queue": queue}, list_events=True)).events

    async def queue_summary(self, queue: str | None = None) -> tuple[AmiEvent, ...]:
        return (await self.action("QueueSummary", {"Queue": queue}, list_events=True)).events


# -- queue state kept current ---------------------------------------------------------------------------------

#: the live events QueueState and QueueLogMapper read
QUEUE_EVENTS = frozenset(
    {
        "QueueCallerJoin",
        "QueueCallerLeave",
        "QueueCallerAbandon",
        "AgentCalled",
        "AgentConnect",
        "AgentComplete",
        "AgentRingNoAnswer",
        "AgentDump",
        "QueueMemberStatus",
        "QueueMemberAdded",
        "QueueMemberRemoved",
        "QueueMemberPause",
        "QueueMemberPaused",
        "QueueMemberPenalty",
        "QueueMemberRinginuse",
        "AgentLogin",
        "AgentLogoff",
        "DialEnd",  # a member's ring cancelled by the caller (RINGCANCELED)
        "BlindTransfer",  # where an agent transferred the caller (BLINDTRANSFER / ATTENDEDTRANSFER)
        "AttendedTransfer",
        "Hangup",  # confirms a QueueCallerAbandon as an ABANDON (not a timeout)
        "UserEvent",
    }
)

QueueLogSink = Callable[[QueueLogEntry], Awaitable[Any]]


class QueueMonitor:
    """Keeps ``state`` (pure ``QueueState``) current: a QueueStatus snapshot at start, after every reconnect,
    every ``refresh_interval`` s and whenever events were dropped; live queue events in between. Each event
    also becomes queue_log entries handed to ``sink`` (the daemon appends them to the event log).

    Events that arrive while a snapshot is being fetched wait in the stream and are applied after it;
    QueueState's handlers are idempotent, so one that the snapshot already reflects does no harm.

    The moment the link drops the state is marked stale (events are being missed); it is live again only
    after a full QueueStatus read on the new session. Ask ``link_up`` / ``fresh`` / ``stale_since``.
    """

    def __init__(
        self,
        ami: AmiAdapter,
        *,
        refresh_interval: float = 60.0,
        sink: QueueLogSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = QueueState()
        self.mapper = QueueLogMapper()
        self.refreshes = 0
        self._ami = ami
        self._interval = refresh_interval
        self._sink = sink
        self._clock = clock
        self._stream = ami.events(QUEUE_EVENTS, maxsize=5000)
        self._resync = True
        ami.add_connect_hook(self._on_connect)
        ami.add_disconnect_hook(self._on_disconnect)

    @property
    def link_up(self) -> bool:
        """The AMI link is logged in now."""
        return bool(self._ami.connected)

    @property
    def fresh(self) -> bool:
        """The queue figures may be trusted: the link is up and a full QueueStatus was read since it came up."""
        return self.link_up and self.state.live

    @property
    def stale_since(self) -> float | None:
        """When (epoch s) the figures stopped being current; None while fresh or before the first read."""
        return self.state.stale_since

    async def _on_connect(self) -> None:
        self._resync = True
        self._stream.wake()

    def _on_disconnect(self) -> None:
        self.state.mark_stale(self._clock())
        log.warning("queue state stale: PBX link down")

    async def refresh(self) -> None:
        logins = self._ami.logins
        events = await self._ami.queue_status()
        if not self._ami.connected or self._ami.logins != logins:
            # the answer came from a session that has since ended: its figures may already be outdated, and
            # the connect hook asks for another read on the new session
            raise AmiConnectionLost("QueueStatus")
        self.state.apply_status(events, self._clock())
        self.refreshes += 1

    async def run(self) -> None:
        """Until cancelled. Each wait is bounded by the refresh interval."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time()
        dropped = 0
        try:
            while True:
                if self._stream.dropped != dropped:
                    dropped = self._stream.dropped
                    self._resync = True
                if self._resync or loop.time() >= next_refresh:
                    next_refresh = loop.time() + self._interval
                    if self._ami.connected:  # else the connect hook wakes us when the link is back
                        self._resync = False
                        try:
                            await self.refresh()
                        except AmiError as exc:  # retry soon, not at once: an Error answer comes back fast
                            log.warning("queue refresh failed error=%r", exc)
                            next_refresh = loop.time() + min(self._interval, 5.0)
                try:
                    async with asyncio.timeout(max(0.05, next_refresh - loop.time())):
                        ev = await self._stream.get()
                except TimeoutError:
                    continue
                if ev is None:
                    continue
                await self._apply(ev)
        finally:
            self._stream.close()

    async def _apply(self, ev: AmiEvent) -> None:
        now = self._clock()
        if ev.name != "UserEvent":
            self.state.apply(ev, now)
        elif (ev.get("UserEvent") or "") != EXIT_USER_EVENT:
            return
        if ev.name == "QueueCallerJoin" and not self.mapper.carries_ivr_call_id(ev):
            await self._learn_ivr_call_id(ev)
        entries = self.mapper.map(ev, now)
        if self._sink is not None:
            for entry in entries:
                await self._sink(entry)

    async def _learn_ivr_call_id(self, ev: AmiEvent) -> None:
        """A caller joined and its event does not say (manager.conf ``channelvars`` without IVR_CALL_ID): ask
        the channel, so its queue_log rows join to the IVR call that sent it. A channel gone already, or the
        link down, leaves the rows without the join: never a guess."""
        channel = ev.get("Channel") or ""
        uid = ev.get("Uniqueid") or ""
        if not channel or not uid or not self._ami.connected:
            return
        try:
            value = await self._ami.getvar(IVR_CALL_ID_VARIABLE, channel)
        except AmiError as exc:
            log.debug("getvar %s failed channel=%s: %r", IVR_CALL_ID_VARIABLE, channel, exc)
            return
        self.mapper.learn(uid, value)

