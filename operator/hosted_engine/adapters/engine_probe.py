"""The engine's liveliness probe: one HTTP GET with a short timeout, healthy when the body
contains the expected text (``DB Up``, as oVirt's ``engine-health`` submonitor). Async
(aiohttp): it runs in the HostedEngine's daemon and never blocks the state machine."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

from hosted_engine.logic.ha import ProbeResult

MAX_BODY = 64 * 1024


async def probe(
    session: aiohttp.ClientSession,
    url: str,
    *,
    expect: str,
    timeout: float,
    verify_tls: bool = True,
) -> tuple[ProbeResult, str]:
    """(result, detail): OK when the page answers 2xx with ``expect`` in its body, TIMEOUT
    when it does not answer in time, BAD otherwise (refused, error status, wrong body)."""
    ssl_arg: ssl.SSLContext | bool = bool(verify_tls)
    try:
        async with asyncio.timeout(timeout):
            async with session.get(url, ssl=ssl_arg, allow_redirects=False) as resp:
                body = (await resp.content.read(MAX_BODY)).decode("utf-8", "replace")
                if 200 <= resp.status < 300 and expect in body:
                    return ProbeResult.OK, f"{resp.status} {expect}"
                return ProbeResult.BAD, f"HTTP {resp.status}: {body[:80].strip()}"
    except TimeoutError:
        return ProbeResult.TIMEOUT, f"no answer within {timeout:g}s"
    except aiohttp.ClientError as exc:
        return ProbeResult.BAD, f"{type(exc).__name__}: {exc}"[:200]
    except OSError as exc:
        return ProbeResult.BAD, f"{type(exc).__name__}: {exc}"[:200]


def new_session() -> aiohttp.ClientSession:
    """A session without connection reuse (each probe is a fresh connection, like a check)."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    return aiohttp.ClientSession(connector=connector, trust_env=False)
