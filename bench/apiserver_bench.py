"""Benchmark of the lab API server over HTTP(S).

Measures (1) GET latency in consecutive blocks across N requests (it must stay flat: no
request recording, O(1) dispatch), (2) LIST of many objects (full, with a label selector,
paged), (3) fan-out to many concurrent watchers, and the process RSS.

    .venv/bin/python bench/apiserver_bench.py --requests 100000 --objects 10000 --watchers 100

The server runs in its own thread and event loop (like the test fixture); the client is
aiohttp with keep-alive connections in the main loop. Results are printed as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import statistics
import time
from typing import Any

import aiohttp
from hosted_engine.lab.testing import LabThread


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def get_latency(session: aiohttp.ClientSession, url: str, total: int, block: int,
                      concurrency: int) -> list[tuple[int, float, float, float]]:
    """(requests served so far, p50 ms, p99 ms, req/s) per block."""
    rows = []
    done = 0
    path = f"{url}/api/v1/namespaces/default/configmaps/probe"
    while done < total:
        lat: list[float] = []
        n = min(block, total - done)

        async def worker(count: int, lat: list[float]) -> None:
            for _ in range(count):
                t0 = time.perf_counter()
                async with session.get(path) as resp:
                    await resp.read()
                    assert resp.status == 200
                lat.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        per = n // concurrency
        await asyncio.gather(*(worker(per, lat) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        done += per * concurrency
        rows.append((done, statistics.median(lat), pct(lat, 0.99), per * concurrency / elapsed))
    return rows


async def run(args: argparse.Namespace) -> None:
    lab = LabThread(tls_enabled=args.tls).start()
    try:
        token = lab.token
        headers = {"Authorization": f"Bearer {token}"}
        ssl_ctx: Any = False
        if args.tls:
            assert lab.server.certificates is not None
            ssl_ctx = ssl.create_default_context(cadata=lab.server.certificates.ca_pem.decode())
        conn = aiohttp.TCPConnector(limit=args.concurrency, ssl=ssl_ctx)
        async with aiohttp.ClientSession(headers=headers, connector=conn) as session:
            url = lab.url
            await (await session.post(f"{url}/api/v1/namespaces/default/configmaps",
                                      json={"metadata": {"name": "probe"},
                                            "data": {"k": "v"}})).read()
            now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            print(f"# Lab API server benchmark\n\n- date: {now}")
            print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}, {'HTTPS' if args.tls else 'HTTP'}")
            rss0 = rss_mib()
            rows = await get_latency(session, url, args.requests, args.block, args.concurrency)
            print(f"\n## GET latency over {args.requests} requests "
                  f"(concurrency {args.concurrency})\n")
            print("| requests served | p50 ms | p99 ms | req/s |\n|---|---|---|---|")
            for i, (done, p50, p99, rate) in enumerate(rows):
                if i in (0, len(rows) - 1) or i % max(1, len(rows) // 8) == 0:
                    print(f"| {done} | {p50:.2f} | {p99:.2f} | {rate:.0f} |")
            first, last = rows[0][1], rows[-1][1]
            print(f"\nRSS {rss0:.0f} MiB before, {rss_mib():.0f} MiB after; "
                  f"p50 first block {first:.2f} ms, last block {last:.2f} ms.")

            # LIST of many objects
            async def create_all() -> None:
                c = lab.server.client
                for i in range(args.objects):
                    await c.create("", "v1", "configmaps", {
                        "metadata": {"name": f"obj-{i:05d}",
                                     "labels": {"shard": str(i % 10)}},
                        "data": {"payload": "x" * 200}}, "default")
            t0 = time.perf_counter()
            lab.call(create_all, timeout=600)
            create_s = time.perf_counter() - t0
            print(f"\n## LIST of {args.objects} objects\n")
            print(f"Created {args.objects} ConfigMaps through the LocalClient in "
                  f"{create_s:.2f} s ({args.objects / create_s:.0f}/s).\n")
            print("| request | items | ms (median of 5) |\n|---|---|---|")
            for label, query in (("full list", {}),
                                 ("labelSelector shard=3", {"labelSelector": "shard=3"}),
                                 ("limit=500 (first page)", {"limit": "500"})):
                times, items = [], 0
                for _ in range(5):
                    t0 = time.perf_counter()
                    async with session.get(f"{url}/api/v1/namespaces/default/configmaps",
                                           params=query) as resp:
                        body = await resp.json()
                    times.append((time.perf_counter() - t0) * 1000)
                    items = len(body["items"])
                print(f"| {label} | {items} | {statistics.median(times):.1f} |")

            # concurrent watchers
            rv = str(lab.server.core.store.rv)
            received = [0] * args.watchers
            watch_url = f"{url}/api/v1/namespaces/kube-public/configmaps"

            wconn = aiohttp.TCPConnector(limit=args.watchers + 5, ssl=ssl_ctx)
            async with aiohttp.ClientSession(headers=headers, connector=wconn) as wsession:
                session_w = wsession

                async def watcher(i: int) -> None:
                    async with session_w.get(watch_url, params={
                            "watch": "true", "resourceVersion": rv, "timeoutSeconds": "120"},
                            timeout=aiohttp.ClientTimeout(total=180)) as resp:
                        async for _line in resp.content:
                            received[i] += 1
                            if received[i] == args.events:
                                return
                tasks = [asyncio.ensure_future(watcher(i)) for i in range(args.watchers)]
                await asyncio.sleep(1.0)
                t0 = time.perf_counter()

                async def produce() -> None:
                    for i in range(args.events):
                        await lab.server.client.create("", "v1", "configmaps", {
                            "metadata": {"name": f"ev-{i}"}}, "kube-public")
                lab.call(produce, timeout=600)
                await asyncio.wait_for(asyncio.gather(*tasks), 300)
                elapsed = time.perf_counter() - t0
            total = sum(received)
            print(f"\n## {args.watchers} concurrent watchers\n")
            print(f"{args.events} creates fanned out to {args.watchers} HTTP watchers: "
                  f"{total} events delivered in {elapsed:.2f} s "
                  f"({total / elapsed:.0f} events/s); every watcher got all "
                  f"{args.events}: {all(r == args.events for r in received)}.")
            print(f"\nFinal RSS {rss_mib():.0f} MiB (server and client in one process).")
    finally:
        lab.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--block", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
