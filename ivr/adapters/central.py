"""The central collector over HTTPS: one of the two modules on the box that know aiohttp (the other is
ivr/adapters/lookup.py, the flows' data look-ups).

aiohttp rather than httpx: the collector is an aiohttp server in this repository, so one well-kept HTTP library
serves both ends; it is asyncio-native, takes an ``ssl.SSLContext`` as it is (the site's CA, a client
certificate) and streams. No aiohttp type leaves this module: the relay sees a ``Reply`` (any status the
center answered) or a ``CentralUnreachable`` with one line saying why (refused, TLS, timeout, dropped).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from importlib import metadata

import aiohttp

from ivr.errors import IvrError
from ivr.sync.wire import PATH, Batch

REPLY_LIMIT = 1 << 20
"""Bytes of an answer read at most: a 422 naming every line of a batch is far smaller; a hostile or broken
center cannot make the box buffer more."""


class CentralUnreachable(IvrError):  # noqa: N818 - names the condition the relay reports
    """No HTTP answer: the connection was refused or dropped, TLS failed, or the center took too long."""

    def __init__(self, reason: str, *, tls: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tls = tls


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    retry_after: str | None


def user_agent() -> str:
    try:
        version = metadata.version("edge-ivr")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "0"
    return f"edge-ivr/{version}"


class CentralClient:
    """POSTs batches to ``{url}/v1/events`` on one keep-alive session; ``tls``: ``CentralConfig.tls()``."""

    def __init__(self, url: str, token: str, *, tls: ssl.SSLContext | None, timeout: float,
                 agent: str | None = None) -> None:
        self.url = url.rstrip("/") + PATH
        self._token = token
        self._tls = tls
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.timeout = timeout
        self.agent = agent or user_agent()
        self._session: aiohttp.ClientSession | None = None

    async def post(self, batch: Batch, head_seq: int) -> Reply:
        if self._session is None:
            # trust_env=False: no proxy or netrc picked up from the environment behind the config's back
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        headers = batch.headers(token=self._token, head_seq=head_seq, user_agent=self.agent)
        try:
            async with self._session.post(self.url, data=batch.gzipped(), headers=headers, allow_redirects=False,
                                          ssl=self._tls if self._tls is not None else True) as resp:
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk[:REPLY_LIMIT - len(body)]
                    if len(body) >= REPLY_LIMIT:
                        break
                return Reply(resp.status, bytes(body), resp.headers.get("Retry-After"))
        except aiohttp.ClientConnectorCertificateError as exc:
            raise CentralUnreachable(f"TLS: the center's certificate failed verification at {self._where(exc)}: "
                                     f"{_reason(exc.certificate_error)}", tls=True) from exc
        except aiohttp.ClientSSLError as exc:
            raise CentralUnreachable(f"TLS with {self._where(exc)} failed: {_reason(exc)}", tls=True) from exc
        except aiohttp.ClientConnectorError as exc:
            raise CentralUnreachable(f"cannot connect to {self._where(exc)}: {_reason(exc.os_error)}") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            raise CentralUnreachable(f"the connection to {self.url} was lost before the answer: "
                                     f"{_reason(exc)}") from exc
        except TimeoutError as exc:
            raise CentralUnreachable(f"no answer from {self.url} within {self.timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise CentralUnreachable(f"{self.url}: {type(exc).__name__}: {_reason(exc)}") from exc
        except OSError as exc:  # a socket error the library let through unwrapped
            raise CentralUnreachable(f"{self.url}: {_reason(exc)}") from exc

    def _where(self, exc: aiohttp.ClientConnectorError) -> str:
        return f"{exc.host}:{exc.port}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reason(exc: BaseException | None) -> str:
    """One line, without the library's class-name wrapping where the OS or OpenSSL says it better."""
    if exc is None:
        return "unknown"
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
