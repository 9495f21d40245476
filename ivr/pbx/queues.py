"""Asterisk queue state, pure: snapshots from QueueStatus/QueueSummary lists, kept current from AMI events.

No I/O and no clock: every call that needs "now" (epoch seconds) is given it. The asyncio side
(``ivr.adapters.ami.QueueMonitor``) feeds it and refreshes it on a schedule and after every reconnect.

Field names follow the Asterisk AMI documentation of each event (docs.asterisk.org, Asterisk 18+
"AMI Events": QueueParams, QueueMember, QueueEntry, QueueSummary, QueueCallerJoin, QueueCallerLeave,
QueueMemberStatus, AgentConnect, AgentComplete …). Every handler is idempotent by caller Uniqueid and member
Interface, so re-applying events that straddle a refresh does no harm.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import IntEnum

from ivr.proto.ami import AmiEvent


class DeviceState(IntEnum):
    """``Status`` of a queue member: Asterisk's ``enum ast_device_state`` (include/asterisk/devicestate.h)."""

    UNKNOWN = 0
    NOT_INUSE = 1
    INUSE = 2
    BUSY = 3
    INVALID = 4
    UNAVAILABLE = 5
    RINGING = 6
    RINGINUSE = 7
    ONHOLD = 8


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(float(value)) if value not in (None, "") else default
    except ValueError:
        return default


def _float(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        return default


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class QueueCaller:
    """A caller waiting in a queue. ``joined_at`` is epoch seconds (from the event time or ``now - Wait``)."""

    uniqueid: str
    channel: str
    position: int
    joined_at: float
    caller_id_num: str = ""
    caller_id_name: str = ""
    priority: int = 0

    def wait(self, now: float) -> float:
        return max(0.0, now - self.joined_at)


@dataclass(frozen=True)
class QueueMember:
    """A queue member (agent). ``interface`` (Location/Interface) is its identity within a queue."""

    interface: str
    name: str
    status: DeviceState = DeviceState.UNKNOWN
    paused: bool = False
    paused_reason: str = ""
    in_call: bool = False
    calls_taken: int = 0
    last_call: int = 0
    penalty: int = 0
    membership: str = ""
    state_interface: str = ""

    @property
    def logged_in(self) -> bool:
        # app_queue.c manager_queues_summary(): a member counts as logged in unless its device is
        # unavailable or invalid.
        return self.status not in (DeviceState.UNAVAILABLE, DeviceState.INVALID)

    @property
    def available(self) -> bool:
        # app_queue.c manager_queues_summary(): available = logged in, not paused, and the device not in
        # use (NOT_INUSE, or UNKNOWN which app_queue also rings). A member in a queue call is not available.
        return (
            self.logged_in
            and not self.paused
            and not self.in_call
            and self.status in (DeviceState.NOT_INUSE, DeviceState.UNKNOWN)
        )


@dataclass(frozen=True)
class QueueSnapshot:
    """One queue as last known. ``callers`` are in queue order (position 1 first)."""

    name: str
    strategy: str = ""
    max_callers: int = 0
    calls: int = 0
    #: average hold time (s) and talk time (s) as Asterisk computes them (QueueParams Holdtime/TalkTime)
    holdtime: int = 0
    talktime: int = 0
    completed: int = 0
    abandoned: int = 0
    service_level: int = 0
    service_level_perf: float = 0.0
    callers: tuple[QueueCaller, ...] = ()
    members: tuple[QueueMember, ...] = ()
    #: counts as QueueSummary reported them; used when no member list is known
    summary_logged_in: int | None = None
    summary_available: int | None = None
    summary_longest_hold: int | None = None
    #: when this queue was last refreshed from a QueueStatus/QueueSummary list (epoch s)
    refreshed_at: float | None = None
    #: since when (epoch s) these figures are only the last known ones: the PBX link dropped and no full
    #: QueueStatus has been read since. None while live.
    stale_since: float | None = None

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    @property
    def logged_in(self) -> int:
        if self.members or self.summary_logged_in is None:
            return sum(1 for m in self.members if m.logged_in)
        return self.summary_logged_in

    @property
    def available(self) -> int:
        if self.members or self.summary_available is None:
            return sum(1 for m in self.members if m.available)
        return self.summary_available

    @property
    def waiting(self) -> int:
        return len(self.callers)

    def longest_wait(self, now: float) -> float:
        if self.callers:
            return max(c.wait(now) for c in self.callers)
        return 0.0

    def member(self, interface: str) -> QueueMember | None:
        return next((m for m in self.members if m.interface == interface), None)

    def caller(self, uniqueid: str) -> QueueCaller | None:
        return next((c for c in self.callers if c.uniqueid == uniqueid), None)


def _renumber(callers: Iterable[QueueCaller]) -> tuple[QueueCaller, ...]:
    ordered = sorted(callers, key=lambda c: (c.position, c.joined_at))
    return tuple(c if c.position == i else replace(c, position=i) for i, c in enumerate(ordered, 1))


def _member_from(ev: AmiEvent, old: QueueMember | None = None) -> QueueMember:
    # QueueMember (list item) says Name/Location; QueueMemberStatus & co say MemberName/Interface.
    interface = ev.get("Interface") or ev.get("Location") or (old.interface if old else "")
    base = old or QueueMember(interface=interface, name=interface)
    status = _int(ev.get("Status"), int(base.status))
    return replace(
        base,
        interface=interface,
        name=ev.get("MemberName") or ev.get("Name") or base.name,
        status=DeviceState(status) if status in DeviceState._value2member_map_ else DeviceState.UNKNOWN,
        paused=_flag(ev.get("Paused")) if "Paused" in ev else base.paused,
        paused_reason=ev.get("PausedReason", base.paused_reason) or "",
        in_call=_flag(ev.get("InCall")) if "InCall" in ev else base.in_call,
        calls_taken=_int(ev.get("CallsTaken"), base.calls_taken),
        last_call=_int(ev.get("LastCall"), base.last_call),
        penalty=_int(ev.get("Penalty"), base.penalty),
        membership=ev.get("Membership", base.membership) or "",
        state_interface=ev.get("StateInterface", base.state_interface) or "",
    )


def _event_time(ev: AmiEvent, now: float) -> float:
    """``Timestamp:`` when manager.conf has ``timestampevents = yes``, else the time we read the event."""
    ts = ev.get("Timestamp")
    return _float(ts, now) if ts else now


@dataclass
class QueueState:
    """All queues by name. ``apply_status``/``apply_summary`` install a list action's answer;
    ``apply`` folds one live event in. Read with ``snapshot(name)`` / ``snapshots()``.

    Staleness: events missed while the PBX link is down make every figure a guess, so ``mark_stale`` (the
    link dropped) flags all snapshots until the next full ``apply_status`` (the QueueStatus read after the
    reconnect). ``live`` says whether the figures may be trusted.
    """

    _queues: dict[str, QueueSnapshot] = field(default_factory=dict)
    #: when the last full QueueStatus answer was installed (epoch s); None before the first
    refreshed_at: float | None = None
    #: when the figures stopped being current (the link dropped); None while live
    stale_since: float | None = None

    @property
    def live(self) -> bool:
        """A full QueueStatus has been read and no link drop since: the figures may be trusted."""
        return self.refreshed_at is not None and self.stale_since is None

    def mark_stale(self, now: float) -> None:
        """The PBX link dropped at ``now``: keep the last figures but flag them (the first drop's time stays)."""
        if self.stale_since is None:
            self.stale_since = now
        since = self.stale_since
        self._queues = {k: v if v.stale else replace(v, stale_since=since) for k, v in self._queues.items()}

    def snapshot(self, name: str) -> QueueSnapshot | None:
        return self._queues.get(name)

    def snapshots(self) -> dict[str, QueueSnapshot]:
        return dict(self._queues)

    # -- list answers -----------------------------------------------------------------------------------
    def apply_status(self, events: Iterable[AmiEvent], now: float, *, only_queue: str | None = None) -> None:
        """Install the answer to ``QueueStatus``: QueueParams, QueueMember and QueueEntry events.

        Queues in the answer replace what we had; without ``only_queue`` a queue missing from it is dropped
        (it was removed from queues.conf); with it, other queues are left alone.
        """
        params: dict[str, QueueSnapshot] = {}
        members: dict[str, list[QueueMember]] = {}
        callers: dict[str, list[QueueCaller]] = {}
        for ev in events:
            queue = ev.get("Queue") or ""
            if ev.name == "QueueParams":
                params[queue] = QueueSnapshot(
                    name=queue,
                    strategy=ev.get("Strategy", "") or "",
                    max_callers=_int(ev.get("Max")),
                    calls=_int(ev.get("Calls")),
                    holdtime=_int(ev.get("Holdtime")),
                    talktime=_int(ev.get("TalkTime")),
                    completed=_int(ev.get("Completed")),
                    abandoned=_int(ev.get("Abandoned")),
                    service_level=_int(ev.get("ServiceLevel")),
                    service_level_perf=_float(ev.get("ServicelevelPerf") or ev.get("ServiceLevelPerf")),
                    refreshed_at=now,
                )
            elif ev.name == "QueueMember":
                members.setdefault(queue, []).append(_member_from(ev))
            elif ev.name == "QueueEntry":
                callers.setdefault(queue, []).append(
                    QueueCaller(
                        uniqueid=ev.get("Uniqueid") or ev.get("Channel") or "",
                        channel=ev.get("Channel", "") or "",
                        position=_int(ev.get("Position")),
                        joined_at=now - _int(ev.get("Wait")),
                        caller_id_num=ev.get("CallerIDNum") or ev.get("CallerID") or "",
                        caller_id_name=ev.get("CallerIDName", "") or "",
                        priority=_int(ev.get("Priority")),
                    )
                )
        if only_queue is None:
            self._queues = {k: v for k, v in self._queues.items() if k in params}
            self.refreshed_at, self.stale_since = now, None  # the whole picture read again: live
        for name, snap in params.items():
            old = self._queues.get(name)
            self._queues[name] = replace(
                snap,
                callers=_renumber(callers.get(name, [])),
                members=tuple(members.get(name, [])),
                summary_logged_in=old.summary_logged_in if old else None,
                summary_available=old.summary_available if old else None,
                summary_longest_hold=old.summary_longest_hold if old else None,
                stale_since=self.stale_since,
            )

    def apply_summary(self, events: Iterable[AmiEvent], now: float) -> None:
        """Install the answer to ``QueueSummary``: per-queue LoggedIn, Available, Callers, HoldTime …"""
        for ev in events:
            if ev.name != "QueueSummary":
                continue
            name = ev.get("Queue") or ""
            snap = self._queues.get(name) or QueueSnapshot(name=name, stale_since=self.stale_since)
            self._queues[name] = replace(
                snap,
                calls=_int(ev.get("Callers"), snap.calls),
                holdtime=_int(ev.get("HoldTime"), snap.holdtime),
                talktime=_int(ev.get("TalkTime"), snap.talktime),
                summary_logged_in=_int(ev.get("LoggedIn")),
                summary_available=_int(ev.get("Available")),
                summary_longest_hold=_int(ev.get("LongestHoldTime")),
                refreshed_at=now,
            )

    # -- live events ------------------------------------------------------------------------------------
    def apply(self, ev: AmiEvent, now: float) -> bool:
        """Fold one event in; True if it changed (or could have changed) a queue."""
        handler = _HANDLERS.get(ev.name)
        if handler is None:
            return False
        queue = ev.get("Queue")
        if not queue:
            return False
        snap = self._queues.get(queue) or QueueSnapshot(name=queue, stale_since=self.stale_since)
        self._queues[queue] = handler(snap, ev, _event_time(ev, now))
        return True


def _caller_join(q: QueueSnapshot, ev: AmiEvent, now: float) -> QueueSnapshot:
    uid = ev.get("Uniqueid") or ev.get("Channel") or ""
    position = _int(ev.get("Position"), len(q.callers) + 1)
    others = [c for c in q.callers if c.uniqueid != uid]
    existing = q.caller(uid)
    # A caller entering at position p pushes those at p and behind one back (Queue() with a position arg).
    shifted = [replace(c, position=c.position + 1) if c.position >= position else c for c in others]
    caller = QueueCaller(
        uniqueid=uid,
        channel=ev.get("Channel", "") or "",
        position=position,
        joined_at=existing.joined_at if existing else now,
        caller_id_num=ev.get("CallerIDNum", "") or "",
        caller_id_name=ev.get("CallerIDName", "") or "",
        priority=_int(ev.get("Priority")),
    )
    callers = _renumber([*shifted, caller])
    return replace(q, callers=callers, calls=_int(ev.get("Count"), len(callers)))


def _caller_leave(q: QueueSnapshot, ev: AmiEvent, now: float) -> QueueSnapshot:
    uid = ev.get("Uniqueid") or ev.get("Channel") or ""
    callers = _renumber(c for c in q.callers if c.uniqueid != uid)
    return replace(q, callers=callers, calls=_int(ev.get("Count"), len(callers)))


def _member_update(q: QueueSnapshot, ev: AmiEvent, now: float) -> QueueSnapshot:
    interface = ev.get("Interface") or ev.get("Location") or ""
    old = q.member(interface)
    new = _member_from(ev, old)
    members = tuple(new if m.interface == interface else m for m in q.members) if old else (*q.members, new)
    return replace(q, members=members)


def _member_removed(q: QueueSnapshot, ev: AmiEvent, now: float) -> QueueSnapshot:
    interface = ev.get("Interface") or ev.get("Location") or ""
    return replace(q, members=tuple(m for m in q.members if m.interface != interface))


def _agent_connect(q: QueueSnapshot, ev: AmiEvent, now: float) -> QueueSnapshot:
    interface = ev.get("Interface") or ""
    members = tuple(replace(m, in_call=True) if m.interface == interface else m for m in q.members)
    return replace(q, members=members)


def _agent_complete(q: QueueSnapshot, ev: AmiEvent, now: float) -> QueueSnapshot:
    interface = ev.get("Interface") or ""
    members = tuple(
        replace(m, in_call=False, calls_taken=m.calls_taken + 1) if m.interface == interface else m for m in q.members
    )
    return replace(q, members=members, completed=q.completed + 1)


def _caller_abandon(q: QueueSnapshot, ev: AmiEvent, now: float) -> QueueSnapshot:
    # The caller itself is removed by the QueueCallerLeave that app_queue sends right after.
    return replace(q, abandoned=q.abandoned + 1)


def _agent_called(q: QueueSnapshot, ev: AmiEvent, now: float) -> QueueSnapshot:
    return q  # ringing shows in the member's device state (QueueMemberStatus); nothing to keep here


_HANDLERS = {
    "QueueCallerJoin": _caller_join,
    "QueueCallerLeave": _caller_leave,
    "QueueCallerAbandon": _caller_abandon,
    "AgentCalled": _agent_called,
    "AgentConnect": _agent_connect,
    "AgentComplete": _agent_complete,
    "QueueMemberStatus": _member_update,
    "QueueMemberAdded": _member_update,
    "QueueMemberPause": _member_update,
    "QueueMemberPaused": _member_update,  # Asterisk 12's name for QueueMemberPause
    "QueueMemberRemoved": _member_removed,
}
