"""Data to the agent (issue 17, item 3): a transfer's ``data:`` travels with the caller as SIP headers on the REFER
(and in its Refer-To URI, for the INVITE the PBX sends on) — the AMI way is tested by a real call in
tests/integration/test_lookup_call.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ivr.adapters.transfer import TransferContext, Transferer
from ivr.config import TransferConfig
from ivr.engine.call import TransferTarget


@dataclass
class Outcome:
    ok: bool = True
    status: int = 200
    detail: str = "NOTIFY 200"


class Leg:
    source = ("127.0.0.1", 5060)

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.refers: list[tuple[str, tuple[tuple[str, str], ...]]] = []

    async def refer(self, uri: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> Outcome:
        self.refers.append((uri, extra_headers))
        return Outcome()


class Call:
    call_id = "ivr-1"

    def __init__(self) -> None:
        self.leg = Leg()

    async def hangup(self) -> None:
        self.leg.ended.set()


async def test_refer_carries_each_named_value_as_an_x_header_and_in_the_refer_to_uri() -> None:
    call: Any = Call()
    target = TransferTarget("queue", "billing", (("account", "345678"), ("name", "Ada L")))
    result = await Transferer(TransferContext(TransferConfig(mode="refer"), None, None)).transfer(call, target)
    assert result.ok
    [(uri, headers)] = call.leg.refers
    assert headers == (("X-IVR-Call-ID", "ivr-1"), ("X-IVR-Var-account", "345678"), ("X-IVR-Var-name", "Ada L"))
    base, _, query = uri.partition("?")
    assert base == "sip:billing@127.0.0.1"
    assert [tuple(unquote(x) for x in p.split("=", 1)) for p in query.split("&")] == list(headers)


async def test_user_to_user_where_configured() -> None:
    """RFC 7433: the configured data variable also as User-to-User, hex-encoded, on the REFER and its Refer-To."""
    call: Any = Call()
    target = TransferTarget("queue", "billing", (("account", "345678"), ("name", "Ada L")))
    settings = TransferConfig(mode="refer", user_to_user="account")
    assert (await Transferer(TransferContext(settings, None, None)).transfer(call, target)).ok
    [(uri, headers)] = call.leg.refers
    assert ("User-to-User", "333435363738;encoding=hex") in headers
    assert "User-to-User=333435363738%3Bencoding%3Dhex" in uri
    plain: Any = Call()
    await Transferer(TransferContext(TransferConfig(mode="refer"), None, None)).transfer(plain, target)
    assert not any(name == "User-to-User" for name, _ in plain.leg.refers[0][1])  # only where configured
