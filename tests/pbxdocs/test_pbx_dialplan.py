"""docs/asterisk against the code: what the appliance sends, expects and plays must be in the sample dialplan.

Issue #12: a PBX admin with only these docs hit "No such extension" on every callback, prompts that were
not there and variables that did not match. Each test takes what the code relies on from the code itself
(config defaults, constants, the headers and variables it sends, the events it waits for) and looks for it
in docs/asterisk/*.conf, read by tests/pbxdocs/dialplan.py with Asterisk's pattern rules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ivr.adapters.pbx_prompts import PBX_PROMPTS
from ivr.adapters.transfer import CALLER_CHANNEL_HEADERS
from ivr.callbacks.dialer import ami_channel
from ivr.config import CallbacksConfig, TransferConfig
from ivr.flows.loader import load
from ivr.flows.model import CallbackCancel, QueueWithCallback, Transfer
from ivr.pbx.queue_log import EXIT_USER_EVENT
from tests.pbxdocs.dialplan import Context, Dialplan, Step, parse, pattern_matches, split_args, substitute

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "asterisk"
E164 = "+12125550123"

#: The callback's SIP headers and the Originate variable each one stands for (the same name on both paths).
#: The code's own header names are added below from ivr/adapters/callback_dial.py, so a new one is checked too.
CALLBACK_HEADERS = {"X-Callback-ID": "CALLBACK_ID", "X-Callback-Attempt": "CALLBACK_ATTEMPT",
                    "X-Callback-Number": "CALLBACK_NUMBER", "X-IVR-Queue-CallerID": "IVR_QUEUE_CALLERID",
                    "X-Callback-Arrival": "CALLBACK_ARRIVAL", "X-IVR-Call-ID": "IVR_CALL_ID"}
#: Channel variables the Originate carries (the agreed set; the code's own are added from callback_dial.py).
ORIGINATE_VARIABLES = {"CALLBACK_ID", "CALLBACK_ATTEMPT", "IVR_QUEUE", "IVR_QUEUE_POSITION", "CALLBACK_NUMBER",
                       "IVR_QUEUE_CALLERID", "CALLBACK_ARRIVAL", "IVR_CALL_ID"}
#: Fields of the IvrQueueExit UserEvent the queue_log mapper needs (ivr/pbx/queue_log.py, QueueLogMapper._exit).
EXIT_FIELDS = {"Queue", "Reason", "Position", "EnterTime"}


@pytest.fixture(scope="module")
def plan() -> Dialplan:
    return parse((DOCS / "extensions-ivr.conf").read_text(encoding="utf-8"))


def conf_values(name: str, key: str) -> list[str]:
    """Every ``key = value`` of a docs/asterisk .conf file (comments stripped)."""
    out = []
    for raw in (DOCS / name).read_text(encoding="utf-8").splitlines():
        k, sep, v = raw.split(";", 1)[0].partition("=")
        if sep and k.strip() == key:
            out.append(v.strip())
    return out


def box_context() -> str:
    """The context the box's endpoint (PJSIP) or peer (chan_sip) runs its calls in: both samples agree."""
    contexts = {c for f in ("pjsip-ivr-box.conf", "sip-ivr-box.conf") for c in conf_values(f, "context")}
    assert len(contexts) == 1, contexts
    return contexts.pop()


def code_tree(relpath: str) -> ast.Module:
    return ast.parse((REPO / relpath).read_text(encoding="utf-8"))


def code_headers() -> set[str]:
    """X- header names written in the callback dialling code."""
    return {n.value for f in ("ivr/adapters/callback_dial.py", "ivr/callbacks/dialer.py")
            for n in ast.walk(code_tree(f)) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and re.fullmatch(r"X-[A-Za-z0-9-]+", n.value)}


def code_originate_variables() -> set[str]:
    """Keys the AMI dial port puts in ``variables`` (the Originate's Variable: lines)."""
    found: set[str] = set()
    for n in ast.walk(code_tree("ivr/adapters/callback_dial.py")):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "variables" for t in n.targets) \
                and isinstance(n.value, ast.Dict):
            found |= {k.value for k in n.value.keys if isinstance(k, ast.Constant)}
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "variables" \
                and isinstance(n.slice, ast.Constant):
            found.add(n.slice.value)
    return found


def code_user_events() -> dict[str, set[str]]:
    """``ev.get("UserEvent") == "Name" and ev.get("Field") == ...`` anywhere in ivr/: {"Name": {"Field"}}."""
    out: dict[str, set[str]] = {}

    def get_key(e: ast.expr) -> str | None:
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr == "get" and e.args \
                and isinstance(e.args[0], ast.Constant):
            return str(e.args[0].value)
        return None

    for path in (REPO / "ivr").rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(n, ast.BoolOp):
                continue
            names, fields = [], set()
            for v in n.values:
                if isinstance(v, ast.Compare) and (key := get_key(v.left)) is not None:
                    right = v.comparators[0]
                    if key == "UserEvent" and isinstance(right, ast.Constant):
                        names.append(str(right.value))
                    elif key != "UserEvent":
                        fields.add(key)
            for name in names:
                out.setdefault(name, set()).update(fields)
    return out


def flow_queues() -> set[str]:
    """Queues the sample flows hand callers to by name (not the ``${...}`` ones)."""
    loaded = load([REPO / "flows"])
    names = set()
    for flow in loaded.flows.values():
        for node in flow.nodes.values():
            a = node.action
            q = a.name if isinstance(a, QueueWithCallback) else a.queue if isinstance(a, Transfer | CallbackCancel) \
                else None
            if q and "${" not in q:
                names.add(q)
    return names


def one_extension(ctx: Context, dialled: str) -> list[Step]:
    found = ctx.matching(dialled)
    assert found, f"{dialled!r} matches no extension of [{ctx.name}] ({', '.join(ctx.patterns)}): No such extension"
    assert len(found) == 1 or not found[0].startswith("_"), f"{dialled!r} matches {found} in [{ctx.name}]"
    return ctx.extension(found[0])


def run_to_dial(plan: Dialplan, context: str, exten: str) -> tuple[str, str, list[Step]]:
    """Follow Goto()s from ``context,exten,1`` to the first Dial(): (its dial string, context, steps)."""
    for _ in range(10):
        steps = one_extension(plan.contexts[context], exten)
        for step in steps:
            args = split_args(substitute(step.args, {"EXTEN": exten}))
            if step.app == "Dial":
                return args[0], context, steps
            if step.app == "Goto":
                context, exten = (args[0], args[1]) if len(args) == 3 else (context, args[0])
                break
        else:
            raise AssertionError(f"[{context}] {exten}: neither Dial nor Goto")
    raise AssertionError("Goto loop")


def before(steps: list[Step], app: str, what: str) -> bool:
    """Whether a step running ``what`` (a substring of app+args, ExecIf branches included) precedes ``app``."""
    at = next(i for i, s in enumerate(steps) if s.app == app)
    return any(what in f"{a}({b})" for s in steps[:at] for a, b in s.apps())


# -- Asterisk's pattern rules, on the examples of its docs --------------------------------------------------


def test_the_pattern_matcher_follows_asterisk() -> None:
    assert pattern_matches("_X.", "12125550123") and not pattern_matches("_X.", E164)
    assert not pattern_matches("_X.", "1")  # "." wants at least one more character
    assert pattern_matches("_X!", "1") and pattern_matches("_X!", "12")
    assert pattern_matches("_NXXNXXXXXX", "2125550123") and not pattern_matches("_NXXNXXXXXX", "1125550123")
    assert pattern_matches("_1NXX-NXX-XXXX", "12125550123")  # "-" is decoration
    assert pattern_matches("_Z[1-3]", "23") and not pattern_matches("_Z[1-3]", "03")
    assert pattern_matches("_[A-Za-z0-9].", "support") and not pattern_matches("_[A-Za-z0-9].", "s")
    assert pattern_matches("_+X.", E164) and pattern_matches("_x.", "55") and not pattern_matches("_XXX", "12")
    assert pattern_matches("support", "support") and not pattern_matches("support", "supporter")


# -- defect 3: the default Originate channel reaches a dialable number --------------------------------------


@pytest.mark.parametrize("template", [CallbacksConfig().ami_channel, "Local/{digits}@ivr-callback-dial"])
def test_default_originate_channel_reaches_a_dialable_number(plan: Dialplan, template: str) -> None:
    channel = ami_channel(template, E164)  # as the dialer renders it for the Originate
    m = re.fullmatch(r"Local/([^@/]+)@([^/]+)", channel)
    assert m, channel
    dial, context, steps = run_to_dial(plan, m.group(2), m.group(1))
    target = re.fullmatch(r"Local/(\d+)@[\w-]+", dial)
    assert target and target.group(1) == E164.lstrip("+"), dial  # digits only: what outbound routes take
    # busy / no answer / congestion are told to the Originate (OriginateResponse Reason 5 / 3 / 8)
    labels = {s.label: s.app for s in steps if s.label}
    branches = dict(re.findall(r'"\$\{DIALSTATUS\}" = "(\w+)"\]\?(\w+)', " ".join(s.args for s in steps)))
    assert labels[branches["BUSY"]] == "Busy" and labels[branches["NOANSWER"]] == "Ringing"
    after_dial = [s.app for s in steps[[s.app for s in steps].index("Dial"):]]
    assert "Congestion" in after_dial


def test_sip_callbacks_reach_the_same_dialling(plan: Dialplan) -> None:
    """The box's own callback INVITE (sip:+E.164@pbx) lands in the box's context and is dialled the same way,
    with every header the code sends kept in an inherited variable of the AMI path's name."""
    dial, context, _ = run_to_dial(plan, box_context(), E164)
    assert dial == f"Local/{E164.lstrip('+')}@from-internal" and context == "ivr-callback-dial"
    headers = {h: CALLBACK_HEADERS.get(h) for h in set(CALLBACK_HEADERS) | code_headers()}
    for tech in ("PJSIP", "SIP"):
        read = plan.only(f"ivr-callback-headers-{tech}").headers_read()
        for header, variable in headers.items():
            assert variable is not None, f"{header}: which channel variable? (add it to CALLBACK_HEADERS)"
            assert read.get(header) == {f"__{variable}"}, (tech, header, read.get(header))
    arrival = one_extension(plan.contexts[box_context()], E164)
    assert any(s.app == "Gosub" and "ivr-callback-headers-${CHANNEL(channeltype)}" in s.args for s in arrival)


# -- the rest of what the code relies on ----------------------------------------------------------------------


def test_answered_callback_context_asks_press_1_and_says_when_declined(plan: Dialplan) -> None:
    cb, transfer = CallbacksConfig(), TransferConfig()
    steps = one_extension(plan.contexts[cb.ami_context], cb.ami_exten)
    assert any(s.app == "Read" for s in steps)
    goto = [split_args(s.args) for s in steps if s.app == "Goto"]
    assert [transfer.ami_queue_context, "${IVR_QUEUE}", "1"] in goto
    events = code_user_events()
    declined = {name: fields for name, fields in events.items() if name != EXIT_USER_EVENT}
    assert declined, "the code listens for no UserEvent of its own?"
    sent = plan.only(cb.ami_context).user_events()
    for name, fields in declined.items():
        assert name in sent and fields <= sent[name], (name, fields, sent)
    event = next(s for s in steps if s.app == "UserEvent")
    assert "CallbackID: ${CALLBACK_ID}" in split_args(event.args)


def test_every_originate_variable_is_used(plan: Dialplan) -> None:
    text = (DOCS / "extensions-ivr.conf").read_text(encoding="utf-8")
    for name in ORIGINATE_VARIABLES | code_originate_variables():
        assert "${" + name + "}" in text, name


def test_the_queue_context_keeps_place_caller_id_and_channel(plan: Dialplan) -> None:
    ctx = plan.contexts[TransferConfig().ami_queue_context]
    for queue in flow_queues() | {"support"}:
        steps = one_extension(ctx, queue)
        queue_args = split_args(next(s.args for s in steps if s.app == "Queue"))
        assert queue_args[0] == "${EXTEN}" and queue_args[9] == "${IVR_QUEUE_POSITION}"  # absolute position
        assert before(steps, "Queue", "Set(CALLERID(num)=${IVR_QUEUE_CALLERID})")  # the customer's number
        assert before(steps, "Queue", 'ExecIf($["${IVR_QUEUE_CALLERID}" != ""]')  # empty: leave it as it is
        assert before(steps, "Queue", "Set(__IVR_CALLER_CHANNEL=${CHANNEL})")
        assert before(steps, "Queue", "Set(__IVR_QUEUE=${EXTEN})")
    assert "QUEUE_PRIO" not in "".join(p.read_text(encoding="utf-8") for p in DOCS.iterdir())
    assert "QUEUE_PRIO" not in (REPO / "docs" / "callbacks.md").read_text(encoding="utf-8")


def test_refer_to_a_queue_finds_an_extension_named_after_it(plan: Dialplan) -> None:
    ctx = plan.contexts[box_context()]
    for queue in flow_queues():
        assert queue in ctx.patterns, f"[{ctx.name}] has no extension '{queue}': a REFER to it fails"
        steps = ctx.extension(queue)
        goto = next(s for s in steps if s.app == "Goto")
        assert [TransferConfig().ami_queue_context, "${EXTEN}", "1"] == split_args(goto.args)
        assert before(steps, "Goto", "Gosub(ivr-call-id,s,1)")  # the IVR call id kept before the queue
    assert ctx.matching("2000")  # transfers to an extension


def test_the_ivr_call_id_of_a_refer_or_bridge_is_kept_on_the_channel(plan: Dialplan) -> None:
    """Issue 13: the box's X-IVR-Call-ID (REFER header, bridge INVITE header) becomes the inherited channel
    variable IVR_CALL_ID the queue events carry; a REFER's headers reach the dialplan only with
    GET_TRANSFERRER_DATA set on the caller before the Dial to the box."""
    from ivr.adapters.transfer import CALL_ID_HEADER, CALL_ID_VARIABLE

    text = " ".join(f"{a}({b})" for s in plan.contexts["ivr-call-id"].extension("s") for a, b in s.apps())
    assert f"Set(__{CALL_ID_VARIABLE}=${{PJSIP_HEADER(read,{CALL_ID_HEADER})}})" in text
    assert f"Set(__{CALL_ID_VARIABLE}=${{SIP_HEADER({CALL_ID_HEADER})}})" in text
    assert f"Set(__{CALL_ID_VARIABLE}=${{HASH(TRANSFER_DATA,{CALL_ID_HEADER})}})" in text
    steps = one_extension(plan.contexts["ivr-in"], "100")
    prefix = next(s.args.split("=", 1)[1] for s in steps if s.args.startswith("__GET_TRANSFERRER_DATA="))
    assert CALL_ID_HEADER.startswith(prefix) and before(steps, "Dial", f"Set(__GET_TRANSFERRER_DATA={prefix})")


def test_leaving_a_queue_by_key_reaches_the_box_with_its_headers(plan: Dialplan) -> None:
    exit_context = conf_values("queues.conf", "context")
    assert exit_context, "queues.conf sets no context="
    steps = one_extension(plan.contexts[exit_context[0]], "1")
    assert before(steps, "Dial", "Set(__IVR_CALLER_CHANNEL=${CHANNEL})")
    dial = split_args(next(s.args for s in steps if s.app == "Dial"))
    number = re.fullmatch(r"PJSIP/([^@]+)@ivr-box", dial[0])
    answered = {n for f in load([REPO / "flows"]).flows.values() for n in f.numbers}
    assert number and number.group(1) in answered, dial
    assert "b(ivr-headers^s^1)" in dial
    sent = plan.only(exit_context[0]).user_events()
    assert EXIT_FIELDS | {"Key"} <= sent[EXIT_USER_EVENT]
    reads = {str(n.args[0].value) for n in ast.walk(code_tree("ivr/pbx/queue_log.py"))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"
             and n.args and isinstance(n.args[0], ast.Constant)}
    assert EXIT_FIELDS | {"Key"} <= reads  # the fields asked of the dialplan are the mapper's


def test_queue_exits_without_an_agent_are_told(plan: Dialplan) -> None:
    sent = plan.only(TransferConfig().ami_queue_context).user_events()
    assert sent[EXIT_USER_EVENT] >= EXIT_FIELDS


def test_the_headers_the_box_reads_are_added_on_every_technology(plan: Dialplan) -> None:
    """Flows read X- headers as ${sip_x_...}; transfers read the caller's channel from a header."""
    used = {m for p in (REPO / "flows").glob("*.yaml")
            for m in re.findall(r"\$\{sip_x_([a-z0-9_]+)\}", p.read_text(encoding="utf-8"))}
    for tech in ("PJSIP", "SIP"):
        added = plan.only(f"ivr-headers-{tech}").headers_added()
        names = {h.lower().removeprefix("x-").replace("-", "_") for h in added}
        assert used <= names, (tech, used - names)
        assert CALLER_CHANNEL_HEADERS[0] in added
    handler = plan.contexts["ivr-headers"].extension("s")
    assert handler[0].app == "Goto" and "ivr-headers-${CHANNEL(channeltype)}" in handler[0].args


def test_every_prompt_the_pbx_plays_is_rendered_by_ivr_pbx_prompts(plan: Dialplan) -> None:
    played = plan.prompts() | set(conf_values("queues.conf", "periodic-announce"))
    assert played == set(PBX_PROMPTS)
