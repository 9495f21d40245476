"""AMI queue events → Asterisk ``queue_log`` lines, pure, so KPI tools that read queue_log map one-to-one.

Asterisk docs, "Queue Logs" (docs.asterisk.org/Operation/Logging/Queue-Logs/): each line is
``time|callid|queuename|agent|event|data1|data2|…``, where callid is the caller channel's Uniqueid (or
``NONE``), agent the member name (or ``NONE``). ``main/logger.c`` ``ast_queue_log()`` writes
``"%ld|%s|%s|%s|%s|"`` then the event's data, so a line always has the ``|`` after the event, even with no
data. The data per verb is what ``apps/app_queue.c`` (github.com/asterisk/asterisk, master f0c1c1a7, 2026)
passes to ``ast_queue_log``; tests/ami/fixtures/queue_log.txt holds such lines, each with its source line:

=================  =========================================================  ===================================
verb               data (app_queue.c)                                         from AMI event
=================  =========================================================  ===================================
ENTERQUEUE         url | callerid | position                                  QueueCallerJoin
RINGNOANSWER       ringtime (ms)                                              AgentRingNoAnswer
RINGCANCELED       ringtime (ms): the caller hung up or left by key while     AgentCalled + DialEnd CANCEL
                   the member rang (commit 40b9766a31, 2016; Asterisk 15+)    with no DialEnd ANSWER before it
CONNECT            holdtime | bridged channel uniqueid | ringtime (s)         AgentConnect
COMPLETECALLER     holdtime | calltime | origposition                         AgentComplete Reason=caller
COMPLETEAGENT      holdtime | calltime | origposition                         AgentComplete Reason=agent
BLINDTRANSFER      extension | context | holdtime | calltime | origposition   BlindTransfer + AgentComplete
ATTENDEDTRANSFER   BRIDGE|id or APP|app or LINK|chan1|chan2, then             AttendedTransfer + AgentComplete
                   holdtime | calltime | origposition
ABANDON            position | origposition | waittime                         QueueCallerAbandon + Hangup
AGENTDUMP          (empty)                                                    AgentDump
EXITWITHKEY        key | position | origposition | waittime                   UserEvent IvrQueueExit
EXITWITHTIMEOUT    position | origposition | waittime                         UserEvent IvrQueueExit
EXITEMPTY          position | origposition | waittime                         UserEvent IvrQueueExit
ADDMEMBER          PAUSED or empty                                            QueueMemberAdded
REMOVEMEMBER       (empty)                                                    QueueMemberRemoved
PAUSE / UNPAUSE    reason                                                     QueueMemberPause
PENALTY            penalty (agent: the interface)                             QueueMemberPenalty
RINGINUSE          0 or 1 (agent: the interface)                              QueueMemberRinginuse
AGENTLOGIN         channel (queuename NONE, agent: the agent id)              AgentLogin
AGENTLOGOFF        channel | logintime                                        AgentLogoff
=================  =========================================================  ===================================

What AMI does not carry, and what the mapping writes instead (each also noted where it is written):

- ENTERQUEUE's url (Queue()'s URL argument) is not in QueueCallerJoin: empty. The caller-ID-name 4th field
  of queues.conf ``log_caller_id_name`` (Asterisk 2025+) is not written: we do not know the PBX's setting.
- ADDMEMBER/REMOVEMEMBER: Asterisk's callid says who did it (``MANAGER``, ``CLI``, ``REALTIME`` or the
  channel's uniqueid); QueueMemberAdded/Removed do not: ``NONE``.
- PAUSEALL/UNPAUSEALL (a pause without a queue) are not told apart: AMI sends one QueueMemberPause per queue,
  which become the per-queue PAUSE/UNPAUSE lines Asterisk writes too.
- AMI has no event for a caller leaving by key, timeout or empty queue (app_queue writes those straight to
  queue_log and sends only QueueCallerLeave), so the dialplan in ``docs/asterisk/`` raises
  ``UserEvent(IvrQueueExit, …)`` from the queue's exit context; see ``docs/asterisk/README.md``.
- ``origposition`` is what we saw at QueueCallerJoin; when the join happened before we connected it is empty.
- Times: the event's ``Timestamp`` (manager.conf ``timestampevents = yes``), else when we read it; RINGCANCELED's
  ring time runs from the AgentCalled event (Asterisk: from the start of the ring round, the same moment).
- A transfer's kind and target come from the BlindTransfer/AttendedTransfer event (the same stasis message
  as app_queue's log line, usually ahead of AgentComplete); without one, BLINDTRANSFER with empty target.
- QueueCallerAbandon is also sent on a queue timeout, an empty queue and a withdrawal; the ABANDON is
  written when the caller's channel hangs up, and dropped when our exit UserEvent says timeout/empty. A
  withdrawn caller (no AMI event) who later hangs up is logged ABANDON instead of WITHDRAW.
- Verbs with no AMI counterpart are not written: SYSCOMPAT, WITHDRAW, CONFIGRELOAD, QUEUESTART, OUTCALL,
  and lines from the QueueLog() application / QueueLog action.

The join to the IVR (issue 13): a caller the appliance handed to the PBX carries the channel variable
``IVR_CALL_ID`` (docs/asterisk). The mapper learns it per caller Uniqueid from the events themselves
(``ChanVariable: IVR_CALL_ID=…``, manager.conf ``channelvars``) or from ``learn`` (the monitor's ``Getvar`` at
QueueCallerJoin when the events do not carry it), and every entry of that caller gets ``ivr_call_id``: an
addition to the row, never in ``line()`` (Asterisk's own file has no such column).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TypeVar

from ivr.proto.ami import AmiEvent

NONE = "NONE"
#: the channel variable naming the IVR call a caller came from (docs/asterisk/extensions-ivr.conf)
IVR_CALL_ID_VARIABLE = "IVR_CALL_ID"
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
    ivr_call_id: str = ""
    """The IVR call that sent this caller (the channel's IVR_CALL_ID); empty when unknown or not one of ours."""

    def line(self) -> str:
        """The line exactly as Asterisk writes /var/log/asterisk/queue_log (the ``|`` after the event is
        always there: logger.c prints ``"…|%s|"`` and then the data)."""
        head = "|".join([str(int(self.time)), self.callid, self.queuename, self.agent, self.event])
        return head + "|" + "|".join(self.data)

    def as_record(self) -> dict[str, str | float]:
        """Columns of Asterisk's realtime ``queue_log`` table (time, callid, queuename, agent, event,
        data1..data5) for the appliance's event log. Like logger.c (``AST_NONSTANDARD_APP_ARGS`` into five),
        data5 keeps the rest of a longer data list, ``|`` and all."""
        out: dict[str, str | float] = {
            "time": self.time,
            "callid": self.callid,
            "queuename": self.queuename,
            "agent": self.agent,
            "event": self.event,
        }
        for i in range(4):
            out[f"data{i + 1}"] = self.data[i] if i < len(self.data) else ""
        out["data5"] = "|".join(self.data[4:])
        if self.ivr_call_id:
            out["ivr_call_id"] = self.ivr_call_id
        return out


@dataclass
class _Caller:
    joined_at: float
    origposition: str
    position: str


@dataclass(frozen=True)
class _Ring:
    """A member being rung for a caller (AgentCalled), until answered, not answered, or cancelled."""

    queue: str
    member: str
    called_at: float


def _ival(value: str | None) -> str:
    """Integer text for a data field (AMI sometimes sends ``12.0``); empty stays empty."""
    if value in (None, ""):
        return ""
    try:
        return str(int(float(value)))
    except ValueError:
        return value


K = TypeVar("K")
V = TypeVar("V")


def _remember(d: OrderedDict[K, V], key: K, value: V) -> None:
    """Per-caller memory that forgets the oldest entries: callers whose end we never saw (missed while
    disconnected) must not pile up."""
    d[key] = value
    d.move_to_end(key)
    while len(d) > _MAX_TRACKED:
        d.popitem(last=False)


class QueueLogMapper:
    """Stateful (per caller: join time and original position, members ringing, a transfer seen) but pure:
    ``map(event, now)`` returns the queue_log entries the event stands for (usually zero or one)."""

    def __init__(self) -> None:
        self._callers: OrderedDict[tuple[str, str], _Caller] = OrderedDict()
        #: caller uniqueid → {member channel's uniqueid (DestUniqueid): ring}
        self._rings: OrderedDict[str, dict[str, _Ring]] = OrderedDict()
        #: caller uniqueid → member whose DialEnd ANSWER came in this ring round (the others' CANCEL is
        #: "answered elsewhere", which Asterisk does not log)
        self._answered: OrderedDict[str, str] = OrderedDict()
        #: caller (or transferer) uniqueid → (verb, leading data) of a successful transfer
        self._transfers: OrderedDict[str, tuple[str, tuple[str, ...]]] = OrderedDict()
        #: caller uniqueid → the ABANDON a QueueCallerAbandon stands for, until the Hangup confirms it
        self._abandoned: OrderedDict[str, QueueLogEntry] = OrderedDict()
        #: caller uniqueid → the IVR call id its channel carries (IVR_CALL_ID)
        self._ivr_calls: OrderedDict[str, str] = OrderedDict()

    def learn(self, uniqueid: str, ivr_call_id: str | None) -> None:
        """The channel ``uniqueid`` carries IVR_CALL_ID ``ivr_call_id`` (a Getvar answer); None/empty: it does not."""
        if ivr_call_id:
            _remember(self._ivr_calls, uniqueid, ivr_call_id)

    def carries_ivr_call_id(self, ev: AmiEvent) -> bool:
        """Whether the event itself says (``ChanVariable``) if its channel carries IVR_CALL_ID, empty or not."""
        return IVR_CALL_ID_VARIABLE in ev.variables()

    def ivr_call_id(self, uniqueid: str) -> str:
        return self._ivr_calls.get(uniqueid, "")

    def map(self, ev: AmiEvent, now: float) -> list[QueueLogEntry]:
        uid = ev.get("Uniqueid") or NONE
        known = ev.variables().get(IVR_CALL_ID_VARIABLE)
        if known and uid != NONE:
            _remember(self._ivr_calls, uid, known)
        entries = self._map(ev, now)
        return [replace(e, ivr_call_id=self._ivr_calls.get(e.callid, "")) if e.callid in self._ivr_calls else e
                for e in entries]

    def _map(self, ev: AmiEvent, now: float) -> list[QueueLogEntry]:
        ts = ev.get("Timestamp")
        t = float(ts) if ts and ts.replace(".", "", 1).isdigit() else now
        name = ev.name
        if name == "UserEvent" and (ev.get("UserEvent") or "") == EXIT_USER_EVENT:
            return self._exit(ev, t)
        queue = ev.get("Queue") or NONE
        uid = ev.get("Uniqueid") or NONE
        agent = ev.get("MemberName") or ev.get("Interface") or NONE
        key = (queue, uid)

        def entry(verb: str, *data: str, who: str = NONE, callid: str = uid, q: str = queue
                  ) -> list[QueueLogEntry]:
            return [QueueLogEntry(t, callid, q, who, verb, data or ("",))]

        if name == "QueueCallerJoin":
            pos = _ival(ev.get("Position"))
            _remember(self._callers, key, _Caller(t, pos, pos))
            # app_queue.c queue_exec: "%s|%s|%d" url, caller id number, qe.opos. The url is not in the event.
            return entry("ENTERQUEUE", "", ev.get("CallerIDNum") or "", pos)
        if name == "AgentCalled":
            rings = self._rings.get(uid)
            if not rings:  # a new ring round: an ANSWER of an earlier round (then AGENTDUMP) no longer counts
                self._answered.pop(uid, None)
                rings = {}
            rings[ev.get("DestUniqueid") or ev.get("DestChannel") or ""] = _Ring(queue, agent, t)
            _remember(self._rings, uid, rings)
            return []
        if name == "DialEnd":
            return self._dial_end(ev, uid, t)
        if name == "QueueCallerLeave":
            c = self._callers.get(key)
            if c is not None:
                c.position = _ival(ev.get("Position"))
            self._rings.pop(uid, None)
            self._answered.pop(uid, None)
            return []
        if name == "QueueCallerAbandon":
            # app_queue.c record_abandoned() sends this for a caller who hung up (ABANDON), but also on a
            # queue timeout (EXITWITHTIMEOUT), an empty queue (EXITEMPTY) and a withdrawal (WITHDRAW), where
            # Asterisk writes no ABANDON. So it waits: the caller channel's Hangup makes it an ABANDON, our
            # exit UserEvent replaces it with the exit line.
            self._rings.pop(uid, None)
            # app_queue.c try_calling: a caller who hung up after a member answered but before the bridge is
            # logged with that member's name; otherwise (queue_exec) with NONE.
            who = self._answered.pop(uid, NONE)
            _remember(self._abandoned, uid, entry("ABANDON", _ival(ev.get("Position")),
                                                  _ival(ev.get("OriginalPosition")), _ival(ev.get("HoldTime")),
                                                  who=who)[0])
            return []
        if name == "Hangup":
            pending = self._abandoned.pop(uid, None)
            if pending is None:
                return []
            self._callers.pop((pending.queuename, uid), None)
            return [pending]
        if name == "AgentRingNoAnswer":
            self._ring_done(uid, ev)
            return entry("RINGNOANSWER", _ival(ev.get("RingTime")), who=agent)
        if name == "AgentConnect":
            self._rings.pop(uid, None)
            self._answered.pop(uid, None)
            return entry("CONNECT", _ival(ev.get("HoldTime")), ev.get("DestUniqueid") or "",
                         _ival(ev.get("RingTime")), who=agent)
        if name in ("BlindTransfer", "AttendedTransfer"):
            self._transfer(ev)
            return []
        if name == "AgentComplete":
            c = self._callers.pop(key, None)
            orig = c.origposition if c else ""
            hold, talk = _ival(ev.get("HoldTime")), _ival(ev.get("TalkTime"))
            reason = (ev.get("Reason") or "").lower()
            if reason == "transfer":
                # AgentComplete does not say which kind of transfer nor where to: the transfer event does
                verb, lead = self._transfers.pop(uid, ("BLINDTRANSFER", ("", "")))
                return entry(verb, *lead, hold, talk, orig, who=agent)
            verb = "COMPLETEAGENT" if reason == "agent" else "COMPLETECALLER"
            return entry(verb, hold, talk, orig, who=agent)
        if name == "AgentDump":  # the caller stays in the queue (try_calling returns to queue_exec's loop)
            self._rings.pop(uid, None)
            self._answered.pop(uid, None)
            return entry("AGENTDUMP", who=agent)
        # Member changes: Asterisk's callid for ADDMEMBER/REMOVEMEMBER says who made them (MANAGER, CLI,
        # REALTIME, a channel); AMI does not, so NONE.
        if name == "QueueMemberAdded":
            return entry("ADDMEMBER", "PAUSED" if _flag(ev.get("Paused")) else "", who=agent, callid=NONE)
        if name == "QueueMemberRemoved":
            return entry("REMOVEMEMBER", who=agent, callid=NONE)
        if name in ("QueueMemberPause", "QueueMemberPaused"):
            verb = "PAUSE" if _flag(ev.get("Paused")) else "UNPAUSE"
            return entry(verb, ev.get("PausedReason") or ev.get("Reason") or "", who=agent, callid=NONE)
        if name == "QueueMemberPenalty":
            return entry("PENALTY", _ival(ev.get("Penalty")), who=ev.get("Interface") or agent, callid=NONE)
        if name == "QueueMemberRinginuse":
            return entry("RINGINUSE", "1" if _flag(ev.get("Ringinuse")) else "0", who=ev.get("Interface") or agent,
                         callid=NONE)
        if name == "AgentLogin":  # app_queue.c queue_agent_cb: queuename NONE, the channel's uniqueid
            return entry("AGENTLOGIN", ev.get("Channel") or "", who=ev.get("Agent") or NONE, q=NONE)
        if name == "AgentLogoff":
            return entry("AGENTLOGOFF", ev.get("Channel") or "", _ival(ev.get("Logintime")),
                         who=ev.get("Agent") or NONE, q=NONE)
        return []

    def _ring_done(self, uid: str, ev: AmiEvent) -> _Ring | None:
        rings = self._rings.get(uid)
        if not rings:
            return None
        return rings.pop(ev.get("DestUniqueid") or ev.get("DestChannel") or "", None)

    def _dial_end(self, ev: AmiEvent, uid: str, t: float) -> list[QueueLogEntry]:
        """app_queue.c wait_for_answer: when the caller hangs up, presses ``*`` or an exit key while members
        ring, it writes RINGCANCELED for each and publishes DialEnd CANCEL for each. A CANCEL after a DialEnd
        ANSWER of the same round is "answered elsewhere": not logged. Repeated CANCELs (hangupcalls) find
        the ring already ended."""
        ring = self._ring_done(uid, ev)
        if ring is None:  # not a queue's ring (another dial), or already ended
            return []
        status = (ev.get("DialStatus") or "").upper()
        if status == "ANSWER":
            _remember(self._answered, uid, ring.member)
            return []
        if status != "CANCEL" or uid in self._answered:
            return []  # NOANSWER/BUSY/…: RINGNOANSWER comes from AgentRingNoAnswer
        ms = str(max(0, int(round((t - ring.called_at) * 1000))))
        return [QueueLogEntry(t, uid, ring.queue, ring.member, "RINGCANCELED", (ms,))]

    def _transfer(self, ev: AmiEvent) -> None:
        """Remember a successful transfer's kind and target for the AgentComplete (Reason transfer) that
        follows: app_queue.c handle_blind_transfer / log_attended_transfer write them."""
        if (ev.get("Result") or "") != "Success":
            return
        lead: tuple[str, ...]
        parties: tuple[str, ...]
        if ev.name == "BlindTransfer":
            verb, lead = "BLINDTRANSFER", (ev.get("Extension") or "", ev.get("Context") or "")
            parties = ("TransfereeUniqueid", "TransfererUniqueid")
        else:
            verb = "ATTENDEDTRANSFER"
            dest = (ev.get("DestType") or "").lower()
            if dest == "bridge":
                lead = ("BRIDGE", ev.get("DestBridgeUniqueid") or "")
            elif dest == "app":
                lead = ("APP", ev.get("DestApp") or "")
            elif dest == "link":
                lead = ("LINK", ev.get("LocalOneChannel") or "", ev.get("LocalTwoChannel") or "")
            else:
                return  # threeway / fail: app_queue logs nothing
            parties = ("TransfereeUniqueid", "OrigTransfererUniqueid", "SecondTransfererUniqueid")
        for field_ in parties:
            party = ev.get(field_)
            if party:
                _remember(self._transfers, party, (verb, lead))

    def _exit(self, ev: AmiEvent, t: float) -> list[QueueLogEntry]:
        queue = ev.get("Queue") or NONE
        uid = ev.get("Uniqueid") or NONE
        self._abandoned.pop(uid, None)  # a timeout or empty queue, not an abandon (see QueueCallerAbandon)
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


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")
