"""The ``ivr`` command: run the daemon, check and simulate flows, draw them, list calls."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ivr import log as ivr_log
from ivr.config import Config, load_config
from ivr.errors import ConfigError, FlowError, Problem
from ivr.flows.model import FlowSet


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    _as_state_owner(config.state_dir)
    return config


def _trying_config(args: argparse.Namespace) -> Config:
    """The config for a command that only looks at flows or tries them (check, graph, simulate, and calls and
    events, which read what simulate recorded). On built-in defaults with no ``./var`` yet, those keep their
    files (prompt cache, simulated calls) in the user's cache folder, ``$XDG_CACHE_HOME/edge-ivr``: trying a
    flow from any folder must not leave a ``var/`` there. Once ``./var`` exists (``ivr run``, ``ivr closed``),
    it is used as before."""
    import dataclasses

    config = _config(args)
    if config.source != "built-in defaults" or config.state_dir.exists():
        return config
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-ivr"
    return dataclasses.replace(config, state_dir=cache)


def _as_state_owner(state_dir: Path) -> None:
    """Run as root on the appliance, become the service's user (the state folder's owner) first: a root-owned
    ``ivr.db-wal`` or ``-shm`` left by an admin's ``ivr calls`` or ``ivr restore`` would stop the daemon, which
    runs as ``ivr``, from writing its log."""
    if os.geteuid() != 0:
        return
    try:
        owner = state_dir.stat()
    except OSError:
        return
    if owner.st_uid != 0:
        os.setgroups([])
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)


def cmd_check(args: argparse.Namespace) -> int:
    from ivr.flowset import load_flowset, summary

    config = _trying_config(args)
    paths = [Path(p) for p in args.paths] or [config.flows_dir]
    notes: list[str] = []
    warnings: list[Problem] = []
    try:
        flowset = asyncio.run(load_flowset(paths, config, render=not args.no_render, notes=notes,
                                           warnings=warnings))
    except FlowError as exc:
        for p in sorted([*exc.problems, *exc.warnings]):
            print(p)
        n, w = len(exc.problems), len(exc.warnings)
        also = f" (and {_plural(w, 'warning')})" if w else ""
        print(f"{_plural(n, 'problem')} found{also}", file=sys.stderr)
        return 1
    if args.speech:
        rated = _rate_speech(args, config, flowset)
        if rated is None:
            return 1
        warnings = [*warnings, *rated[0]]
        notes += rated[1]
    for p in warnings:
        print(p)
    print(summary(flowset) + (f", {_plural(len(warnings), 'warning')}" if warnings else ""))
    for note in notes:
        print(note, file=sys.stderr)
    return 0


def _rate_speech(args: argparse.Namespace, config: Config, flowset: Any) -> tuple[list[Problem], list[str]] | None:
    """``ivr check --speech``: the keyword warnings and the per-keyword lines; None (after saying why) when it
    cannot be run here."""
    from ivr.adapters import speech_check
    from ivr.speech import synth

    if not speech_check.listening(flowset):
        return [], ["speech: no menu listens for keywords; nothing to try"]
    if not config.speech.enabled:
        print("ivr check --speech: speech.enabled is false in the config", file=sys.stderr)
        return None
    if not synth.available():
        print("ivr check --speech: needs espeak-ng and sox on PATH", file=sys.stderr)
        return None
    voices = [v for v in args.voices.split(",") if v.strip()]
    try:
        speeds = [int(s) for s in args.speeds.split(",") if s.strip()]
    except ValueError:
        print(f"ivr check --speech: --speeds {args.speeds!r}: write numbers, e.g. 130,175", file=sys.stderr)
        return None
    try:
        ratings = asyncio.run(speech_check.rate_keywords(flowset, config, voices=voices, speeds=speeds))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"ivr check --speech: {exc}", file=sys.stderr)
        return None
    return speech_check.problems(ratings), speech_check.summary(ratings, voices, speeds)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _resolve_flow(config: Config, spec: str) -> tuple[list[Path], str | None]:
    """FLOW may be a flow name (in flows_dir) or a flow file (its folder is loaded, for sub-flows)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from ivr.flows.loader import load

        loaded = load([path], site_timezone=config.timezone)
        names = list(loaded.flows)
        return [path.parent], (names[0] if names else None)
    return [config.flows_dir], spec


class _Exit(Exception):  # noqa: N818 - control flow, not a fault
    """Leave the command with this exit status (its message is already printed)."""

    def __init__(self, code: int) -> None:
        self.code = code


async def _flow_for(config: Config, spec: str, *, render: bool) -> tuple[FlowSet, str]:
    """Load the flow set holding FLOW, or print why not and exit (1: flow errors, 2: no such flow)."""
    from ivr.flowset import load_flowset

    paths, entry = _resolve_flow(config, spec)
    try:
        flowset = await load_flowset(paths, config, render=render)
    except FlowError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        raise _Exit(1) from exc
    if entry not in flowset.flows:
        print(f"unknown flow '{spec}' (flows: {', '.join(sorted(flowset.flows))})", file=sys.stderr)
        raise _Exit(2)
    assert entry is not None
    return flowset, entry


def _sealer(config: Config) -> Any:
    """The event log's sealer when ``privacy:`` is on (ivr/store/privacy.py), else None."""
    return config.privacy.sealer() if config.privacy is not None else None


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.live:  # the daemon's own state and control socket
        return asyncio.run(_simulate_live(_config(args), args))
    return asyncio.run(_simulate(_trying_config(args), args))


async def _simulate(config: Config, args: argparse.Namespace) -> int:
    from ivr.adapters.recordings import RecordingFiles
    from ivr.adapters.simulator import (
        NarratingRecorder,
        SimulatedCall,
        StatedWaits,
        parse_headers,
        parse_waits,
        scratch_desk,
    )
    from ivr.callbacks.dialer import build_policy
    from ivr.callbacks.policy import CallbackPolicy
    from ivr.engine.runner import run_call
    from ivr.flows.model import Record
    from ivr.store.eventlog import CallRecorder, EventLog, LogSwitches, read_calls

    try:
        waits = StatedWaits(parse_waits(args.wait))
        headers = parse_headers(args.header)
        _check_inputs(args.input, args.at)
    except ValueError as exc:
        print(f"ivr simulate: {exc}", file=sys.stderr)
        return 2
    # The site's own callback rules when it has them (numbers, caps, calling windows), else the defaults.
    cb = config.callbacks
    policy = build_policy(cb) if cb is not None else CallbackPolicy(site_zone=config.timezone)
    region = args.region or (cb.region if cb is not None else "US")
    flowset, entry = await _flow_for(config, args.flow, render=True)
    flow = flowset.flows[entry]
    if (not config.speech.enabled and any(t.strip().startswith("wav:") for t in args.input)
            and not any(isinstance(n.action, Record) for f in flowset.flows.values() for n in f.nodes.values())):
        print(f"ivr simulate: wav: input needs speech recognition (or a record node), but speech.enabled is false "
              f"in {config.source}", file=sys.stderr)
        return 2
    dialed = args.dialed or next((n for n in flow.numbers if "*" not in n and "X" not in n), "")
    at = _parse_at(args.at, flow.timezone) if args.at else None
    now = (lambda: at) if at else (lambda: datetime.now(UTC))
    out: list[str] = []

    reader_gone = False

    def emit(line: str) -> None:
        """A reader that went away (``| head -1``) must not turn the call into an error: it runs on unseen."""
        nonlocal reader_gone
        out.append(line)
        if args.json or reader_gone:
            return
        try:
            print(line, flush=True)
        except BrokenPipeError:
            reader_gone = True
            _stdout_gone()

    lookups: Any
    if args.http_fixture:
        from ivr.adapters.lookup import FixtureError, FixtureLookups

        try:
            lookups = FixtureLookups.from_file(Path(args.http_fixture))
        except FixtureError as exc:
            print(f"ivr simulate: --http-fixture {exc}", file=sys.stderr)
            return 2
    else:  # the config's real back ends, as a call would reach them
        from ivr.adapters.lookup import HttpLookups

        lookups = HttpLookups(config.lookups)
    speech = _SimulatorSpeech(config)
    call = SimulatedCall(str(uuid.uuid4()), args.caller, dialed, args.input, interactive=args.interactive,
                         emit=emit, speech=speech.get if config.speech.enabled else None,
                         speech_verify=config.speech.verify, headers=headers)
    emit(f"call {call.call_id} from {call.caller} to {dialed or '(no number)'}: flow {entry} "
         f"version {flowset.version}" + (f" at {at.isoformat()}" if at else ""))
    # Recorded in its own log: the site's log (and every KPI read from it) holds only real calls (and --live
    # ones, which the daemon runs); the emergency switches are still the site's.
    db_path = config.simulate_db_path
    try:
        async with (await EventLog.open(db_path, config.site_id, config.timezone,
                                        sealer=_sealer(config)) as events,
                    scratch_desk(waits, site=config.site_id, policy=policy, region=region, now=now) as desk):
            rec = NarratingRecorder(CallRecorder(events, call.call_id), emit)
            outcome = await run_call(call, flowset, rec, now=now, switches=LogSwitches(config.db_path),
                                     entry=entry, max_call_seconds=config.max_call_seconds, callbacks=desk,
                                     recordings=RecordingFiles(config.state_dir / "simulate-recordings",
                                                               config.recording_retention_days),
                                     lookups=lookups)
    finally:
        await speech.aclose()
        if hasattr(lookups, "aclose"):
            await lookups.aclose()

    rows = [r for r in await read_calls(db_path, 50) if r["call_id"] == call.call_id]
    path = rows[0]["path"] if rows else []
    if args.json:
        print(json.dumps({"call_id": call.call_id, "flow": entry, "version": flowset.version,
                          "outcome": outcome.kind, "detail": outcome.detail, "path": path,
                          "variables": rows[0]["variables"] if rows else {}, "transcript": out}, indent=2))
    else:
        print(f"outcome: {outcome.kind}" + (f" ({outcome.detail})" if outcome.detail else ""))
        print(f"path: {' > '.join(path)}")
    return 1 if reader_gone else 0


def _check_inputs(tokens: list[str], at: str | None) -> None:
    """Every scripted input and ``--at`` before the call starts: a typo is the user's, so it is refused (exit 2)
    with nothing recorded, rather than becoming a call that went somewhere else."""
    from ivr.adapters.simulator import AudioInputError, SpokenAudio, parse_token, read_audio

    if at is not None:
        try:
            datetime.fromisoformat(at)
        except ValueError:
            raise ValueError(f"--at {at!r} is not a local date and time: use e.g. 2026-12-01T10:00") from None
    for token in tokens:
        parsed = parse_token(token)
        if not isinstance(parsed, SpokenAudio):
            continue
        # speech off is not refused here: a wav: may be a message for a record node; where a menu listens,
        # the simulator says that speech is off
        try:
            read_audio(parsed.path)
        except AudioInputError as exc:
            raise ValueError(f"{token}: {exc}") from None


def _stdout_gone() -> None:
    """The reader closed our stdout: point it at devnull so nothing more (not even the flush at exit) fails on
    it. This is the recipe of Python's docs (library/signal.html, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a stream without a file descriptor (in-process tests): replace it instead
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives until the process ends


class _SimulatorSpeech:
    """The speech model for ``wav:`` inputs, loaded at the first one (3 s, 500 MB), never for keys."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.service: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        async with self._lock:
            if self.service is None:
                from ivr.adapters.speech import SpeechService

                service = SpeechService.from_config(self.config.speech, self.config.prompt_cache.parent)
                await service.start()
                self.service = service
            return self.service

    async def aclose(self) -> None:
        if self.service is not None:
            await self.service.aclose()
            self.service = None


#: simulator options a call inside the daemon cannot honour, and why (``ivr simulate --live`` refuses them)
_NOT_LIVE = {
    "at": "--at cannot be used with --live: the daemon runs on the real clock (and files real callbacks)",
    "http_fixture": "--http-fixture cannot be used with --live: the daemon's calls use its real look-up back ends",
    "json": "--json cannot be used with --live: the daemon narrates the call line by line",
}


async def _simulate_live(config: Config, args: argparse.Namespace) -> int:
    """The call runs in the daemon on its live flows; --wait, --region and --header go with it (a callback
    accepted there is filed in the daemon's real callback queue and will be dialled)."""
    from ivr.adapters.simulator import parse_headers, parse_waits

    for option, why in _NOT_LIVE.items():
        if getattr(args, option):
            print(why, file=sys.stderr)
            return 2
    if any(t.strip().startswith("wav:") for t in args.input):
        print("wav: inputs cannot be used with --live: they are heard by this process's recogniser", file=sys.stderr)
        return 2
    try:
        waits, headers = parse_waits(args.wait), parse_headers(args.header)
        _check_inputs(args.input, None)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        reader, writer = await asyncio.open_unix_connection(str(config.control_socket))
    except OSError as exc:
        print(f"no daemon at {config.control_socket}: {exc}", file=sys.stderr)
        return 1
    req = {"cmd": "simulate", "flow": args.flow, "caller": args.caller, "dialed": args.dialed or "",
           "inputs": args.input, "waits": waits, "region": args.region or "", "headers": headers}
    writer.write(json.dumps(req).encode() + b"\n")
    await writer.drain()
    result: dict[str, Any] = {}
    ended = False  # our inputs are over (sent EOF): the daemon's next questions hear silence from it
    while True:
        line = await reader.readline()
        if not line:
            break
        msg = json.loads(line)
        if "out" in msg:
            print(msg["out"], flush=True)
        elif msg.get("need_input") and not ended:
            token = (await asyncio.to_thread(_read_line)) if args.interactive else None
            writer.write(json.dumps({"input": token} if token is not None else {}).encode() + b"\n")
            if token is None:
                writer.write_eof()
                ended = True
            await writer.drain()
        elif "error" in msg:
            print(msg["error"], file=sys.stderr)
            return 2 if msg.get("usage") else 1
        elif "outcome" in msg:
            result = msg
            print(f"outcome: {msg['outcome']}" + (f" ({msg['detail']})" if msg["detail"] else ""))
            print(f"version: {msg['version']}")
    writer.close()
    return 0 if result else 1


def _read_line() -> str | None:
    try:
        return input("  > ")
    except EOFError:
        return None


def _parse_at(text: str, tz: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(tz))


def cmd_graph(args: argparse.Namespace) -> int:
    from ivr.flows import graph

    config = _trying_config(args)
    flowset, entry = asyncio.run(_flow_for(config, args.flow, render=False))
    flow = flowset.flows[entry]
    only: dict[str, set[str]] | None = None
    if args.node is not None:
        if args.node not in flow.nodes:
            import difflib

            close = difflib.get_close_matches(args.node, list(flow.nodes), n=1)
            print(f"ivr graph: flow {entry} has no node '{args.node}'"
                  + (f" (did you mean '{close[0]}'?)" if close else ""), file=sys.stderr)
            return 2
        if args.depth < 0:
            print("ivr graph: --depth must be 0 or more", file=sys.stderr)
            return 2
        names, only = [entry], {entry: graph.neighbourhood(flow, args.node, args.depth)}
    else:
        names = [entry] if args.no_subflows else graph.flows_to_draw(flowset, entry)
    output = Path(args.output)
    count = graph.node_count(flowset, names, only)
    if output.suffix.lower() not in (".dot", ".gv", "") and count > graph.MAX_NODES:
        subflows = [n for n in names if n != entry]
        print(f"ivr graph: {count} nodes to draw, more than Graphviz lays out in time ({graph.MAX_NODES}): draw a "
              "part with --node NODE [--depth N]"
              + (f", or one flow at a time with --no-subflows (sub-flows: {', '.join(subflows)})" if subflows else "")
              + ", or write .dot", file=sys.stderr)
        return 1
    dot = graph.to_dot(flowset, names, only, focus=f"{entry}:{args.node}" if args.node else None)
    try:
        graph.render(dot, output)
    except (RuntimeError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {output}")
    return 0


def _log_path(config: Config, args: argparse.Namespace) -> Path:
    """The site's log, or with ``--simulated`` the one ``ivr simulate`` records in."""
    return config.simulate_db_path if getattr(args, "simulated", False) else config.db_path


def cmd_calls(args: argparse.Namespace) -> int:
    from ivr.store.eventlog import read_calls

    config = _trying_config(args)
    db_path = _log_path(config, args)
    if not db_path.exists():
        rows: list[dict[str, Any]] = []
    else:
        rows = asyncio.run(read_calls(db_path, args.last))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['started_at'][:19]}  {r['call_id'][:8]}  {r['caller']} → {r['dialed'] or '-'}  "
              f"{r['flow']}@{r['flow_version']}  {r['outcome'] or 'in progress'}"
              + (f" ({r['outcome_detail']})" if r["outcome_detail"] else ""))
        print(f"    {' > '.join(r['path'])}")
    if not rows:
        print("no calls recorded yet" + ("" if args.simulated else " (simulated calls: ivr calls --simulated)"))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    """Streams off the cursor, one line per event (``--json``: NDJSON, one object per line), so a consumer can
    follow the log from its last ``seq`` without the whole log in memory on either side."""
    from ivr.store.eventlog import iter_events

    config = _trying_config(args)
    db_path = _log_path(config, args)
    call_id = args.call
    if call_id is not None:
        found = _calls_with_prefix(db_path, call_id) if db_path.exists() else []
        if not found:
            print(f"ivr events: no call {call_id!r} in {db_path}", file=sys.stderr)
            return 1
        if len(found) > 1:
            shown = ", ".join(found[:_CANDIDATES]) + (", …" if len(found) > _CANDIDATES else "")
            print(f"ivr events: {call_id!r} names more than one call ({shown}); give more of the id", file=sys.stderr)
            return 1
        call_id = found[0]
    if not db_path.exists():
        return 0
    out = sys.stdout
    for e in iter_events(db_path, call_id=call_id, after_seq=args.after_seq, types=args.type):
        if args.json:
            out.write(e.to_json() + "\n")
        else:
            out.write(f"{e.seq:>6} {e.wall_time} {e.type:<16} {json.dumps(e.data)}\n")
    out.flush()
    return 0


_CANDIDATES = 10
"""Ids listed when a prefix names more than one call."""


def _calls_with_prefix(db_path: Path, prefix: str) -> list[str]:
    """The call ids starting with ``prefix`` (``ivr calls`` prints 8 characters), as a range over the
    ``events_by_call`` index: a busy log is not scanned."""
    import sqlite3

    db = sqlite3.connect(f"{db_path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        rows = db.execute("SELECT DISTINCT call_id FROM events WHERE call_id >= ? AND call_id < ? ORDER BY call_id"
                          " LIMIT ?", (prefix, prefix + "\U0010ffff", _CANDIDATES + 1)).fetchall()
    finally:
        db.close()
    return [str(r[0]) for r in rows]


def cmd_kpi(args: argparse.Namespace) -> int:
    """Contact-center KPIs from the site's own event log (docs/kpi.md), figures in the site's zone. Read-only:
    SQLite WAL lets it run beside the daemon; simulations are in another log and never counted."""
    from datetime import UTC, datetime

    from ivr.kpi.report import BOX_GROUP_BY, build, parse_when
    from ivr.store.eventlog import iter_events

    config = _config(args)
    now = datetime.now(UTC)
    zone = config.timezone
    try:
        since = parse_when(args.since, zone=zone, now=now)
        until = parse_when(args.until, zone=zone, now=now) if args.until else None
    except ValueError as exc:
        print(f"ivr kpi: {exc}", file=sys.stderr)
        return 2
    if until is not None and until <= since:
        print(f"ivr kpi: --until {args.until} is not after --since {args.since}", file=sys.stderr)
        return 2
    if args.by is not None and args.by not in BOX_GROUP_BY:  # argparse choices say so already; kept for callers
        print(f"ivr kpi: --by must be one of {', '.join(BOX_GROUP_BY)}", file=sys.stderr)
        return 2
    region = config.callbacks.region if config.callbacks is not None else "US"
    # as stored: the KPIs read no sealed field (the caller is its pseudonym, caller_ref), as at the center
    events = iter_events(config.db_path, opened=False) if config.db_path.exists() else iter(())
    report = build(events, zone=zone, since=since, until=until, by=args.by, now=now, region=region)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.render())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from ivr.daemon import run_daemon

    config = _config(args)
    if args.sip_port:
        config = dataclasses.replace(config, sip=dataclasses.replace(config.sip, port=args.sip_port))
    ivr_log.setup(config.log_level, config.log_format)
    # uvloop when installed: a cheaper loop under 50 RTP packets/s per call (bench/README.md, load);
    # IVR_LOOP=asyncio keeps the standard one (for comparison, or if uvloop misbehaves on a platform).
    if os.environ.get("IVR_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return int(uvloop.run(run_daemon(config)))
    return asyncio.run(run_daemon(config))


def cmd_control(args: argparse.Namespace) -> int:
    from ivr.daemon import control

    config = _config(args)
    try:
        answer = asyncio.run(control(config.control_socket, {"cmd": args.command}))
    except OSError as exc:
        print(f"no daemon at {config.control_socket}: {exc}", file=sys.stderr)
        return 1
    problems = answer.pop("problems", None) or []
    print(json.dumps(answer, indent=2))
    for p in problems:  # as `ivr check` prints them
        print(p, file=sys.stderr)
    if problems:
        print(f"reload rejected: {len(problems)} problem{'s' if len(problems) != 1 else ''} found; still serving "
              f"version {answer.get('version')}", file=sys.stderr)
    return 0 if answer.get("ok", True) and "error" not in answer else 1


def cmd_health(args: argparse.Namespace) -> int:
    """``ivr health``: the daemon answers on its control socket and its SIP address answers an OPTIONS."""
    from ivr.adapters.health import options_probe
    from ivr.daemon import control

    config = _config(args)
    try:
        status = asyncio.run(asyncio.wait_for(control(config.control_socket, {"cmd": "status"}), args.timeout))
    except (OSError, TimeoutError) as exc:
        print(f"unhealthy: no daemon answers at {config.control_socket} ({exc or 'timed out'})")
        return 1
    if not status.get("version"):
        print(f"unhealthy: the daemon has no flows loaded ({status.get('error', 'no version')})")
        return 1
    if not status.get("sip"):
        print(f"healthy: flows {status['version']}; no SIP in this daemon")
        return 0
    host, _, port = str(status["sip"]).rpartition(":")
    probe = options_probe(host.strip("[]"), int(port), timeout=args.timeout)
    if probe.status is None:
        print(f"unhealthy: SIP {status['sip']} did not answer an OPTIONS: {probe.reason}")
        return 1
    print(f"healthy: flows {status['version']}, {status['calls_in_progress']} calls; SIP {status['sip']} answered "
          f"OPTIONS {probe.status} {probe.reason} in {probe.seconds * 1000:.0f} ms")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """``ivr sync --once``: this process pushes now, taking turns with the daemon's relay batch by batch under
    ``STATE_DIR/sync.lock`` (ivr/sync/relay.py says why a lock); ``ivr sync status``: the outbox, read only."""
    from ivr.store.outbox import read_status
    from ivr.sync.report import render_push, render_status

    config = _config(args)
    central = config.central.url if config.central is not None else None
    if args.action == "status":
        status = read_status(config.db_path, now=datetime.now(UTC))
        if args.json:
            print(json.dumps({"central": central, **status}, indent=2))
        else:
            print("\n".join(render_status(central, status, config.source)))
        return 0
    if not args.once:
        print("ivr sync: --once pushes now; ivr sync status shows the outbox", file=sys.stderr)
        return 2
    if config.central is None:
        print(f"ivr sync: no central configured (central.url in {config.source}); nothing is sent, the event log "
              "keeps every event", file=sys.stderr)
        return 1
    report = asyncio.run(_sync_once(config)) if config.db_path.exists() else None
    if report is None:
        print(f"nothing recorded yet ({config.db_path} does not exist)")
        return 0
    if args.json:
        print(json.dumps({"central": central, **report}, indent=2))
    else:
        print("\n".join(render_push(central or "", report)))
    if report["error"] is not None:
        print(f"ivr sync: not delivered: {report['error']}", file=sys.stderr)
        return 1
    return 0


async def _sync_once(config: Config) -> dict[str, Any]:
    import logging

    from ivr.store.eventlog import EventLog
    from ivr.sync.relay import open_relay

    # the report says what the relay would log (the daemon's journal gets the lines; a terminal gets the report)
    quiet = logging.getLogger("ivr.sync.once")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    assert config.central is not None
    async with await EventLog.open(config.db_path, config.site_id, config.timezone,
                                   sealer=_sealer(config)) as events:
        relay = await open_relay(config.central, events, db_path=config.db_path, lock_path=config.sync_lock,
                                 logger=quiet)
        try:
            report = await relay.push()
        finally:
            await relay.close()
    return report.as_dict()


def cmd_closed(args: argparse.Namespace) -> int:
    from ivr.store.eventlog import EventLog

    config = _config(args)
    known = _schedules(config)
    if args.schedule not in known:
        import difflib

        close = difflib.get_close_matches(args.schedule, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"ivr closed: no schedule '{args.schedule}' in {config.flows_dir}{hint}; schedules: "
              f"{', '.join(sorted(known)) or 'none'}", file=sys.stderr)
        return 1

    async def go() -> None:
        async with await EventLog.open(config.db_path, config.site_id, sealer=_sealer(config)) as events:
            await events.set_switch(args.schedule, args.state == "on", args.reason)

    asyncio.run(go())
    state = "CLOSED (emergency)" if args.state == "on" else "back to its normal hours"
    print(f"schedule '{args.schedule}' is {state}")
    return 0


def _schedules(config: Config) -> list[str]:
    """The schedules the flows define, read from the files alone (no prompt is rendered): a switch for any other
    name would be recorded and change nothing."""
    from ivr.flows.loader import load

    return list(load([config.flows_dir], site_timezone=config.timezone).schedules)


def cmd_recordings(args: argparse.Namespace) -> int:
    """``ivr recordings``: the messages record nodes kept (list, one's file, prune past the retention)."""
    from ivr.adapters.recordings import RecordingFiles

    config = _config(args)
    files = RecordingFiles(config.state_dir / "simulate-recordings" if args.simulated else config.recordings_dir,
                           config.recording_retention_days)
    if args.action == "prune":
        print(f"erased {files.prune()} recordings older than {config.recording_retention_days:g} days")
        return 0
    if args.action == "path":
        found = files.find(args.id or "")
        if found is None:
            print(f"ivr recordings: no recording {args.id!r}", file=sys.stderr)
            return 1
        print(found)
        return 0
    items = list(files.all())
    if args.json:
        print(json.dumps([{"id": r.id, "file": str(r.path), "seconds": round(r.seconds, 2),
                           "saved_at": r.saved_at.isoformat()} for r in items]))
    else:
        for r in items:
            print(f"{r.saved_at.astimezone().strftime('%Y-%m-%d %H:%M')}  {r.seconds:6.1f} s  {r.id}  {r.path}")
        print(f"{len(items)} recordings in {files.root}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """``ivr backup``: a consistent copy of the state while the daemon runs (ivr/store/backup.py says how)."""
    from ivr.store.backup import BackupError, backup, backup_name, prune, summarize

    config = _config(args)
    now = datetime.now(UTC)
    to_folder = not args.to or args.to.endswith("/") or Path(args.to).is_dir()
    folder = Path(args.to) if args.to else config.state_dir / "backups"
    dest = folder / backup_name(config.site_id, now) if to_folder else Path(args.to)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        backup(config.db_path, dest)
        summary = summarize(dest)
    except (BackupError, OSError) as exc:
        print(f"ivr backup: {exc}", file=sys.stderr)
        return 1
    gone = prune(dest.parent, config.site_id, args.keep) if args.keep else []
    print(f"backed up {config.db_path} to {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    for line in summary.lines():
        print(f"  {line}")
    for path in gone:
        print(f"removed the older {path.name}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """``ivr restore FILE``: the backup in place of the state, with the daemon stopped."""
    from ivr.store.backup import BackupError, daemon_running, restore
    from ivr.store.eventlog import EventLog

    config = _config(args)
    if daemon_running(config.control_socket):
        print(f"ivr restore: the daemon is running ({config.control_socket} answers): stop it first "
              "(systemctl stop ivr), then restore", file=sys.stderr)
        return 1
    try:
        summary, moved = restore(Path(args.file), config.db_path, site=config.site_id, force=args.force,
                                 now=datetime.now(UTC))
    except BackupError as exc:
        print(f"ivr restore: {exc}", file=sys.stderr)
        return 1

    async def record() -> None:  # opening it also brings an older backup's schema up to date
        async with await EventLog.open(config.db_path, config.site_id, config.timezone,
                                   sealer=_sealer(config)) as events:
            await events.append("state.restored", None, source=str(args.file), backup_last_seq=summary.last_seq,
                                backup_last_event_at=summary.last_event_at, replaced=str(moved) if moved else None)

    asyncio.run(record())
    print(f"restored {args.file} into {config.db_path}")
    for line in summary.lines():
        print(f"  {line}")
    if moved is not None:
        print(f"the database it replaced is kept as {moved}")
    print("start the daemon (systemctl start ivr): it reconciles callbacks in flight before dialling")
    return 0


def cmd_pbx_prompts(args: argparse.Namespace) -> int:
    """The prompts docs/asterisk's sample dialplan plays, rendered into the PBX's sounds folder."""
    from ivr.adapters.pbx_prompts import render_pbx_prompts

    config = _config(args)
    try:
        paths = asyncio.run(render_pbx_prompts(Path(args.dir), voice=args.voice,
                                               target_rms_db=config.target_rms_db))
    except (RuntimeError, OSError) as exc:
        print(f"cannot render the PBX prompts: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


def _callback_policy(config: Config) -> Any:
    from ivr.callbacks.dialer import build_policy
    from ivr.callbacks.policy import CallbackPolicy

    return build_policy(config.callbacks) if config.callbacks is not None else CallbackPolicy(site_zone=config.timezone)


def cmd_callbacks(args: argparse.Namespace) -> int:
    """Over the callback store directly: SQLite WAL lets this run beside the daemon, and every change is a
    transaction that checks the state machine (a callback being dialled cannot be cancelled under the dialer)."""
    from datetime import timedelta

    from ivr.store.callbacks import CallbackNotFound, CallbackStore, IllegalTransition
    from ivr.store.eventlog import EventLog, parse_utc_text

    config = _config(args)
    if args.action == "report":
        return _callbacks_report(config, args)
    if not config.db_path.exists():
        if args.action == "list":
            print("[]" if args.json else "no callbacks yet")
            return 0
        print(f"no callback {args.id}: no database at {config.db_path}", file=sys.stderr)
        return 1

    async def find(store: CallbackStore, key: str) -> str:
        """A full id, or an unambiguous prefix of one (as `ivr callbacks list` prints them)."""
        async with store.log.db.execute("SELECT id FROM callback_requests WHERE id LIKE ? || '%' LIMIT 3",
                                        (key,)) as cur:
            found = [r[0] for r in await cur.fetchall()]
        if len(found) == 1:
            return str(found[0])
        if not found:
            raise CallbackNotFound(key)
        raise _Ambiguous(key)

    async def go() -> int:
        now = datetime.now(UTC)
        async with await EventLog.open(config.db_path, config.site_id, sealer=_sealer(config)) as events:
            store = CallbackStore(events)
            if args.action == "list":
                sql = "SELECT id FROM callback_requests" + ("" if args.all else
                                                              " WHERE state NOT IN ('done','expired','cancelled')")
                async with events.db.execute(sql + " ORDER BY arrival_at, id") as cur:
                    ids = [r[0] for r in await cur.fetchall()]
                reqs = [await store.get(i) for i in ids]
                if args.json:
                    print(json.dumps([r.__dict__ for r in reqs], indent=2))
                    return 0
                for r in reqs:
                    print(f"{r.id}  {r.state:<9} {r.queue:<10} {r.number:<16} arrived {r.arrival_at[:19]}"
                          f"  attempts {r.attempts}" + (f"  next {r.next_attempt_at[:19]}" if r.next_attempt_at
                                                        and r.state in ("requested", "retry") else "")
                          + (f"  ({r.reason})" if r.reason else ""))
                if not reqs:
                    print("no callbacks" + ("" if args.all else " waiting (--all shows finished ones)"))
                return 0
            rid = await find(store, args.id)
            if args.action == "show":
                r = await store.get(rid)
                atts = await store.attempts(rid)
                if args.json:
                    print(json.dumps({**r.__dict__, "attempts_detail": [a.__dict__ for a in atts]}, indent=2))
                    return 0
                for k, v in r.__dict__.items():
                    print(f"{k:>16}: {v}")
                for a in atts:
                    print(f"  attempt {a.n} {a.started_at[:19]} -> {(a.ended_at or '')[:19] or 'in flight'}"
                          f"  {a.outcome or 'dialing'}  {a.channel} {a.sip_call_id or a.action_id}  {a.detail}")
                return 0
            if args.action == "cancel":
                await store.cancel(rid, now, args.reason or "cancelled by an operator")
                print(f"callback {rid} cancelled")
                return 0
            # retry: dial at the next chance, but never inside the retry interval after the last attempt
            policy = _callback_policy(config)
            at = now
            atts = await store.attempts(rid)
            if atts and atts[-1].ended_at and policy.retry.intervals:
                ended = parse_utc_text(atts[-1].ended_at)
                at = max(now, ended + timedelta(seconds=policy.retry.intervals[0]))
            await store.reschedule(rid, at, now, "retry asked by an operator")
            print(f"callback {rid} will be dialled from {at.isoformat(timespec='seconds')} (calling windows apply)")
            return 0

    try:
        return asyncio.run(go())
    except CallbackNotFound as exc:
        print(f"no callback {exc.request_id}", file=sys.stderr)
        return 1
    except _Ambiguous as exc:
        print(f"'{exc.key}' names more than one callback; give more of the id", file=sys.stderr)
        return 1
    except IllegalTransition as exc:
        what = {"cancel": "only a callback waiting to be dialled (requested, retry) can be cancelled",
                "retry": "only a callback waiting to be dialled (requested, retry) can be retried"}[args.action]
        print(f"callback {exc.request_id} is {exc.state}: {what}", file=sys.stderr)
        return 1


def _callbacks_report(config: Config, args: argparse.Namespace) -> int:
    """Requests taken in the period (by ``requested_at``), their final states and their ``callback.kept``
    records, aggregated by ``ivr.callbacks.report`` (pure)."""
    from datetime import timedelta

    from ivr.callbacks.report import build_report, render
    from ivr.store.eventlog import EventLog, utc_now_text

    now = datetime.now(UTC)
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            print(f"--since {args.since!r} is not an ISO 8601 time (e.g. 2026-11-20 or 2026-11-20T08:00Z)",
                  file=sys.stderr)
            return 2
        if since.tzinfo is None:
            since = since.replace(tzinfo=ZoneInfo(config.timezone))  # a local date means the site's day
    else:
        if args.days <= 0:
            print("--days must be a positive number", file=sys.stderr)
            return 2
        since = now - timedelta(days=args.days)

    async def rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if not config.db_path.exists():
            return [], []
        async with await EventLog.open(config.db_path, config.site_id, sealer=_sealer(config)) as events:
            sql = "SELECT id, state FROM callback_requests WHERE site=? AND requested_at>=?"
            params: tuple[Any, ...] = (config.site_id, utc_now_text(since))
            if args.queue:
                sql += " AND queue=?"
                params += (args.queue,)
            async with events.db.execute(sql, params) as cur:
                reqs = [{"id": r[0], "state": r[1]} for r in await cur.fetchall()]
            async with events.db.execute("SELECT data FROM events WHERE type='callback.kept' AND site=?"
                                         " ORDER BY seq", (config.site_id,)) as cur:
                kept = [json.loads(r[0]) for r in await cur.fetchall()]
        return reqs, kept

    reqs, kept = asyncio.run(rows())
    report = build_report(reqs, kept)
    if args.json:
        print(json.dumps({"since": since.isoformat(timespec="seconds"), "queue": args.queue or None,
                          **report.as_dict()}, indent=2))
        return 0
    print(render(report, f"callbacks since {since.isoformat(timespec='seconds')}"
                         + (f" in queue {args.queue}" if args.queue else "")))
    return 0


def cmd_privacy(args: argparse.Namespace) -> int:
    """``ivr privacy erase --caller NUMBER`` (a data-subject request) and ``--expired`` (retention, now): the keys
    and rows erased, printed and recorded as ``privacy.erased`` (without the number). Runs beside the daemon
    (WAL); a callback of the caller still waiting is cancelled first, one being dialled is kept and named."""
    from ivr.adapters.recordings import RecordingFiles
    from ivr.store.callbacks import CallbackStore, IllegalTransition
    from ivr.store.erasure import erase_caller, erase_expired
    from ivr.store.eventlog import EventLog
    from ivr.store.privacy import normalise

    config = _config(args)
    region = config.privacy.region if config.privacy is not None else (
        config.callbacks.region if config.callbacks is not None else "US")
    if args.expired and (config.privacy is None or config.privacy.retention_days is None):
        print("ivr privacy erase --expired: no privacy.retention_days in " + config.source, file=sys.stderr)
        return 2
    if not config.db_path.exists():
        print(f"nothing to erase: no database at {config.db_path}")
        return 0

    async def go() -> int:
        now = datetime.now(UTC)
        async with await EventLog.open(config.db_path, config.site_id, config.timezone,
                                       sealer=_sealer(config)) as events:
            if args.expired:
                assert config.privacy is not None and config.privacy.retention_days is not None
                done = await erase_expired(events, config.privacy.retention_days, now)
            else:
                store = CallbackStore(events)
                e164 = normalise(args.caller, region)
                async with events.db.execute("SELECT id, number, consent_number FROM callback_requests WHERE state"
                                             " IN ('requested','retry','no-answer','busy')") as cur:
                    waiting = [str(r[0]) for r in await cur.fetchall()
                               if e164 in (normalise(str(r[1]), region), normalise(str(r[2]), region))]
                cancelled = []
                for rid in waiting:
                    try:
                        await store.cancel(rid, now, "personal data erased on request")
                        cancelled.append(rid)
                    except IllegalTransition:  # began dialling meanwhile: kept, and reported
                        pass
                done = await erase_caller(events, args.caller, region, now)
                if cancelled:
                    print(f"cancelled {len(cancelled)} waiting callback(s): {', '.join(cancelled)}")
            done.recordings = RecordingFiles(config.recordings_dir).erase(done.recording_ids)
        if args.json:
            print(json.dumps(done.as_dict(), indent=2))
        else:
            what = "retention" if args.expired else "the caller"
            print(f"erased for {what}: {done.keys} key(s) (the sealed fields of their events), {done.calls} call"
                  f" record(s), {done.callbacks} finished callback(s), {done.recordings} recorded message(s)")
            if done.kept_callbacks:
                print(f"kept {len(done.kept_callbacks)} callback(s) being dialled now: "
                      f"{', '.join(done.kept_callbacks)} (run this again once they are over)")
            if config.privacy is None:
                print("note: privacy is off in " + config.source + ": events were written in clear and keep the"
                      " number (add a privacy: section so new calls can be erased)")
            if not done.checkpointed:
                print("note: a reader kept the WAL from being truncated now; the next checkpoint removes the old pages")
        return 0

    return asyncio.run(go())


class _Ambiguous(Exception):  # noqa: N818 - a user's input, not a fault
    def __init__(self, key: str) -> None:
        self.key = key


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ivr", description="edge-ivr: IVR and callback appliance")
    p.add_argument("--config", help="config file (default: $IVR_CONFIG, /etc/ivr/ivr.yaml, built-in)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("run", help="run the appliance daemon")
    s.add_argument("--sip-port", type=int, help="override the SIP listen port (tests)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="validate config and flows (file:line:column errors)")
    s.add_argument("paths", nargs="*", help="flow files or folders (default: flows_dir)")
    s.add_argument("--no-render", action="store_true", help="skip rendering prompt audio")
    s.add_argument("--speech", action="store_true",
                   help="also try every speech keyword: spoken by espeak-ng voices and decoded against its menu's "
                        "grammar; warns at keywords rarely recognised or confused with another (a minute or two)")
    s.add_argument("--voices", default=",".join(("ko", "ko+f2", "ko+m3", "ko+f4", "ko+klatt")), metavar="V,V",
                   help="espeak-ng voices for --speech (default: %(default)s)")
    s.add_argument("--speeds", default="130,175,210", metavar="N,N", help="words per minute for --speech "
                   "(default: %(default)s)")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("simulate", help="walk a flow as a caller, without a phone")
    s.add_argument("flow", help="flow name, or a flow file")
    s.add_argument("--input", "-i", action="append", default=[],
                   help="scripted input: keys (1, 5551234#), say:WORDS, wav:FILE (spoken, through the real "
                        "recogniser), silence, hangup; repeatable")
    s.add_argument("--caller", default="+15555550100", help="the caller's number (default +15555550100)")
    s.add_argument("--dialed", help="dialed number (default: the flow's first number)")
    s.add_argument("--at", help="pretend it is this local time, e.g. 2026-12-25T10:00")
    s.add_argument("--interactive", action="store_true", help="read further input from the terminal")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--live", action="store_true", help="run inside the running daemon, on its live flows")
    s.add_argument("--wait", action="append", default=[], metavar="QUEUE=SECONDS",
                   help="pretend QUEUE's estimated wait is SECONDS, to try the callback offer (requests go to a "
                        "scratch store, never the real callback queue); without it no offer is made; repeatable")
    s.add_argument("--region", help="the region callback numbers are read in (ISO 3166; default: "
                                    "callbacks.region from the config, else US)")
    s.add_argument("--header", action="append", default=[], metavar="X-NAME=VALUE",
                   help="an X- header the call's INVITE carries, as the PBX sends it (flows see "
                        "X-IVR-Queue as ${sip_x_ivr_queue}); repeatable")
    s.add_argument("--http-fixture", metavar="FILE",
                   help="answer the flow's http look-ups from FILE (YAML or JSON: a list of {method, url, status, "
                        "json} or {url, outcome: timeout}) instead of the config's back ends (docs/flows.md)")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("graph", help="draw a flow (SVG, PNG or DOT by the file's extension)")
    s.add_argument("flow", help="flow name, or a flow file")
    s.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the drawing: .svg, .png, .pdf (through Graphviz) or .dot (text, any size)")
    s.add_argument("--node", metavar="NODE", help="draw only this node of FLOW and its neighbourhood (big flows)")
    s.add_argument("--depth", type=int, default=2, metavar="N",
                   help="with --node: how many steps away, either way, to draw (default 2)")
    s.add_argument("--no-subflows", action="store_true",
                   help="draw FLOW alone, not the sub-flows it calls (give a sub-flow's name to draw that one)")
    s.set_defaults(func=cmd_graph)

    s = sub.add_parser("calls", help="list recorded calls with their path and outcome")
    s.add_argument("--last", type=int, default=20, metavar="N", help="the N most recent calls (default 20)")
    s.add_argument("--json", action="store_true", help="one JSON array of the calls, with variables")
    s.add_argument("--simulated", action="store_true",
                   help="the calls of ivr simulate (recorded apart from the site's, in STATE_DIR/simulate.db)")
    s.set_defaults(func=cmd_calls)

    s = sub.add_parser("events", help="print the event log (optionally of one call)")
    s.add_argument("--call", metavar="ID", help="only this call's events: its id or a unique prefix (the 8 "
                                               "characters ivr calls prints)")
    s.add_argument("--after-seq", type=int, default=0, metavar="N",
                   help="only events after sequence number N (the last one a consumer has seen)")
    s.add_argument("--type", action="append", default=[], metavar="TYPE",
                   help="only events of this type, e.g. queue.log; repeatable")
    s.add_argument("--json", action="store_true", help="NDJSON: one JSON object per line")
    s.add_argument("--simulated", action="store_true", help="the log of ivr simulate (STATE_DIR/simulate.db)")
    s.set_defaults(func=cmd_events)

    s = sub.add_parser("kpi", help="contact-center KPIs from the event log (docs/kpi.md), in the site's zone")
    s.add_argument("--since", default="24h", help="24h, 7d, 90m, 2w or an ISO 8601 date/time (default 24h)")
    s.add_argument("--until", default="", help="the same forms; default now")
    s.add_argument("--by", choices=["flow", "queue", "hour", "day", "node", "variant"],
                   help="one row group per value; variant: the split nodes' experiments, each variant against "
                        "its control with 95%% intervals")
    s.add_argument("--json", action="store_true", help="every KPI with its value, n, unit and variant")
    s.set_defaults(func=cmd_kpi)

    for name, help_ in (("status", "ask the running daemon how it is"), ("reload", "reload flows now")):
        s = sub.add_parser(name, help=help_)
        s.set_defaults(func=cmd_control, command=name)

    s = sub.add_parser("health", help="is the running daemon serving? (control socket + a SIP OPTIONS); exit 0 or 1")
    s.add_argument("--timeout", type=float, default=5.0, help="seconds for each of the two looks (default 5)")
    s.set_defaults(func=cmd_health)

    s = sub.add_parser("sync", help="deliver the event log to the central collector now, or show how far it is")
    s.add_argument("action", nargs="?", choices=["status"], help="status: the outbox, the last error, quarantine")
    s.add_argument("--once", action="store_true", help="push everything unsent now (until caught up or the first "
                                                       "failure) and report")
    s.add_argument("--json", action="store_true", help="the report or the status as one JSON object")
    s.set_defaults(func=cmd_sync)

    s = sub.add_parser("closed", help="flip a schedule's emergency 'closed now' switch")
    s.add_argument("schedule", help="a schedule the flows define (hours: in flows_dir), e.g. office")
    s.add_argument("state", choices=["on", "off"], help="on: closed now, whatever the hours; off: normal hours again")
    s.add_argument("--reason", default="", help="why, recorded with the switch (e.g. storm)")
    s.set_defaults(func=cmd_closed)

    s = sub.add_parser("recordings", help="messages kept by record nodes: list, path ID, prune")
    s.add_argument("action", nargs="?", choices=["list", "path", "prune"], default="list",
                   help="list (default), path (one's file) or prune (erase those past the retention now)")
    s.add_argument("id", nargs="?", help="with path: the recording's id (the record node's into variable)")
    s.add_argument("--json", action="store_true", help="list as JSON")
    s.add_argument("--simulated", action="store_true", help="the ones ivr simulate kept")
    s.set_defaults(func=cmd_recordings)

    s = sub.add_parser("backup", help="copy the state (event log, callbacks, outbox) to a file, daemon running or not")
    s.add_argument("--to", help="a folder (a dated file is made in it) or a file; default STATE_DIR/backups/")
    s.add_argument("--keep", type=int, default=0, metavar="N",
                   help="then remove all but the N newest backups of this site in that folder")
    s.set_defaults(func=cmd_backup)
    s = sub.add_parser("restore", help="put a backup in place of the state (the daemon stopped)")
    s.add_argument("file", help="a file made by 'ivr backup'")
    s.add_argument("--force", action="store_true", help="restore another site's backup onto this box")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("pbx-prompts", help="render the prompts of docs/asterisk's sample dialplan as WAV files")
    s.add_argument("dir", help="the PBX's sounds folder, e.g. /var/lib/asterisk/sounds/en (files go to DIR/custom/)")
    s.add_argument("--voice", default="en", help="espeak-ng voice (default en)")
    s.set_defaults(func=cmd_pbx_prompts)

    s = sub.add_parser("callbacks", help="list, show, cancel or retry callback requests")
    cb = s.add_subparsers(dest="action", required=True)
    c = cb.add_parser("list", help="callbacks waiting or in progress (--all: finished ones too)")
    c.add_argument("--all", action="store_true", help="finished ones too (done, expired, cancelled)")
    c.add_argument("--json", action="store_true", help="one JSON array of the requests")
    c = cb.add_parser("show", help="one callback with its attempts")
    c.add_argument("id", help="callback id (or an unambiguous prefix)")
    c.add_argument("--json", action="store_true", help="the request and its attempts as one JSON object")
    c = cb.add_parser("cancel", help="cancel a callback waiting to be dialled")
    c.add_argument("id", help="callback id (or an unambiguous prefix)")
    c.add_argument("--reason", default="", help="why, recorded with the request (default: cancelled by an operator)")
    c = cb.add_parser("retry", help="dial a waiting callback at the next chance (not inside its retry interval)")
    c.add_argument("id", help="callback id (or an unambiguous prefix)")
    c = cb.add_parser("report", help="honest numbers: outcomes, promises kept, EWT error, time to dial/agent")
    when = c.add_mutually_exclusive_group()
    when.add_argument("--since", default="", help="ISO 8601 date or time (no offset: the site's zone)")
    when.add_argument("--days", type=float, default=7.0, help="the last N days (default 7)")
    c.add_argument("--queue", default="", help="only the requests for this queue")
    c.add_argument("--json", action="store_true", help="the figures as one JSON object")
    s.set_defaults(func=cmd_callbacks)

    s = sub.add_parser("privacy", help="erase personal data: one caller's (a data-subject request), or what is due")
    pv = s.add_subparsers(dest="action", required=True)
    c = pv.add_parser("erase", help="erase a caller's personal data (keys, call records, finished callbacks)")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--caller", help="the caller's number, in any form (read as E.164 in the site's region)")
    who.add_argument("--expired", action="store_true", help="what privacy.retention_days says is due, now")
    c.add_argument("--json", action="store_true", help="what was erased as one JSON object")
    s.set_defaults(func=cmd_privacy)

    from ivr.update import add_subcommand as add_update  # issue #16: `ivr update` (firmware/README.md)
    add_update(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    except _Exit as exc:
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ivr calls | head -1`: the reader has what it wanted
        _stdout_gone()
        return 1


if __name__ == "__main__":
    sys.exit(main())
