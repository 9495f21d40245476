"""AMI queue events → Asterisk ``queue_log`` lines, pure, so KPI tools that read queue_log map one-to-one.

Asterisk docs, "Queue Logs" (docs.asterisk.org/Operation/Logging/Queue-Logs/): each line is
``time|callid|queuename|agent|event|data1|data2|…``, where callid is the caller channel's Uniqueid (or
``NONE``), agent the member name (or ``NONE``), and the data fields per verb:

=================  ====================================================  ==========================
verb               data fields (docs)                                    from AMI event
=================  ====================================================  ==========================
ENTERQUEUE         url | callerid                                        QueueCallerJoin
ABANDON            position | origposition | waittime                    QueueCallerAbandon
RINGNOANSWER       ringtime (ms)                                         AgentRingNoAnswer
CONNECT            holdtime | bridgedchanneluniqueid | ringtime          AgentConnect
COMPLETECALLER     holdtime | calltime | origposition                    AgentComplete Reason=caller
COMPLETEAGENT      holdtime | calltime | origposition                    AgentComplete Reason=agent
TRANSFER           extension | context | holdtime | calltime | origpos.  AgentComplete Reason=transfer
AGENTDUMP          (none)                                                AgentDump
EXITWITHKEY        key | position | origposition | waittime              UserEvent IvrQueueExit
EXITWITHTIMEOUT    position | origposition | waittime                    UserEvent IvrQueueExit
EXITEMPTY          position | origposition | waittime                    UserEvent IvrQueueExit
ADDMEMBER / REMOVEMEMBER / PAUSE(reason) / UNPAUSE(reason)               QueueMember{Added,Removed,Pause}
=================  ====================================================  ==========================

AMI has no event for a caller leaving by key or by timeout (app_queue writes those straight to queue_log and
sends only QueueCallerLeave), so the dialplan in ``docs/asterisk/`` raises ``UserEvent(IvrQueueExit, …)``
from the queue's exit context; see ``docs/asterisk/README.md``. ``origposition`` is what we saw at
QueueCallerJoin; when the join happened before we connected it is empty, as it would be unknown.
AgentComplete's TRANSFER carries no target, so its extension and context are empty.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ivr.proto.ami import AmiEvent

NONE = "NONE"
#: the UserEvent our dialplan raises when a caller leaves a queue by key, timeout or empty queue
EXIT_USER_EVENT = "IvrQueueExit"
_MAX_TRACKED = 10_000


@dataclass(frozen=True)
class QueueLogEntry:
    """One queue_log line. ``time`` is epoch seconds (int in the file, as Asterisk writes it)."""

    time: float
    callid: str
    queuename: str
    agent: str
    event: str
    data: tuple[str, ...] = ()

    def line(self) -> str:
        """The line exactly as Asterisk writes /var/log/asterisk/queue_log."""
        return "|".join([str(int(self.time)), self.callid, self.queuename, self.agent, self.event, *self.data])

    def as_record(self) -> dict[str, str | float]:
        """Columns of Asterisk's realtime ``queue_log`` table (time, callid, queuename, agent, event,
        data1..data5) for the appliance's event log."""
        out: dict[str, str | float] = {
            "time": self.time,
            "callid": self.callid,
            "queuename": self.queuename,
            "agent": self.agent,
            "event": self.event,
        }
        for i in range(5):
            out[f"data{i + 1}"] = self.data[i] if i < len(self.data) else ""
        return out


@dataclass
class _Caller:
    joined_at: float
    origposition: str
    position: str


def _ival(value: str | None) -> str:
    """Integer text for a data field (AMI sometimes sends ``12.0``); empty stays empty."""
    if value in (None, ""):
        return ""
    try:
        return str(int(float(value)))
    except ValueError:
        return value


class QueueLogMapper:
    """Stateful (per caller: join time and original position) but pure: ``map(event, now)`` returns the
    queue_log entries the event stands for (usually zero or one)."""

    def __init__(self) -> None:
        self._callers: OrderedDict[tuple[str, str], _Caller] = OrderedDict()

    def map(self, ev: AmiEvent, now: float) -> list[QueueLogEntry]:
        ts = ev.get("Timestamp")
        t = float(ts) if ts and ts.replace(".", "", 1).isdigit() else now
        name = ev.name
        if name == "UserEvent" and (ev.get("UserEvent") or "") == EXIT_USER_EVENT:
            return self._exit(ev, t)
        queue = ev.get("Queue") or NONE
        uid = ev.get("Uniqueid") or NONE
        agent = ev.get("MemberName") or ev.get("Interface") or NONE
        key = (queue, uid)

        def entry(verb: str, *data: str, who: str = NONE, callid: str = uid) -> list[QueueLogEntry]:
            return [QueueLogEntry(t, callid, queue, who, verb, tuple(data))]

        if name == "QueueCallerJoin":
            pos = _ival(ev.get("Position"))
            self._remember(key, _Caller(t, pos, pos))
            return entry("ENTERQUEUE", "", ev.get("CallerIDNum") or "")
        if name == "QueueCallerLeave":
            c = self._callers.get(key)
            if c is not None:
                c.position = _ival(ev.get("Position"))
            return []
        if name == "QueueCallerAbandon":
            self._callers.pop(key, None)
            return entry(
                "ABANDON", _ival(ev.get("Position")), _ival(ev.get("OriginalPosition")), _ival(ev.get("HoldTime"))
            )
        if name == "AgentRingNoAnswer":
            return entry("RINGNOANSWER", _ival(ev.get("RingTime")), who=agent)
        if name == "AgentConnect":
            return entry(
                "CONNECT", _ival(ev.get("HoldTime")), ev.get("DestUniqueid") or "", _ival(ev.get("RingTime")), who=agent
            )
        if name == "AgentComplete":
            c = self._callers.pop(key, None)
            orig = c.origposition if c else ""
            hold, talk = _ival(ev.get("HoldTime")), _ival(ev.get("TalkTime"))
            reason = (ev.get("Reason") or "").lower()
            if reason == "transfer":
                return entry("TRANSFER", "", "", hold, talk, orig, who=agent)
            verb = "COMPLETEAGENT" if reason == "agent" else "COMPLETECALLER"
            return entry(verb, hold, talk, orig, who=agent)
        if name == "AgentDump":
            self._callers.pop(key, None)
            return entry("AGENTDUMP", who=agent)
        if name == "QueueMemberAdded":
            return entry("ADDMEMBER", "", who=agent, callid=NONE)
        if name == "QueueMemberRemoved":
            return entry("REMOVEMEMBER", "", who=agent, callid=NONE)
        if name in ("QueueMemberPause", "QueueMemberPaused"):
            verb = "PAUSE" if (ev.get("Paused") or "") in ("1", "true") else "UNPAUSE"
            return entry(verb, ev.get("PausedReason") or ev.get("Reason") or "", who=agent, callid=NONE)
        return []

    def _exit(self, ev: AmiEvent, t: float) -> list[QueueLogEntry]:
        queue = ev.get("Queue") or NONE
        uid = ev.get("Uniqueid") or NONE
        c = self._callers.pop((queue, uid), None)
        position = _ival(ev.get("Position")) or (c.position if c else "")
        orig = _ival(ev.get("OriginalPosition")) or (c.origposition if c else "")
        entered = ev.get("EnterTime")
        try:
            waittime = str(int(t - float(entered))) if entered else (str(int(t - c.joined_at)) if c else "")
        except ValueError:
            waittime = ""
        reason = (ev.get("Reason") or "EXITWITHKEY").upper()
        if reason == "EXITWITHKEY":
            data: tuple[str, ...] = (ev.get("Key") or "", position, orig, waittime)
        elif reason in ("EXITWITHTIMEOUT", "EXITEMPTY"):
            data = (position, orig, waittime)
        else:
            return []
        return [QueueLogEntry(t, uid, queue, NONE, reason, data)]

    def _remember(self, key: tuple[str, str], caller: _Caller) -> None:
        self._callers[key] = caller
        self._callers.move_to_end(key)
        while len(self._callers) > _MAX_TRACKED:  # callers whose end we never saw (missed while disconnected)
            self._callers.popitem(last=False)
