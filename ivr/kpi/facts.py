"""Per-event extraction: the event log's records turned into plain facts the KPI functions count.

Pure: records in, frozen dataclasses out. Events may be ``ivr.store.eventlog.Event`` objects or mappings
with the same keys (``ivr events --json``). The fields read are tolerant of the facts in flux (issue 13,
item 1): each is read from today's field and from the field the KPI-complete log adds, whichever is there.

- a call: ``call.started`` (caller, dialed, channel, flow, flow_version, ``zone`` when present) and
  ``call.ended`` (outcome, detail, path); a failed handoff: a ``transfer`` event with ``ok: false`` or the
  outcome ``transfer_failed``; the resolved mark: an event ``resolved`` / ``call.resolved`` /
  ``mark.resolved``, or a ``mark`` / ``call.mark`` / ``flow.mark`` event naming ``resolved``, or the outcome
  ``resolved``, or ``resolved: true`` on ``call.ended``; node names bare (``account``) or qualified
  (``billing.account``), qualified from the ``node.entered`` before them; ``flow`` on events when present,
  else the flow a qualified node names;
- a queue visit: ``queue.log`` rows (Asterisk queue_log columns), joined to the IVR call by ``ivr_call_id``
  when the row has it;
- a data look-up: ``http.lookup`` (the flow's ``http`` node: lookup name or host, outcome, latency_ms);
- a callback request: ``callback.requested`` / ``callback.state`` / ``callback.attempt.ended``, and the
  ``callback.kept`` records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: the resolved mark, in the shapes issue 13 item 1 may give it (an event of its own, or a named mark)
_RESOLVED_TYPES = frozenset({"resolved", "call.resolved", "mark.resolved"})
_MARK_TYPES = frozenset({"mark", "call.mark", "flow.mark", "mark.set"})
_MARK_KEYS = ("mark", "name", "value", "what")
HANDOFF_OUTCOMES = frozenset({"transferred", "queued"})


def field_of(ev: Any, name: str) -> Any:
    """A top-level field of an event, an ``Event`` object or a mapping alike."""
    if isinstance(ev, Mapping):
        return ev.get(name)
    return getattr(ev, name, None)


def parse_time(v: Any) -> datetime | None:
    """An event time as an aware UTC datetime: ISO 8601 text (``…Z`` or with an offset; naive = UTC),
    epoch seconds (queue_log), or a datetime."""
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return datetime.fromtimestamp(float(v), UTC)
    text = str(v).strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def number(v: Any) -> float | None:
    """A numeric field (queue_log data are text); None when empty or not a number."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def qualify(node: str, current: str | None) -> str:
    """A node name as ``flow.node``: a bare name (``account``) written while the caller is in
    ``billing.account`` becomes that; qualified names stay."""
    if not node or "." in node or not current:
        return node
    return current if current.endswith("." + node) else node


def flow_of_node(node: str, call_flow: str) -> str:
    """The flow a qualified node belongs to (``survey.csat`` → survey); a top-level node: the call's flow."""
    return node.rsplit(".", 1)[0] if "." in node else call_flow


@dataclass(frozen=True)
class SurveyAnswer:
    scale: str  # csat or nps
    value: int
    node: str  # qualified
    flow: str  # the flow of the survey node (the event's ``flow`` when present)


@dataclass(frozen=True)
class LookupFacts:
    """One data look-up of a call (an ``http`` node's request, retries included)."""

    name: str  # the config's ``lookups:`` entry the node used, else the host it asked
    outcome: str  # ok, timeout, circuit_open, bad_response, http_error, error...
    latency_ms: float | None  # what the caller waited for it (None when the event has no figure)


@dataclass(frozen=True)
class CallFacts:
    """One IVR call as the KPIs see it."""

    call_id: str
    started_at: datetime
    ended_at: datetime | None = None  # None: still running (or its end is outside the events given)
    channel: str = ""
    caller: str = ""
    dialed: str = ""
    flow: str = ""
    flow_version: str = ""
    zone: str | None = None
    outcome: str | None = None
    detail: str = ""
    path: tuple[str, ...] = ()
    resolved: bool = False
    transfer_failed: bool = False  # a handoff was refused or failed at some point of the call
    handoff: str | None = None  # "queue" / "extension": the call left the IVR to the PBX or an agent
    queue: str | None = None  # the queue it was handed to, offered a callback at, or filed one for
    queued_at: datetime | None = None  # when the caller was provably with the queue
    offer_decided: bool = False  # a queue node decided on a callback offer (``queue.offer``)
    callback_offered: bool = False
    callback_accepted: bool = False
    callback_request_id: str | None = None  # filed and confirmed
    callback_leg: bool = False  # the customer leg of a SIP callback (outbound), not an inbound call
    surveys: tuple[SurveyAnswer, ...] = ()
    site: str = ""  # the site it was taken at (the central store's reports group by it; a box leaves it empty)
    variants: tuple[str, ...] = ()  # "experiment=variant" for each split node the call passed (experiment.assigned)
    lookups: tuple[LookupFacts, ...] = ()  # the data look-ups the call made, in order

    @property
    def last_node(self) -> str | None:
        """Where the call ended (qualified): the last node entered, else the outcome's detail."""
        if self.path:
            return self.path[-1]
        return self.detail or None

    @property
    def disposition(self) -> str:
        """One word for how the call left the IVR, in this order: ``open`` (no end yet), ``transferred``
        (handed to the PBX, a queue or an extension), ``callback`` (a callback filed), ``resolved`` (the
        flow marked the task done), ``transfer_failed``, ``abandoned`` (the caller hung up in the IVR),
        ``self_served`` (the flow ended the call), ``other`` (errors, failures, timeouts, shutdown,
        interrupted)."""
        o = self.outcome
        if o is None:
            return "open"
        if o in HANDOFF_OUTCOMES:
            return "transferred"
        if o == "callback":
            return "callback"
        if self.resolved or o == "resolved":
            return "resolved"
        if self.transfer_failed or o == "transfer_failed":
            return "transfer_failed"
        if o == "caller_hangup":
            return "abandoned"
        if o == "hangup":
            return "self_served"
        return "other"

    def end_or(self, now: datetime) -> datetime:
        """The call's end, or ``now`` while it runs (never before its start)."""
        return max(self.ended_at or now, self.started_at)


@dataclass(frozen=True)
class QueueVisit:
    """One caller's stay in one PBX queue, from queue_log rows (ENTERQUEUE to its end)."""

    callid: str
    queue: str
    entered_at: datetime | None
    ended_at: datetime | None = None
    result: str = "waiting"  # answered, abandoned, timeout, exit_key, exit_empty, waiting
    wait: float | None = None  # s: hold until answer, or the wait before leaving
    talk: float | None = None  # s: the agent call (talk + hold), once it completed
    agent: str = ""
    transferred: bool = False  # the agent transferred the caller (BLINDTRANSFER / ATTENDEDTRANSFER)
    ivr_call_id: str | None = None  # the IVR call that sent the caller (``ivr_call_id`` on the rows)
    site: str = ""

    @property
    def at(self) -> datetime | None:
        """When the visit began (for buckets): its ENTERQUEUE, else its first row."""
        return self.entered_at or self.ended_at


@dataclass(frozen=True)
class CallbackRequestFacts:
    request_id: str
    queue: str = ""
    call_id: str | None = None  # the IVR call that filed it
    requested_at: datetime | None = None
    state: str = "requested"  # the last ``callback.state`` to
    first_attempt_outcome: str | None = None  # of the first attempt that tried the phone (not interrupted)
    attempts: int = 0
    site: str = ""


@dataclass
class Facts:
    calls: list[CallFacts] = field(default_factory=list)
    queue_rows: list[Mapping[str, Any]] = field(default_factory=list)
    kept: list[Mapping[str, Any]] = field(default_factory=list)
    requests: list[CallbackRequestFacts] = field(default_factory=list)


def _is_resolved_mark(type_: str, data: Mapping[str, Any]) -> bool:
    if type_ in _RESOLVED_TYPES:
        return True
    return type_ in _MARK_TYPES and any(data.get(k) == "resolved" for k in _MARK_KEYS)


@dataclass
class _CallBuilder:
    call_id: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    info: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None
    detail: str = ""
    path: list[str] = field(default_factory=list)
    current: str | None = None
    resolved: bool = False
    transfer_failed: bool = False
    handoff: str | None = None
    queue: str | None = None
    queued_at: datetime | None = None
    offer_decided: bool = False
    offered: bool = False
    accepted: bool = False
    request_id: str | None = None
    leg: bool = False
    surveys: list[SurveyAnswer] = field(default_factory=list)
    variants: dict[str, str] = field(default_factory=dict)
    lookups: list[LookupFacts] = field(default_factory=list)

    def add(self, type_: str, data: Mapping[str, Any], at: datetime | None) -> None:
        if type_ == "call.started":
            self.started_at = at
            self.info = dict(data)
            return
        if self.outcome is not None and type_ != "call.ended":
            return  # after the end: store events of a callback filed by this call, not the call's life
        node = qualify(str(data.get("node") or ""), self.current)
        if type_ == "node.entered":
            self.current = node
            self.path.append(node)
        elif type_ == "call.ended":
            self.ended_at = at
            self.outcome = str(data.get("outcome") or "")
            self.detail = str(data.get("detail") or "")
            if isinstance(data.get("path"), list):
                self.path = [str(p) for p in data["path"]]
            self.resolved = self.resolved or data.get("resolved") is True
        elif _is_resolved_mark(type_, data):
            self.resolved = True
        elif type_ in ("transfer.progress", "transfer"):
            kind = str(data.get("kind") or "")
            ok = type_ == "transfer.progress" or data.get("ok") is True
            if ok:
                self.handoff = kind or self.handoff
                if kind == "queue":
                    self.queue = str(data.get("destination") or "") or self.queue
                    self.queued_at = self.queued_at or at
            elif type_ == "transfer":
                self.transfer_failed = True
        elif type_ == "queue.offer":
            self.offer_decided = True
            self.offered = self.offered or data.get("offered") is True
            self.queue = self.queue or (str(data.get("queue") or "") or None)
        elif type_ == "callback.offer.accepted":
            self.accepted = True
        elif type_ == "callback.confirmed":
            self.request_id = str(data.get("request_id") or "") or None
            self.queue = str(data.get("queue") or "") or self.queue
        elif type_ == "callback.leg":
            self.leg = True
        elif type_ == "experiment.assigned":
            self.variants.setdefault(str(data.get("experiment") or ""), str(data.get("variant") or ""))
        elif type_ == "http.lookup":
            self.lookups.append(LookupFacts(str(data.get("lookup") or data.get("host") or ""),
                                            str(data.get("outcome") or ""), number(data.get("latency_ms"))))
        elif type_ == "survey.answer":
            v = number(data.get("value"))
            if v is not None:
                call_flow = str(self.info.get("flow") or "")
                self.surveys.append(SurveyAnswer(str(data.get("scale") or ""), int(v), node,
                                                 str(data.get("flow") or flow_of_node(node, call_flow))))

    def build(self) -> CallFacts | None:
        if self.started_at is None:
            return None  # its start is not among the events given: nothing to time it by
        i = self.info
        return CallFacts(
            call_id=self.call_id, started_at=self.started_at, ended_at=self.ended_at,
            # with privacy on, the caller's pseudonym (ivr/store/privacy.py): the number itself is sealed
            channel=str(i.get("channel") or ""), caller=str(i.get("caller_ref") or i.get("caller") or ""),
            dialed=str(i.get("dialed") or ""), flow=str(i.get("flow") or ""),
            flow_version=str(i.get("flow_version") or ""), zone=i.get("zone") or None,
            outcome=self.outcome, detail=self.detail, path=tuple(self.path), resolved=self.resolved,
            transfer_failed=self.transfer_failed, handoff=self.handoff, queue=self.queue, queued_at=self.queued_at,
            offer_decided=self.offer_decided, callback_offered=self.offered, callback_accepted=self.accepted,
            callback_request_id=self.request_id, callback_leg=self.leg, surveys=tuple(self.surveys),
            variants=tuple(f"{e}={v}" for e, v in self.variants.items()), lookups=tuple(self.lookups))


@dataclass
class _RequestBuilder:
    request_id: str
    queue: str = ""
    call_id: str | None = None
    requested_at: datetime | None = None
    state: str = "requested"
    attempts: dict[int, str] = field(default_factory=dict)

    def build(self) -> CallbackRequestFacts:
        charged = [self.attempts[n] for n in sorted(self.attempts) if self.attempts[n] != "interrupted"]
        return CallbackRequestFacts(self.request_id, self.queue, self.call_id, self.requested_at, self.state,
                                    charged[0] if charged else None, len(self.attempts))


def facts_from_events(events: Iterable[Any]) -> Facts:
    """The calls, queue_log rows, ``callback.kept`` records and callback requests in ``events`` (in ``seq``
    order). A call whose ``call.started`` is not among them is left out."""
    calls: dict[str, _CallBuilder] = {}
    requests: dict[str, _RequestBuilder] = {}
    out = Facts()
    for ev in events:
        type_ = str(field_of(ev, "type") or "")
        data = field_of(ev, "data") or {}
        call_id = field_of(ev, "call_id")
        at = parse_time(field_of(ev, "wall_time"))
        if type_ == "queue.log":
            out.queue_rows.append(data)
            continue
        if type_ == "callback.kept":
            out.kept.append(data)
            continue
        if type_.startswith("callback.") and data.get("request_id") and type_ in (
                "callback.requested", "callback.state", "callback.attempt.ended", "callback.updated"):
            rid = str(data["request_id"])
            r = requests.setdefault(rid, _RequestBuilder(rid))
            r.queue = str(data.get("queue") or r.queue)
            if type_ == "callback.requested":
                r.call_id = call_id
                r.requested_at = parse_time(data.get("at")) or at
            elif type_ == "callback.state":
                r.state = str(data.get("to") or r.state)
            elif type_ == "callback.attempt.ended":
                n = number(data.get("n"))
                r.attempts[int(n) if n is not None else len(r.attempts) + 1] = str(data.get("outcome") or "")
            continue
        if not call_id:
            continue
        calls.setdefault(str(call_id), _CallBuilder(str(call_id))).add(type_, data, at)
    out.calls = [c for b in calls.values() if (c := b.build()) is not None]
    out.requests = [r.build() for r in requests.values()]
    return out


# -- queue_log -----------------------------------------------------------------------------------------------

def _data(row: Mapping[str, Any]) -> list[str]:
    """A row's data fields as one list: ``data`` (a list, QueueLogEntry-like) or data1..data4 plus data5
    split on ``|`` (data5 keeps the rest of a longer list, as Asterisk's realtime table does)."""
    if isinstance(row.get("data"), (list, tuple)):
        return [str(x) for x in row["data"]]
    out = [str(row.get(f"data{i}") or "") for i in range(1, 5)]
    rest = str(row.get("data5") or "")
    if rest:
        out += rest.split("|")
    while out and out[-1] == "":
        out.pop()
    return out


def _at(d: list[str], i: int) -> float | None:
    return number(d[i]) if -len(d) <= i < len(d) else None


_EXITS = {"ABANDON": "abandoned", "EXITWITHTIMEOUT": "timeout", "EXITWITHKEY": "exit_key", "EXITEMPTY": "exit_empty"}


def visits_from_queue_log(rows: Iterable[Mapping[str, Any]]) -> list[QueueVisit]:
    """Queue visits from queue_log rows (in time order; rows of one second keep their given order).

    Per (callid, queue): ENTERQUEUE opens a visit; CONNECT answers it (wait = holdtime, data1);
    COMPLETECALLER/COMPLETEAGENT (holdtime, calltime) and BLINDTRANSFER/ATTENDEDTRANSFER (…, holdtime,
    calltime, origposition) end an answered one with its talk time; ABANDON (waittime = data3),
    EXITWITHTIMEOUT / EXITEMPTY (data3) and EXITWITHKEY (data4) end an unanswered one. Member and agent
    verbs (RINGNOANSWER, AGENTDUMP, PAUSE, ADDMEMBER …) do not change a visit. A visit whose ENTERQUEUE was
    missed starts at its first row."""
    order = sorted(enumerate(rows), key=lambda ir: (number(ir[1].get("time")) or 0.0, ir[0]))
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for _, row in order:
        verb = str(row.get("event") or "").upper()
        callid, queue = str(row.get("callid") or ""), str(row.get("queuename") or "")
        if not callid or callid == "NONE" or not queue or queue == "NONE":
            continue
        t = parse_time(row.get("time"))
        d = _data(row)
        key = (callid, queue)
        v = open_.get(key)
        link = str(row.get("ivr_call_id") or "") or None
        if verb == "ENTERQUEUE":
            if v is not None:
                done.append(v)
            open_[key] = {"callid": callid, "queue": queue, "entered_at": t, "ivr_call_id": link}
            continue
        if verb not in ("CONNECT", "COMPLETECALLER", "COMPLETEAGENT", "BLINDTRANSFER", "ATTENDEDTRANSFER",
                        *_EXITS):
            continue
        if v is None:
            v = open_[key] = {"callid": callid, "queue": queue, "entered_at": None, "ivr_call_id": link}
        v["ivr_call_id"] = v.get("ivr_call_id") or link
        agent = str(row.get("agent") or "")
        if verb == "CONNECT":
            v.update(result="answered", wait=_at(d, 0), agent=agent, answered_at=t)
            continue
        if verb in ("COMPLETECALLER", "COMPLETEAGENT"):
            hold, talk = _at(d, 0), _at(d, 1)
        elif verb in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
            hold, talk = _at(d, -3), _at(d, -2)
            v["transferred"] = True
        else:
            waited = _at(d, 3 if verb == "EXITWITHKEY" else 2)
            if waited is None and v.get("entered_at") and t:
                waited = (t - v["entered_at"]).total_seconds()
            v.update(result=_EXITS[verb], wait=waited, ended_at=t)
            done.append(open_.pop(key))
            continue
        v.update(result="answered", talk=talk, ended_at=t, agent=v.get("agent") or agent)
        if v.get("wait") is None:
            v["wait"] = hold
        done.append(open_.pop(key))
    done.extend(open_.values())
    return [QueueVisit(callid=v["callid"], queue=v["queue"], entered_at=v.get("entered_at"),
                       ended_at=v.get("ended_at"), result=v.get("result", "waiting"), wait=v.get("wait"),
                       talk=v.get("talk"), agent=v.get("agent", ""), transferred=v.get("transferred", False),
                       ivr_call_id=v.get("ivr_call_id"))
            for v in done]
