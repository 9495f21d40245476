"""``ivr run``: the one asyncio daemon. Loads config, the event log and the flows; serves until told to stop.

Flow edits are picked up by watching ``flows_dir`` and on SIGHUP. A reload builds a complete new FlowSet
(parsed, checked, prompts rendered) and swaps one reference; calls in progress keep the set they started
with. A broken edit is logged with the same ``file:line:column`` lines as ``ivr check`` and ignored.

The control socket (``state_dir/ivr.sock``, JSON lines) serves ``status``, ``reload`` and ``simulate``
(a simulated call run inside the daemon on its live flows, driven by the client) — the SIP adapter plugs
calls in through the same ``start_call`` path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import watchfiles

from ivr.adapters.recordings import RecordingFiles, RecordingServer, RecordingsHttpError
from ivr.adapters.simulator import NarratingRecorder, SimulatedCall
from ivr.adapters.systemd import Notifier
from ivr.config import Config
from ivr.engine.call import Call
from ivr.engine.context import Outcome, Recorder
from ivr.engine.runner import run_call
from ivr.errors import FlowError, Problem
from ivr.flows.model import FlowSet
from ivr.flowset import load_flowset, summary
from ivr.metrics import MetricsListenError
from ivr.store.eventlog import CallRecorder, EventLog

log = logging.getLogger("ivr.daemon")

AMI_READY_WAIT = 15.0
"""Seconds the start waits for the first AMI login before saying READY anyway. The PBX being down (or
restarting beside us) must not keep the box from answering calls by keys or fail its unit: READY then says
``AMI connecting`` in its STATUS, the link is retried in the background, and the dialer waits for it."""


class Daemon:
    def __init__(self, config: Config, *, with_sip: bool = True) -> None:
        self.config = config
        self.with_sip = with_sip
        self.telephony: Any = None
        self.speech: Any = None
        self.ami: Any = None
        self.queues: Any = None
        self._ami_task: asyncio.Task[None] | None = None
        self.dialer: Any = None  # ivr.callbacks.dialer.Dialer when callbacks are on
        self.desk: Any = None  # ivr.callbacks.desk.Desk: the queue node's virtual hold
        self.recordings = RecordingFiles(config.recordings_dir, config.recording_retention_days,
                                         config.recordings_http.base_url if config.recordings_http else "")
        self.recording_server: Any = None  # RecordingServer when recordings.listen is set
        """Messages of ``record`` nodes; pruned hourly past ``calls.recording_retention_days``."""
        self.metrics: Any = None  # ivr.metrics.exporter.MetricsServer unless metrics: {enabled: false}
        self.relay: Any = None  # ivr.sync.relay.Relay when central.url is configured
        self.lookups: Any = None  # ivr.adapters.lookup.HttpLookups: http nodes' one shared HTTP client
        self._sync_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._callback_tasks: list[asyncio.Task[None]] = []
        self._speech_task: asyncio.Task[None] | None = None
        self.flows: FlowSet | None = None
        self.events: EventLog | None = None
        self.calls: set[asyncio.Task[Outcome]] = set()
        self.stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()
        self.started_at = datetime.now(UTC)
        self.reloads = 0
        self.rejected_reloads = 0
        self.reload_problems: list[str] = []  # of the last reload, for the control socket's answer
        self.notify = Notifier.from_environment()
        self._told: set[str] = set()
        self.ready = False
        self._watchdog: asyncio.Task[None] | None = None

    def _phase(self, text: str) -> None:
        """A step of the start that can take a while (the first start renders every prompt): one log line and
        systemd's STATUS, so neither the console nor ``systemctl status`` looks hung."""
        log.info("%s", text)
        self.notify.status(text)

    # -- life cycle --
    async def start(self) -> None:
        # the watchdog runs from the first step: a start wedged on a hung disk or PBX is restarted too
        self._watchdog = asyncio.create_task(
            self.notify.keep_alive(self.stopping, lambda: self._status_line() if self.ready else None),
            name="watchdog")
        if self.config.metrics.enabled:  # first: a taken address stops the start before anything is opened
            from ivr.metrics.exporter import start_metrics

            self.metrics = await start_metrics(self)
        if self.config.recordings_http is not None:
            rh = self.config.recordings_http
            self.recording_server = RecordingServer.from_config(self.recordings, rh.token_file)
            await self.recording_server.start(rh.host, rh.port)
            if not rh.url:  # links name the address actually bound (listen port 0 picks one)
                self.recordings.url = f"http://{self.recording_server.address}/recordings/"
            log.info("recordings on http://%s/recordings/ (links %s)", self.recording_server.address,
                     self.recordings.url)
        self._phase(f"opening the event log {self.config.db_path}")
        privacy = self.config.privacy
        self.events = await EventLog.open(self.config.db_path, self.config.site_id, self.config.timezone,
                                          sealer=privacy.sealer() if privacy is not None else None)
        if privacy is not None and privacy.retention_days is not None:
            self._retention_task = asyncio.create_task(self._retention(privacy.retention_days, privacy.check_seconds),
                                                       name="privacy-retention")
        self.events.unsaved_seconds = self.config.navigation_unsaved_seconds
        await self.events.append("daemon.started", None, config=self.config.source, pid=os.getpid(),
                                 zone=self.config.timezone)
        from ivr.adapters.lookup import HttpLookups

        self.lookups = HttpLookups(self.config.lookups)
        self._phase(f"loading flows from {self.config.flows_dir} and rendering their prompts")
        try:
            self.flows = await self._load_flows()
        except FlowError as exc:
            for p in exc.problems:
                log.error("%s", p)
            raise
        log.info("flows loaded %s", summary(self.flows))
        await self.events.append("flows.loaded", None, version=self.flows.version, files=list(self.flows.files))
        if self.config.ami is not None:
            await self._start_ami()
        if self.with_sip:
            from ivr.adapters.telephony import Telephony
            from ivr.rtp.remote import RemoteMediaEngine
            from ivr.rtp.session import MediaEngine

            sip = self.config.sip
            self._phase(f"starting SIP on {sip.host}:{sip.port}")
            media = (RemoteMediaEngine(sip.host, sip.rtp_port_min, sip.rtp_port_max, priority=sip.media_priority,
                                       workers=sip.media_workers)
                     if sip.media_worker else MediaEngine(sip.host, sip.rtp_port_min, sip.rtp_port_max))
            self.telephony = Telephony(self.config, self.events, self.start_call, media, speech=self.speech,
                                       ami=self.ami)
            await self.telephony.start()
            if self.config.speech.enabled and self._flows_listen():
                # keys work from the first call; listening menus hear speech once the model is up (2.5-35 s)
                self._speech_task = asyncio.create_task(self._start_speech(), name="speech-load")
        cb = self.config.callbacks
        if cb is not None and cb.enabled:
            self._phase("starting callbacks: reconciling attempts left in flight")
            await self._start_callbacks()
        await self._start_sync()

    async def _retention(self, days: float, every: float) -> None:
        """Erase the personal data retention says is due, now and every ``every`` seconds (docs/config.md)."""
        from ivr.store.erasure import erase_expired

        while not self.stopping.is_set():
            try:
                assert self.events is not None
                done = await erase_expired(self.events, days, datetime.now(UTC))
                if done.recording_ids:
                    done.recordings = await asyncio.to_thread(self.recordings.erase, done.recording_ids)
                if done.keys or done.calls or done.callbacks or done.recordings:
                    log.info("privacy retention erased keys=%d calls=%d callbacks=%d recordings=%d", done.keys,
                             done.calls, done.callbacks, done.recordings)
            except Exception:  # a locked file now is retried at the next round; calls go on
                log.exception("privacy retention failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)

    async def _start_sync(self) -> None:
        """The relay to the central collector (docs/central.md); without ``central.url`` the log is only kept."""
        if self.config.central is None:
            log.info("no central configured: events are kept in the log only")
            return
        from ivr.sync.relay import open_relay

        assert self.events is not None
        self.relay = await open_relay(self.config.central, self.events, db_path=self.config.db_path,
                                      lock_path=self.config.sync_lock)
        self._sync_task = asyncio.create_task(self.relay.run(), name="sync-relay")
        log.info("central sync on url=%s", self.config.central.url)

    def _flows_listen(self) -> bool:
        """Any menu with spoken keywords or any collection by voice: only then is the model worth loading."""
        from ivr.flows.model import Collect, Menu

        assert self.flows is not None
        lang = self.config.speech.language
        return any(isinstance(n.action, Menu | Collect) and n.action.speech
                   for f in self.flows.flows.values() if f.language == lang for n in f.nodes.values())

    async def _start_speech(self) -> None:
        from ivr.adapters.speech import SpeechService

        sp = self.config.speech
        log.info("loading the speech model in the background: until it is up, menus take keys only")
        try:
            service = SpeechService.from_config(sp, self.config.prompt_cache.parent)
            await service.start()
        except Exception:  # no model, a broken install: calls still work by keys, and the log says why
            log.exception("speech recognition unavailable; menus take keys only")
            return
        if self.stopping.is_set():
            await service.aclose()
            return
        self.speech = service
        if self.telephony is not None:
            self.telephony.speech = service  # calls answered from now on listen
        log.info("speech ready model=%s streams=%d", service.model_dir, sp.max_streams)

    async def _start_ami(self) -> None:
        """The PBX link: queue state kept from AMI, its queue events logged in queue_log's shape."""
        from ivr.adapters.ami import AmiAdapter, AmiSettings, QueueMonitor

        a = self.config.ami
        assert a is not None
        self._phase(f"connecting to the PBX's AMI at {a.host}:{a.port}")
        self.ami = AmiAdapter(AmiSettings(host=a.host, port=a.port, username=a.username, secret=a.secret,
                                          auth="plain" if a.auth == "plain" else "md5",
                                          ping_interval=a.ping_interval, action_timeout=a.action_timeout))
        await self.ami.start()  # connects in the background; an absent PBX is retried with backoff

        async def to_event_log(entry: Any) -> None:
            assert self.events is not None
            await self.events.append("queue.log", None, **entry.as_record())

        self.queues = QueueMonitor(self.ami, refresh_interval=a.queue_refresh_seconds, sink=to_event_log)
        self._ami_task = asyncio.create_task(self.queues.run(), name="ami-queues")

    async def _start_callbacks(self) -> None:
        """Virtual hold: the wait source (AMI queue state, else config + our records), the Desk the queue node
        asks, and the dialer (after reconciling attempts a crash left in flight)."""
        from ivr.adapters.callback_dial import AmiDialPort, AmiDialSettings, SipDialPort, sip_dial_settings
        from ivr.callbacks.desk import Desk
        from ivr.callbacks.dialer import Dialer, DialPort, ScheduleHours, build_policy, build_settings
        from ivr.callbacks.queuestate import AmiQueueWaits, RecordsQueueWaits
        from ivr.store.callbacks import CallbackStore

        cb = self.config.callbacks
        assert cb is not None and self.events is not None
        store = CallbackStore(self.events)
        policy = build_policy(cb)
        waits: AmiQueueWaits | RecordsQueueWaits
        if self.queues is not None:
            waits = AmiQueueWaits(self.queues, self.ami)
        else:
            waits = RecordsQueueWaits(dict(cb.queues), self.events.db)
            await waits.refresh()
        self._callback_tasks.append(asyncio.create_task(waits.run(), name="callback-queue-waits"))
        port: DialPort
        if cb.via == "ami":
            assert self.ami is not None  # the config refuses via: ami without an ami: section
            port = AmiDialPort(AmiDialSettings(cb.ami_channel, cb.ami_context, cb.ami_exten, cb.caller_id,
                                               cb.ring_timeout, cb.confirm_seconds, cb.queue_caller_id),
                               self.ami,
                               queues=self.queues.state if self.queues is not None else None)
        elif self.telephony is not None:
            local_host = self.telephony.endpoint.local_address[0]
            port = SipDialPort(sip_dial_settings(cb, self.config.sip.accounts, local_host),
                               self.telephony, self.start_call, self.events, flow=cb.flow,
                               rtp_timeout=self.config.rtp_timeout_seconds)
        else:
            log.warning("callbacks: no SIP stack in this process; no callbacks offered or dialled")
            return
        self.desk = Desk(store, policy, waits, region=cb.region)  # offered only where a dialer will call back
        if cb.via == "sip" and self.flows is not None and cb.flow not in self.flows.flows:
            log.error("callbacks: flow %r not found; answered callbacks will fail (add flows/%s.yaml)", cb.flow,
                      cb.flow)
        self.dialer = Dialer(store, policy, port, build_settings(cb), waits=waits, events=self.events,
                             hours_open=ScheduleHours(lambda: self.flows.schedules if self.flows else {}, self.events))
        await self.dialer.reconcile()
        self._callback_tasks.append(asyncio.create_task(self.dialer.run(), name="callback-dialer"))
        log.info("callbacks on via=%s mode=%s clock=%s", cb.via, cb.mode, cb.clock)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGHUP, self._sighup), (signal.SIGTERM, self.stopping.set),
                             (signal.SIGINT, self.stopping.set)):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, handler)
        sock = self.config.control_socket
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        server = await asyncio.start_unix_server(self._control_client, path=str(sock))
        os.chmod(sock, 0o660)
        if self.ami is not None and not self.ami.connected:
            self._phase(f"waiting up to {AMI_READY_WAIT:g} s for the PBX's AMI")
            with contextlib.suppress(TimeoutError):
                await self.ami.wait_connected(AMI_READY_WAIT)
        log.info("ready control=%s flows=%s", sock, self.config.flows_dir)
        log.info("%s", self._how_to_use())
        self.ready = True
        self.notify.ready(self._status_line())
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(self._watch_flows(), name="flow-watcher")
            pruner = tg.create_task(self._prune_recordings(), name="recordings-prune")
            await self.stopping.wait()
            watcher.cancel()
            pruner.cancel()
        server.close()
        await server.wait_closed()
        await self.shutdown()

    async def _prune_recordings(self) -> None:
        """Erase recorded messages past their retention, at start and hourly."""
        while True:
            try:
                erased = await asyncio.to_thread(self.recordings.prune)
            except OSError as exc:
                log.warning("recordings: pruning %s failed: %s", self.recordings.root, exc)
            else:
                if erased:
                    log.info("recordings: erased %d older than %g days", erased, self.recordings.retention_days)
            await asyncio.sleep(3600)

    def _status_line(self) -> str:
        """What ``systemctl status ivr`` shows under the unit: enough to tell a healthy box at a glance."""
        parts = [f"serving {len(self.calls)} calls"]
        if self.telephony is not None:
            parts.append("SIP {}:{}".format(*self.telephony.endpoint.local_address))
        if self.flows is not None:
            parts.append(f"flows {self.flows.version}")
        if self.ami is not None:
            parts.append(f"AMI {self._ami_link()}")
        if self._speech_task is not None:
            parts.append("speech " + ("ready" if self.speech is not None else "loading: keys only"
                                      if not self._speech_task.done() else "unavailable: keys only"))
        if self.dialer is not None:
            cb = self.dialer.status()
            parts.append(f"callbacks {cb['due']} due, {cb['active']} dialling"
                         + ("" if cb["clock_synced"] else ", paused: clock not synced"))
        if self.relay is not None:
            backlog = self.relay.status()["backlog"]
            parts.append(f"sync backlog {backlog if backlog is not None else '?'}")
        return "; ".join(parts)

    def _how_to_use(self) -> str:
        """The line a newcomer needs once the box is up: how to call it and how to watch it."""
        watch = "watch it with 'ivr status'"
        if self.telephony is None:
            return watch
        host, port = self.telephony.endpoint.local_address[:2]
        host = f"[{host}]" if ":" in host else host
        return (f"call it at sip:100@{host}:{port} (e.g. 'sipp {host}:{port} -sn uac -s 100 -m 1' or a softphone); "
                + watch)

    async def shutdown(self, grace: float = 10.0) -> None:
        self.notify.stopping(f"stopping: {len(self.calls)} calls finishing")
        if self.telephony is not None:
            self.telephony.accepting = False  # new INVITEs get 503 while calls in progress finish
        if self.calls:
            log.info("waiting up to %g s for %d calls", grace, len(self.calls))
            _, pending = await asyncio.wait(self.calls, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self.dialer is not None:
            await self.dialer.stop(grace)
        for task in self._callback_tasks:
            task.cancel()
        if self._callback_tasks:
            await asyncio.wait(self._callback_tasks, timeout=5)
        if self.telephony is not None:
            await self.telephony.stop()
        if self._ami_task is not None:
            self._ami_task.cancel()
            await asyncio.wait({self._ami_task}, timeout=5)
        if self.ami is not None:
            await self.ami.close()
        if self._speech_task is not None and not self._speech_task.done():
            await asyncio.wait({self._speech_task}, timeout=60)  # a model half loaded is closed by its task
        if self.speech is not None:
            await self.speech.aclose()
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.wait({self._sync_task}, timeout=5)
        if self._retention_task is not None:
            self._retention_task.cancel()
            await asyncio.wait({self._retention_task}, timeout=5)
        if self.relay is not None:
            await self.relay.close()
        if self.lookups is not None:
            await self.lookups.aclose()
        if self.metrics is not None:
            await self.metrics.close()
        if self.recording_server is not None:
            await self.recording_server.close()
        if self.events is not None:
            await self.events.append("daemon.stopped", None, config=self.config.source, pid=os.getpid())
            await self.events.close()
        with contextlib.suppress(FileNotFoundError):
            self.config.control_socket.unlink()
        await self.stop_watchdog()
        log.info("stopped")

    async def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.wait({self._watchdog}, timeout=1)
            self._watchdog = None
        self.notify.close()

    # -- reload --
    def _sighup(self) -> None:
        log.info("SIGHUP: reloading flows")
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))  # the reload lock serialises
        self._reloads.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._reloads.discard)

    async def _watch_flows(self) -> None:
        async for changes in watchfiles.awatch(self.config.flows_dir, debounce=300, step=50,
                                               stop_event=self.stopping):
            names = sorted({os.path.relpath(p) for _, p in changes})
            await self.reload(f"changed: {', '.join(names)}")

    async def reload(self, reason: str) -> bool:
        async with self._reload_lock:
            if self.ready:
                self.notify.reloading()
            try:
                return await self._reload(reason)
            finally:
                if self.ready:
                    self.notify.ready(self._status_line())

    async def _load_flows(self) -> FlowSet:
        """The flows, checked and rendered. What is worth telling but not wrong (a flow in a language the
        speech model does not hear, a flow's oddities) is logged once per daemon, not again at every reload."""
        notes: list[str] = []
        warnings: list[Problem] = []
        try:
            return await load_flowset([self.config.flows_dir], self.config, notes=notes, warnings=warnings)
        finally:
            for line in [*notes, *(str(w) for w in warnings)]:
                if line not in self._told:
                    self._told.add(line)
                    log.warning("%s", line)

    async def _reload(self, reason: str) -> bool:
        assert self.events is not None
        try:
            new = await self._load_flows()
        except FlowError as exc:
            self.rejected_reloads += 1
            log.error("reload rejected (%s); still serving version %s", reason,
                      self.flows.version if self.flows else "none")
            for p in exc.problems:
                log.error("%s", p)
            self.reload_problems = [str(p) for p in exc.problems]
            await self.events.append("flows.rejected", None, reason=reason, problems=self.reload_problems)
            return False
        self.reload_problems = []
        if self.flows is not None and new.version == self.flows.version:
            return True
        old = self.flows.version if self.flows else None
        self.flows = new
        self.reloads += 1
        log.info("flows reloaded %s (was %s; %s)", summary(new), old, reason)
        await self.events.append("flows.loaded", None, version=new.version, previous=old, reason=reason)
        return True

    # -- calls --
    def start_call(self, call: Call, recorder: Recorder | None = None, *, entry: str | None = None,
                   variables: dict[str, object] | None = None, desk: Any = None,
                   carried: tuple[tuple[str, str], ...] = (), sensitive: frozenset[str] = frozenset()
                   ) -> asyncio.Task[Outcome]:
        """Run a call on the current flows; the task is tracked so shutdown can drain it. ``desk``: the
        callback desk for this call instead of the daemon's (``ivr simulate --live --wait``). ``carried``:
        a callback leg's data for the agent (``sensitive``: the names never recorded in clear)."""
        assert self.flows is not None and self.events is not None
        rec = recorder or CallRecorder(self.events, call.call_id)
        task = asyncio.create_task(
            run_call(call, self.flows, rec, switches=self.events, max_call_seconds=self.config.max_call_seconds,
                     entry=entry, callbacks=desk or self.desk, variables=variables, recordings=self.recordings,
                     lookups=self.lookups, carried=carried, sensitive=sensitive),
            name=f"call-{call.call_id}",
        )
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)
        return task

    def status(self) -> dict[str, Any]:
        return {
            "site": self.config.site_id,
            "version": self.flows.version if self.flows else None,
            "flows": sorted(self.flows.flows) if self.flows else [],
            "calls_in_progress": len(self.calls),
            "reloads": self.reloads,
            "rejected_reloads": self.rejected_reloads,
            "started_at": self.started_at.isoformat(),
            "config": self.config.source,
            "sip": "{}:{}".format(*self.telephony.endpoint.local_address) if self.telephony else None,
            "sip_listening": dict(self.telephony.endpoint.listening) if self.telephony else {},
            "media": self.telephony.media.stats if self.telephony else None,
            "metrics": self.metrics.address if self.metrics is not None else None,
            "registrations": self.telephony.registrations() if self.telephony else [],
            "ami": self._ami_link(),
            "queues": self._queue_summary(),
            "callbacks": self.dialer.status() if self.dialer is not None else None,
            "sync": self.relay.status() if self.relay is not None else None,
            "speech": {"state": "loading"} if self.speech is None and self._speech_task is not None
            and not self._speech_task.done() else None if self.speech is None else {"state": "ready",
                "listening": self.speech.active_turns, "max_streams": self.speech.max_streams,
                "turns": self.speech.turns_opened, "refused": self.speech.turns_refused,
                "frames_dropped": self.speech.frames_dropped},
            "lookups": {"backends": sorted(self.lookups.backends), "open_circuits": self.lookups.open_circuits()}
            if self.lookups is not None and self.lookups.backends else None,
        }

    def _ami_link(self) -> str | None:
        """``connected``; ``connecting`` before the first login; ``down`` after a drop, until logged in again."""
        if self.ami is None:
            return None
        if self.ami.connected:
            return "connected"
        return "down" if self.ami.logins else "connecting"

    def _queue_summary(self) -> dict[str, Any]:
        """Each queue as the PBX last said, flagged ``stale`` (with ``stale_since``) while the AMI link is down
        or not yet re-read: those figures are the last known ones, not the present. Callers in queue order
        with their wait (seconds since they joined)."""
        if self.queues is None:
            return {}
        now = time.time()

        def iso(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

        fresh = bool(self.queues.fresh)
        out: dict[str, Any] = {}
        for snap in self.queues.state.snapshots().values():
            stale = snap.stale or not fresh
            out[snap.name] = {
                "callers": len(snap.callers), "logged_in": snap.logged_in, "available": snap.available,
                "longest_wait": round(snap.longest_wait(now), 1),
                "waiting": [{"position": c.position, "caller": c.caller_id_num, "name": c.caller_id_name,
                             "wait": round(c.wait(now), 1)} for c in snap.callers],
                "stale": stale,
                "stale_since": iso(snap.stale_since or self.queues.stale_since) if stale else None,
                "refreshed_at": iso(snap.refreshed_at),
            }
        return out

    # -- control socket --
    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(obj: dict[str, Any]) -> None:
            writer.write(json.dumps(obj).encode() + b"\n")
            await writer.drain()

        try:
            line = await reader.readline()
            if not line:
                return
            try:
                req = json.loads(line)
                cmd = req["cmd"]
            except (ValueError, KeyError, TypeError):
                await send({"error": "expected one JSON object with 'cmd'"})
                return
            if cmd == "status":
                await send(self.status())
            elif cmd == "reload":
                ok = await self.reload("control socket")
                await send({"ok": ok, **({} if ok else {"problems": self.reload_problems}), **self.status()})
            elif cmd == "simulate":
                await self._simulate(req, reader, send)
            else:
                await send({"error": f"unknown command {cmd!r}"})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a bad request or a bug answers with an error; the daemon serves on
            log.exception("control request failed")
            with contextlib.suppress(Exception):
                await send({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _simulate(self, req: dict[str, Any], reader: asyncio.StreamReader,
                        send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        lines: asyncio.Queue[str] = asyncio.Queue()

        async def ask() -> str | None:
            while not lines.empty():
                await send({"out": lines.get_nowait()})
            await send({"need_input": True})
            raw = await reader.readline()
            if not raw:
                return None
            try:
                return str(json.loads(raw).get("input", ""))
            except ValueError:
                return ""

        desk = self.desk
        waits, region = req.get("waits") or {}, req.get("region") or None
        if (waits or region) and desk is None:
            await send({"error": "--wait and --region try the callback offer, but this daemon offers no callbacks "
                                 f"(no callbacks: section in {self.config.source}, or not enabled)", "usage": True})
            return
        if waits or region:
            from ivr.adapters.simulator import StatedWaits
            from ivr.callbacks.desk import Desk

            # the stated waits and region for this call only; the store is the daemon's: a request is real
            desk = Desk(desk.store, desk.policy, StatedWaits({str(q): float(s) for q, s in waits.items()})
                        if waits else desk.waits, region=str(region or desk.region))
        call = SimulatedCall(
            call_id=str(uuid.uuid4()),
            caller=str(req.get("caller", "+15550000000")),
            dialed=str(req.get("dialed", "")),
            script=[str(x) for x in req.get("inputs", [])],
            interactive=True,
            emit=lines.put_nowait,
            ask=ask,
            headers={str(k): str(v) for k, v in (req.get("headers") or {}).items()},
            transfer=self.config.transfer,  # a real call's transfer settings: no transfer: section, no transfer
        )
        assert self.events is not None
        rec = NarratingRecorder(CallRecorder(self.events, call.call_id), lines.put_nowait)
        version = self.flows.version if self.flows else None
        entry = req.get("flow") or None
        if self.flows is None or (entry and entry not in self.flows.flows):
            await send({"error": f"unknown flow {entry!r}"})
            return
        await send({"call_id": call.call_id, "version": version})
        outcome = await self.start_call(call, rec, entry=entry, desk=desk)
        while not lines.empty():
            await send({"out": lines.get_nowait()})
        await send({"outcome": outcome.kind, "detail": outcome.detail, "version": version})


async def run_daemon(config: Config) -> int:
    daemon = Daemon(config)
    try:
        await daemon.start()
    except FlowError:
        log.error("not starting: the flows have errors (run 'ivr check')")
        await daemon.stop_watchdog()
        if daemon.metrics is not None:
            await daemon.metrics.close()
        if daemon.events is not None:
            await daemon.events.close()
        return 1
    except MetricsListenError as exc:  # nothing else was started yet
        log.error("%s", exc)
        await daemon.stop_watchdog()
        return 1
    except RecordingsHttpError as exc:  # only metrics before it
        log.error("%s", exc)
        await daemon.stop_watchdog()
        if daemon.metrics is not None:
            await daemon.metrics.close()
        return 1
    except OSError as exc:  # a taken SIP port, no free RTP port: one line, then stop what did start
        return await _failed_start(daemon, exc)
    try:
        await daemon.serve()
    except OSError as exc:  # the control socket cannot be made
        return await _failed_start(daemon, exc)
    return 0


async def _failed_start(daemon: Daemon, exc: OSError) -> int:
    """A bind or I/O failure at start: one clear line naming what failed (the OSError names the address), the
    parts already started stopped, ``daemon.stopped`` recorded, exit status 1 — never a traceback or a hang."""
    log.error("cannot start: %s", exc)
    try:
        await daemon.shutdown(grace=0)
    except Exception as later:  # what did start may be half up: the first failure is the one to report
        log.warning("stopping after the failed start: %s", later)
    return 1


async def control(socket_path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """One request/response on the control socket (for ``ivr status`` and ``ivr reload``)."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(json.dumps(request).encode() + b"\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return json.loads(line) if line else {"error": "no answer"}
