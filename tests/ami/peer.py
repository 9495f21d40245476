"""A test AMI peer: an asyncio TCP server on 127.0.0.1 speaking the real protocol through ``ivr.proto.ami``.

Its answers come from the transcript files in ``fixtures/`` (each cites the Asterisk documentation it follows).
Knobs let a test script the awkward cases: ``Response: Error`` for an action, unrelated events interleaved in
lists, answers held back and sent in reverse order, a drop in the middle of a list, silence, a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ivr.proto.ami import AmiAction, AmiEvent, AmiMessage, AmiParser, event, login_key

FIXTURES = Path(__file__).parent / "fixtures"


def load_sections(name: str) -> dict[str, str]:
    """A fixture file split at ``## <section>`` lines, ``#`` comment lines dropped."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif line.startswith("#"):
            continue
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v).strip("\n") + "\n\n" for k, v in sections.items()}


def transcript(name: str, section: str, **values: str) -> list[AmiMessage]:
    """The messages of one fixture section, ``${...}`` filled in, parsed with the same parser as the adapter."""
    text = string.Template(load_sections(name)[section]).safe_substitute(values)
    parser = AmiParser(expect_banner=False)
    out = [m for m in parser.feed(text.encode()) if isinstance(m, AmiMessage)]
    assert parser.errors == 0, f"{name}#{section} does not parse cleanly"
    return out


def _frame(messages: Iterable[AmiMessage]) -> bytes:
    return b"".join(m.serialize() for m in messages)


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    authed: bool = False
    events: bool = False
    challenge: str | None = None


@dataclass(eq=False)
class AmiPeer:
    users: dict[str, str] = field(default_factory=lambda: {"ivr": "s3cret"})
    version: str = "5.0.2"
    challenge: str = "840415273"
    #: action name → Message of a ``Response: Error`` answer
    errors: dict[str, str] = field(default_factory=dict)
    #: action names never answered
    silent: set[str] = field(default_factory=set)
    #: unrelated events sent between the items of every list answer
    interleave: list[AmiEvent] = field(default_factory=list)
    #: close the connection after the response and this many items of the next list answer
    drop_mid_list_after: int | None = None
    #: hold back the next N answers, then send them in reverse order
    reorder: int = 0
    #: (Response, Reason) for the next Originates' OriginateResponse events
    originate_results: list[tuple[str, str]] = field(default_factory=list)
    variables: dict[tuple[str, str], str] = field(default_factory=dict)
    astdb: dict[tuple[str, str], str] = field(default_factory=dict)  # (family, key) -> value: DB() of the dialplan
    #: channels CoreShowChannels lists instead of the fixture's (each a CoreShowChannel event's fields)
    channels: list[dict[str, str]] | None = None
    port: int = 0
    received: list[AmiAction] = field(default_factory=list)
    logins: int = 0
    _server: asyncio.Server | None = None
    _conns: set[_Conn] = field(default_factory=set)
    _held: list[bytes] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.writer.close()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self._conns.clear()

    async def restart(self) -> None:
        """Asterisk restarting: every session closed, then the port is listening again."""
        await self.stop()
        await self.start()

    def drop_all(self) -> None:
        for conn in list(self._conns):
            conn.writer.close()

    def actions(self, name: str) -> list[AmiAction]:
        return [a for a in self.received if a.name.lower() == name.lower()]

    async def push(self, *events: AmiMessage) -> None:
        """Send live events to every logged-in session that asked for events."""
        data = _frame(events)
        for conn in list(self._conns):
            if conn.authed and conn.events:
                conn.writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await conn.writer.drain()

    # -- the session --
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        parser = AmiParser(expect_banner=False)
        try:
            writer.write(f"Asterisk Call Manager/{self.version}\r\n".encode())
            while not writer.is_closing():
                data = await reader.read(65536)
                if not data:
                    break
                for msg in parser.feed(data):
                    if isinstance(msg, AmiAction):
                        self.received.append(msg)
                        await self._handle(conn, msg)
                    if writer.is_closing():
                        break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(conn)
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _send(self, conn: _Conn, messages: list[AmiMessage]) -> None:
        data = _frame(messages)
        if self.reorder > 0:
            self._held.append(data)
            if len(self._held) < self.reorder:
                return
            data = b"".join(reversed(self._held))
            self._held.clear()
            self.reorder = 0
        conn.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await conn.writer.drain()

    async def _handle(self, conn: _Conn, action: AmiAction) -> None:
        name = action.name.lower()
        aid = action.action_id or ""
        if action.name in self.silent:
            return
        if name == "challenge":
            conn.challenge = self.challenge
            await self._send(conn, transcript("login.txt", "challenge", ActionID=aid, Challenge=self.challenge))
            return
        if name == "login":
            secret = self.users.get(action.get("Username") or "")
            if (action.get("AuthType") or "").lower() == "md5":
                ok = (
                    secret is not None
                    and conn.challenge is not None
                    and (action.get("Key") == login_key(conn.challenge, secret))
                )
            else:
                ok = secret is not None and action.get("Secret") == secret
            if not ok:  # Asterisk answers, then ends the session (manager.c, authenticate())
                await self._send(conn, transcript("login.txt", "login_failed", ActionID=aid))
                conn.writer.close()
                return
            conn.authed = True
            conn.events = (action.get("Events") or "on").lower() != "off"
            self.logins += 1
            ok_msgs = transcript("login.txt", "login_ok", ActionID=aid)
            await self._send(conn, ok_msgs if conn.events else ok_msgs[:1])
            return
        if not conn.authed:
            await self._send(conn, transcript("login.txt", "permission_denied", ActionID=aid))
            return
        if action.name in self.errors:
            await self._send(conn, transcript("login.txt", "error", ActionID=aid, Message=self.errors[action.name]))
            return
        if name == "logoff":
            await self._send(conn, transcript("login.txt", "goodbye", ActionID=aid))
            conn.writer.close()
            return
        if name == "events":
            conn.events = (action.get("EventMask") or "").lower() != "off"
            await self._send(conn, transcript("login.txt", "events", ActionID=aid))
            return
        if name == "ping":
            await self._send(conn, transcript("login.txt", "ping", ActionID=aid))
            return
        if name == "coreshowchannels" and self.channels is not None:
            fixture = transcript("coreshowchannels.txt", "coreshowchannels", ActionID=aid)
            items = [event("CoreShowChannel", ch, action_id=aid) for ch in self.channels]
            done = event("CoreShowChannelsComplete", {"EventList": "Complete", "ListItems": str(len(items))},
                         action_id=aid)
            await self._list(conn, [fixture[0], *items, done])
            return
        if name in ("queuestatus", "queuesummary", "coreshowchannels"):
            await self._list(conn, transcript(f"{name}.txt", name, ActionID=aid))
            return
        if name == "redirect":
            await self._send(conn, transcript("actions.txt", "redirect", ActionID=aid))
            return
        if name == "hangup":
            await self._send(conn, transcript("actions.txt", "hangup", ActionID=aid))
            return
        if name == "setvar":
            # "__NAME"/"_NAME" set NAME, inherited by the channels it creates (Asterisk: pbx_builtin_setvar_helper)
            var = (action.get("Variable") or "").lstrip("_")
            self.variables[(action.get("Channel") or "", var)] = action.get("Value") or ""
            await self._send(conn, transcript("actions.txt", "setvar", ActionID=aid))
            return
        if name == "getvar":
            var = action.get("Variable") or ""
            value = self.variables.get((action.get("Channel") or "", var), "")
            await self._send(conn, transcript("actions.txt", "getvar", ActionID=aid, Variable=var, Value=value))
            return
        if name == "dbget":
            family, key = action.get("Family") or "", action.get("Key") or ""
            if (family, key) in self.astdb:
                await self._list(conn, transcript("actions.txt", "dbget", ActionID=aid, Family=family, Key=key,
                                                  Val=self.astdb[(family, key)]))
            else:
                await self._send(conn, transcript("actions.txt", "dbget_not_found", ActionID=aid))
            return
        if name == "originate":
            await self._originate(conn, action)
            return
        await self._send(conn, transcript("login.txt", "error", ActionID=aid, Message="Invalid/unknown command"))

    async def _list(self, conn: _Conn, messages: list[AmiMessage]) -> None:
        head, items = messages[0], messages[1:]
        out: list[AmiMessage] = [head]
        for i, item in enumerate(items):
            if self.drop_mid_list_after is not None and i == self.drop_mid_list_after:
                self.drop_mid_list_after = None
                await self._send(conn, out)
                conn.writer.close()
                return
            out.append(item)
            if i == 0:
                out.extend(self.interleave)
        await self._send(conn, out)

    async def _originate(self, conn: _Conn, action: AmiAction) -> None:
        aid = action.action_id or ""
        await self._send(conn, transcript("actions.txt", "originate_queued", ActionID=aid))
        response, reason = self.originate_results.pop(0) if self.originate_results else ("Success", "4")
        for k, v in action.variables().items():
            self.variables[(action.get("Channel") or "", k)] = v
        later = transcript(
            "actions.txt",
            "originate_response",
            ActionID=aid,
            Response=response,
            Reason=reason,
            Channel=action.get("Channel") or "",
            Context=action.get("Context") or "",
            Exten=action.get("Exten") or "",
        )
        # an unrelated event first: the OriginateResponse comes later, on its own
        unrelated = event("Newchannel", {"Channel": action.get("Channel") or "", "Uniqueid": "1700000100.42"})
        if conn.events:
            await self._send(conn, [unrelated])
        await self._send(conn, later)
