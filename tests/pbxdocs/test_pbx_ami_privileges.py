"""The least-privilege AMI user of docs/asterisk/manager.conf is enough for every action the code can send.

Issue #12: the documented user (write = call,originate,reporting) worked against Asterisk 20; this keeps it
so: a new action in the code whose class the user lacks fails here, not at a customer's PBX.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Each action's authority classes, as Asterisk registers them; the session needs ANY ONE of them in its
#: writeperm, or none when the action has none ("(writeperm & authority) || authority == 0",
#: main/manager.c process_message). Source: github.com/asterisk/asterisk @ f0c1c1a (2026-08):
#: main/manager.c __init_manager: Ping, Events, Logoff, Login, Challenge 0; Hangup SYSTEM|CALL; Setvar CALL;
#: Getvar CALL|REPORTING; Redirect CALL; Originate ORIGINATE; CoreShowChannels SYSTEM|REPORTING.
#: apps/app_queue.c load_module: QueueStatus 0, QueueSummary 0.
#: (Originate also wants "system" when it runs an application such as System or Exec; the appliance
#: originates to a context and extension only: ivr/adapters/ami.py AmiAdapter.originate.)
ACTION_CLASSES: dict[str, frozenset[str]] = {
    "Ping": frozenset(), "Events": frozenset(), "Logoff": frozenset(), "Login": frozenset(),
    "Challenge": frozenset(), "QueueStatus": frozenset(), "QueueSummary": frozenset(),
    "Hangup": frozenset({"system", "call"}), "Setvar": frozenset({"call"}),
    "Getvar": frozenset({"call", "reporting"}), "Redirect": frozenset({"call"}),
    "Originate": frozenset({"originate"}), "CoreShowChannels": frozenset({"system", "reporting"}),
    "DBGet": frozenset({"system", "reporting"}),  # main/db.c: EVENT_FLAG_SYSTEM | EVENT_FLAG_REPORTING
}


def actions_in_code() -> dict[str, str]:
    """Every AMI action name sent from ivr/: the first argument of ``.action(...)`` / ``._exchange(...)``
    → where. A name that is not a literal (outside those two methods' own bodies) is a failure: it could
    be anything."""
    found: dict[str, str] = {}
    for path in (REPO / "ivr").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or fn.name in ("action", "_exchange"):
                continue
            for n in ast.walk(fn):
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                        and n.func.attr in ("action", "_exchange") and n.args:
                    where = f"{path.relative_to(REPO)}:{n.lineno}"
                    arg = n.args[0]
                    assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), \
                        f"{where}: an AMI action whose name is not a literal"
                    found.setdefault(arg.value, where)
    return found


def manager_conf(key: str) -> set[str]:
    """The classes of ``key =`` in the [edge-ivr] section of docs/asterisk/manager.conf."""
    section = None
    for raw in (REPO / "docs" / "asterisk" / "manager.conf").read_text(encoding="utf-8").splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
        k, sep, v = line.partition("=")
        if section == "edge-ivr" and sep and k.strip() == key:
            return {c.strip() for c in v.split(",") if c.strip()}
    raise AssertionError(f"no {key} = in [edge-ivr]")


def test_the_documented_ami_user_may_send_every_action_the_code_sends() -> None:
    write = manager_conf("write")
    assert write == {"call", "originate", "reporting"}  # least privilege, as documented
    actions = actions_in_code()
    assert {"Originate", "Redirect", "CoreShowChannels", "Getvar", "QueueStatus", "Login"} <= set(actions)
    for action, where in actions.items():
        assert action in ACTION_CLASSES, f"{where}: {action} - look up its class (manager show command {action})"
        needed = ACTION_CLASSES[action]
        assert not needed or needed & write, f"{where}: {action} needs one of {sorted(needed)}, user has {write}"


def test_the_documented_ami_user_reads_the_events_the_code_waits_for() -> None:
    """Queue*/Agent* events are class agent (apps/app_queue.c, its ast_manager_event_blob_create calls),
    OriginateResponse call (main/manager.c), UserEvent user (main/stasis.c); same source as above."""
    from ivr.adapters.ami import QUEUE_EVENTS

    read = manager_conf("read")
    assert read == {"call", "agent", "user"}
    classes = {"UserEvent": "user", "OriginateResponse": "call"}
    for event in QUEUE_EVENTS | {"OriginateResponse"}:
        assert classes.get(event, "agent") in read, event
