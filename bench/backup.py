"""Backup throughput against a raw copy of the same bytes to the same S3 endpoint.

Both runs read the same disk from the lab's VirtualMachineExport proxy (HTTPS, token, TLS
verified against the export's CA) and write it to the same S3 server (moto's server mode on
127.0.0.1) with the same multipart settings:

- raw copy: the export's bytes straight into one object (what ``curl | aws s3 cp -`` does);
- backup: the operator's data path (hosted_engine.adapters.export.iter_export, read ahead in
  a thread by ``prefetch`` ->
  hosted_engine.logic.backup.GzipStream: gzip members + SHA-256 of the raw and stored bytes ->
  hosted_engine.adapters.objectstore.S3Store.upload_stream), plus the manifest.

The two alternate, each ``--repeat`` times; objects are deleted after each run (moto keeps them
in memory). Goal: backup >= 0.8x the raw copy. Prints a Markdown table.

    .venv/bin/python bench/backup.py --size-mib 256 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import requests
from hosted_engine.adapters.export import ExportLink, iter_export, prefetch
from hosted_engine.adapters.objectstore import S3Store
from hosted_engine.lab.kubevirt.export import ExportedVolume, ExportEntry, ExportServer
from hosted_engine.logic import backup as lb
from hosted_engine.models.backup import S3Target
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

BUCKET = "bench-backups"
TOKEN = "bench-token"


class ExportThread:
    """The lab's export proxy in its own event loop thread."""

    def __init__(self) -> None:
        self.server = ExportServer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ExportThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def run_backup(store: S3Store, link: ExportLink, key: str) -> int:
    gz = lb.GzipStream()

    def compressed() -> Iterator[bytes]:
        for chunk in prefetch(iter_export(link, TOKEN)):
            yield from gz.feed(chunk)
        yield from gz.finish()

    store.upload_stream(f"{key}/disk.img.gz", compressed())
    manifest = lb.build_manifest(
        namespace="bench", backup="bench", run_id=key, created_at=datetime.now(UTC),
        operator_version="bench", source={},
        objects=[lb.StoredObject(lb.DISK, gz.stored_size, gz.stored_sha.hexdigest(),
                                 gz.raw_size, gz.raw_sha.hexdigest())])
    store.put(f"{key}/manifest.json", manifest)
    return gz.raw_size


def run_raw(store: S3Store, link: ExportLink, key: str) -> int:
    size = 0

    def counted() -> Iterator[bytes]:
        nonlocal size
        for chunk in iter_export(link, TOKEN):
            size += len(chunk)
            yield chunk

    store.upload_stream(f"{key}/disk.img", counted())
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    exports = ExportThread().start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench"
                     ).create_bucket(Bucket=BUCKET)
        target = S3Target.model_validate({"endpoint": endpoint, "bucket": BUCKET,
                                          "credentialsSecretRef": {"name": "unused"}})
        store = S3Store(target, SecretStr("bench"), SecretStr("bench"))
        exports.server.entries[("bench", "disk")] = ExportEntry(
            token=TOKEN, volumes={"disk": ExportedVolume("disk", "bench/disk", size)})
        url = exports.server.export_url("bench", "disk") + "/volumes/disk/disk.img"
        link = ExportLink(url, exports.server.ca_pem, "disk")
        results: dict[str, list[float]] = {"raw copy": [], "backup": []}
        for i in range(args.repeat):
            for name, fn in (("raw copy", run_raw), ("backup", run_backup)):
                key = f"{name.replace(' ', '-')}-{i}"
                start = time.perf_counter()
                moved = fn(store, link, key)
                elapsed = time.perf_counter() - start
                assert moved == size, (moved, size)
                results[name].append(size / elapsed / 1e6)
                store.delete_prefix(key)
        store.close()
    finally:
        exports.stop()
        moto.stop()

    raw = statistics.median(results["raw copy"])
    backup = statistics.median(results["backup"])
    print(f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPUs, "
          f"Python {platform.python_version()}")
    print(f"- disk: {args.size_mib} MiB of incompressible data (the lab's disk stream), "
          f"{args.repeat} runs each, alternating\n")
    print("| path | MB/s (median) | runs MB/s |")
    print("|---|---|---|")
    for name, values in results.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):.0f} | {runs} |")
    print(f"\nbackup / raw copy: **{backup / raw:.2f}x** (goal >= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
