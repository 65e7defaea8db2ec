"""The guest HTTP endpoint, the export proxy over HTTPS and the deterministic disk stream."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import ssl

import aiohttp
import pytest
from hosted_engine.lab.kubevirt.diskstream import BLOCK, disk_sha256, read_disk
from hosted_engine.lab.kubevirt.export import (
    EXPORT_API,
    TOKEN_HEADER,
    ExportedVolume,
    ExportEntry,
    ExportServer,
)
from hosted_engine.lab.kubevirt.guest import (
    ENGINE_HEALTH_PATH,
    HEALTHY_BODY,
    GuestService,
    IpAllocator,
)


def test_disk_stream_is_deterministic_seekable_and_keyed() -> None:
    size = 2 * BLOCK + 12345
    whole = read_disk("ns/disk", size)
    assert len(whole) == size
    assert read_disk("ns/disk", size) == whole
    assert read_disk("ns/disk", size, BLOCK - 10, BLOCK + 10) == whole[BLOCK - 10 : BLOCK + 10]
    assert read_disk("ns/other", size) != whole
    assert disk_sha256("ns/disk", size) == hashlib.sha256(whole).hexdigest()


def test_ip_allocator_gives_unique_loopback_addresses() -> None:
    alloc = IpAllocator()
    addresses = {alloc.allocate(f"vm-{i}") for i in range(600)}
    assert len(addresses) == 600
    assert all(a.startswith("127.77.") and not a.endswith((".0", ".255")) for a in addresses)
    first = alloc.allocate("vm-0")
    assert alloc.allocate("vm-0") == first
    alloc.release("vm-0")
    assert alloc.allocate("new") == first


async def _get(session: aiohttp.ClientSession, url: str, timeout: float = 2.0) -> tuple[int, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        return resp.status, await resp.text()


async def test_engine_health_page_up_hung_healed_gone() -> None:
    alloc = IpAllocator("127.77.200.0/24")
    guest = GuestService("ns/engine", "engine", alloc.allocate("x"), 18080, "node-1")
    await guest.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await _get(session, guest.url + ENGINE_HEALTH_PATH)
            assert (status, body) == (200, HEALTHY_BODY)
            guest.hang()
            with pytest.raises(asyncio.TimeoutError):
                await _get(session, guest.url + ENGINE_HEALTH_PATH, timeout=0.3)
            guest.heal()
            assert (await _get(session, guest.url + ENGINE_HEALTH_PATH))[0] == 200
            await guest.stop()
            with pytest.raises(aiohttp.ClientConnectionError):
                await _get(session, guest.url + ENGINE_HEALTH_PATH)
    finally:
        await guest.stop()


async def test_engine_starting_and_broken_guests_are_not_healthy() -> None:
    starting = GuestService("ns/a", "engine", "127.77.201.2", 18080, "node-1", startup_time=30)
    broken = GuestService("ns/b", "engine", "127.77.201.3", 18080, "node-1", broken=True)
    await starting.start()
    await broken.start()
    try:
        async with aiohttp.ClientSession() as session:
            for guest in (starting, broken):
                status, body = await _get(session, guest.url + ENGINE_HEALTH_PATH)
                assert status == 503 and "DB Up" not in body
    finally:
        await starting.stop()
        await broken.stop()


async def test_export_served_over_https_with_token_and_checksum() -> None:
    server = ExportServer()
    await server.start()
    size = BLOCK + 777
    server.entries[("ns", "backup")] = ExportEntry(
        token="s3cret", volumes={"disk": ExportedVolume("disk", "ns/disk", size)}
    )
    try:
        context = ssl.create_default_context(cadata=server.ca_pem)
        url = f"{server.export_url('ns', 'backup')}/volumes/disk/disk.img"
        assert url.startswith(f"https://127.0.0.1:{server.port}{EXPORT_API}/namespaces/ns/")
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(url) as resp:
                assert resp.status == 401
            headers = {TOKEN_HEADER: "s3cret"}
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 200
                data = await resp.read()
            assert hashlib.sha256(data).hexdigest() == disk_sha256("ns/disk", size)
            async with session.get(url, headers={**headers, "Range": "bytes=10-19"}) as resp:
                assert resp.status == 206
                assert await resp.read() == data[10:20]
            async with session.get(url + ".gz", headers=headers) as resp:
                assert gzip.decompress(await resp.read()) == data
        # Verification is on: a client that does not trust the lab CA is refused.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await _get(session, url)
    finally:
        await server.stop()


async def test_stopping_a_hung_guest_ends_its_requests_without_blocking_the_loop() -> None:
    guest = GuestService("ns/engine", "engine", "127.77.202.2", 18080, "node-1")
    await guest.start()
    guest.hang()
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(_get(session, guest.url + ENGINE_HEALTH_PATH, 5.0))
        await asyncio.sleep(0.1)
        assert not pending.done()
        await asyncio.wait_for(guest.stop(), 2.0)
        ticks = 0
        for _ in range(5):  # the loop still turns
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 5
        with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)):
            status, _ = await asyncio.wait_for(pending, 3.0)
            assert status != 200
            raise aiohttp.ClientError("answered only with an error")
