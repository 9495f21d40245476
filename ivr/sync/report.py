"""What ``ivr sync --once`` and ``ivr sync status`` print (pure: dicts in, lines out)."""

from __future__ import annotations

from typing import Any


def _n(count: int, word: str, plural: str = "") -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def render_push(central: str, r: dict[str, Any]) -> list[str]:
    """The report of one ``push()`` (``PushReport.as_dict()``)."""
    lines = [f"central {central}"]
    sent = f"sent {_n(r['batches'], 'batch', 'batches')}: {_n(r['events'], 'event')}"
    if r["duplicates"]:
        sent += f" ({r['inserted']} new, {r['duplicates']} already there)"
    lines.append(sent)
    if r["quarantined"]:
        lines.append(f"quarantined {_n(r['quarantined'], 'event')} the center refused as invalid "
                     "(ivr sync status lists them)")
    for g in r["gaps"]:
        lines.append(f"skipped {_n(g['count'], 'event')} over outbox.{g['reason']} (seq {g['from_seq']}-"
                     f"{g['to_seq']}; recorded as sync.gap seq {g['seq']})")
    state = "caught up" if r["caught_up"] else f"{_n(r['backlog'], 'event')} left"
    lines.append(f"acked seq {r['acked_seq']} of {r['head_seq']}: {state}")
    return lines


def render_status(central: str | None, s: dict[str, Any], source: str) -> list[str]:
    """``ivr sync status`` (``ivr.store.outbox.read_status``)."""
    if central is None:
        return [f"no central configured (central.url in {source}): nothing is sent; the event log keeps every "
                f"event (head seq {s['head_seq']})"]
    lines = [f"central       {central}"]
    unsent = f"{s['acked_seq']} of {s['head_seq']}"
    oldest = s["oldest_unsent"]
    if oldest:
        unsent += (f" ({_n(s['backlog'], 'event')} unsent; the oldest, seq {oldest['seq']}, written "
                   f"{oldest['wall_time']}, {s['lag_seconds']:.0f} s ago)")
    else:
        unsent += " (caught up)"
    lines.append(f"acked seq     {unsent}")
    lines.append(f"last attempt  {s['last_attempt_at'] or 'never'}")
    lines.append(f"last success  {s['last_success_at'] or 'never'}")
    if s["last_error"]:
        failing = f"; {_n(s['failures'], 'failure')} since the last success" if s["failures"] else ""
        lines.append(f"last error    {s['last_error']} (at {s['last_error_at']}{failing})")
    lines.append(f"quarantined   {s['quarantined']}")
    for q in s["quarantine"]:
        lines.append(f"  seq {q['seq']:>8}  {q['type']:<24} {q['http_status']}: {q['error']}")
    lines.append(f"gaps          {len(s['gaps'])}" + (f" ({_n(s['skipped'], 'event')} skipped)" if s["gaps"] else ""))
    for g in s["gaps"]:
        lines.append(f"  seq {g['seq']:>8}  skipped seq {g['from_seq']}-{g['to_seq']} ({_n(g['count'], 'event')}, "
                     f"outbox.{g['reason']}) at {g['wall_time']}")
    return lines
