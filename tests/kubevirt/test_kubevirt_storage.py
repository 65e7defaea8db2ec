"""Snapshots, restores, exports (checksums over HTTPS) and DataVolumes on the lab
(k8s-anchors §1.6, §1.8, §1.9)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from hosted_engine.lab.kubevirt import GUEST_HTTP_ANNOTATION
from hosted_engine.lab.kubevirt.cdi import (
    CDICONFIGS,
    CONTENT_SHA_ANNOTATION,
    CONTENT_SIZE_ANNOTATION,
)
from hosted_engine.lab.kubevirt.diskstream import disk_sha256, read_disk
from hosted_engine.lab.kubevirt.export import TOKEN_HEADER, _make_certificates
from hosted_engine.lab.kubevirt.resources import (
    DATAVOLUMES,
    EXPORTS,
    RESTORES,
    SNAPSHOT_CONTENTS,
    SNAPSHOTS,
    VMS,
)
from hosted_engine.lab.sim.api import CONFIGMAPS, PVCS, SECRETS, Obj
from kvlab import NS, KubeVirtLab, vm_body

DISK_SIZE = 3 * 1024 * 1024 + 17  # bytes: a few stream blocks and a partial one


async def _disk_vm(kvlab: KubeVirtLab, name: str, strategy: str, **kwargs: object) -> None:
    await kvlab.api.create(PVCS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{name}-disk", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "shared",
                 "resources": {"requests": {"storage": str(DISK_SIZE)}}}}, NS)
    volumes = [{"name": "root", "persistentVolumeClaim": {"claimName": f"{name}-disk"}}]
    await kvlab.api.create(VMS, vm_body(name, strategy, volumes=volumes, **kwargs), NS)  # type: ignore[arg-type]


async def _wait_field(kvlab: KubeVirtLab, res: object, name: str, field: str,
                      value: object, timeout: float = 10.0) -> Obj:
    async def ok() -> bool:
        obj = await kvlab.api.get(res, name, NS)  # type: ignore[arg-type]
        return bool(obj and (obj.get("status") or {}).get(field) == value)

    await kvlab.wait(ok, timeout)
    obj = await kvlab.api.get(res, name, NS)  # type: ignore[arg-type]
    assert obj is not None
    return obj


def _snapshot(name: str, vm: str) -> Obj:
    return {"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine",
                                "name": vm}}}


async def test_snapshot_of_a_running_vm_with_and_without_agent(kvlab: KubeVirtLab) -> None:
    await _disk_vm(kvlab, "engine", "Always",
                   annotations={GUEST_HTTP_ANNOTATION: "engine"})
    await _disk_vm(kvlab, "plain", "Always")
    await _disk_vm(kvlab, "off", "Halted")
    for vm in ("engine", "plain"):
        await kvlab.wait_phase(vm, "Running")
    await kvlab.wait_printable("off", "Stopped")
    for vm in ("engine", "plain", "off"):
        await kvlab.api.create(SNAPSHOTS, _snapshot(f"snap-{vm}", vm), NS)
    expected = {"engine": ["Online", "GuestAgent"], "plain": ["Online", "NoGuestAgent"],
                "off": []}
    for vm, indications in expected.items():
        snap = await _wait_field(kvlab, SNAPSHOTS, f"snap-{vm}", "phase", "Succeeded")
        status = snap["status"]
        assert status["readyToUse"] is True
        assert status["indications"] == indications
        conds = {c["type"]: c["status"] for c in status["conditions"]}
        assert conds["Ready"] == "True" and conds["Progressing"] == "False"
        content = await kvlab.api.get(SNAPSHOT_CONTENTS,
                                      status["virtualMachineSnapshotContentName"], NS)
        assert content is not None
        [backup] = content["spec"]["volumeBackups"]
        assert backup["persistentVolumeClaim"]["metadata"]["name"] == f"{vm}-disk"
        assert content["spec"]["source"]["virtualMachine"]["metadata"]["name"] == vm
        assert status["snapshotVolumes"]["includedVolumes"] == ["root"]
    vm_obj = await kvlab.vm("engine")
    assert not vm_obj["status"].get("snapshotInProgress")


async def test_snapshot_of_a_missing_vm_fails_at_its_deadline(kvlab: KubeVirtLab) -> None:
    body = _snapshot("orphan", "ghost")
    body["spec"]["failureDeadline"] = "30s"  # 0.3 s with the tests' API time scale
    await kvlab.api.create(SNAPSHOTS, body, NS)
    snap = await _wait_field(kvlab, SNAPSHOTS, "orphan", "phase", "Failed")
    assert snap["status"]["readyToUse"] is False
    assert "deadline" in snap["status"]["error"]["message"]


async def test_restore_stops_the_target_and_brings_back_the_snapshot(kvlab: KubeVirtLab) -> None:
    await _disk_vm(kvlab, "db", "Always")
    await kvlab.wait_phase("db", "Running")
    await kvlab.api.create(SNAPSHOTS, _snapshot("before", "db"), NS)
    await _wait_field(kvlab, SNAPSHOTS, "before", "readyToUse", True)
    restore = {"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
               "metadata": {"name": "back", "namespace": NS},
               "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine",
                                   "name": "db"},
                        "virtualMachineSnapshotName": "before",
                        "targetReadinessPolicy": "StopTarget"}}
    await kvlab.api.create(RESTORES, restore, NS)
    done = await _wait_field(kvlab, RESTORES, "back", "complete", True, timeout=15)
    [item] = done["status"]["restores"]
    claim = item["persistentVolumeClaim"]
    assert claim.startswith("restore-") and claim.endswith("-root")
    conds = {c["type"]: c["status"] for c in done["status"]["conditions"]}
    assert conds["Ready"] == "True"
    vm = await kvlab.vm("db")
    assert vm["spec"]["runStrategy"] == "Halted"
    [volume] = vm["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    restored = await kvlab.api.get(PVCS, claim, NS)
    original = await kvlab.api.get(PVCS, "db-disk", NS)
    assert restored is not None and original is not None
    seed = "lab.hostedengine.io/disk-seed"
    assert restored["metadata"]["annotations"][seed] == "vms/db-disk"
    await kvlab.wait_printable("db", "Stopped")
    await kvlab.subresource("db", "start")
    running = await kvlab.wait_phase("db", "Running")
    [vol] = running["spec"]["volumes"]
    assert vol["persistentVolumeClaim"]["claimName"] == claim


async def test_restore_with_fail_immediate_refuses_a_running_target(kvlab: KubeVirtLab) -> None:
    await _disk_vm(kvlab, "db", "Always")
    await kvlab.wait_phase("db", "Running")
    await kvlab.api.create(SNAPSHOTS, _snapshot("s", "db"), NS)
    await _wait_field(kvlab, SNAPSHOTS, "s", "readyToUse", True)
    restore = {"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
               "metadata": {"name": "r", "namespace": NS},
               "spec": {"target": {"kind": "VirtualMachine", "name": "db"},
                        "virtualMachineSnapshotName": "s",
                        "targetReadinessPolicy": "FailImmediate"}}
    await kvlab.api.create(RESTORES, restore, NS)

    async def failed() -> bool:
        obj = await kvlab.api.get(RESTORES, "r", NS)
        conds = {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get(
            "conditions") or []}
        return conds.get("Failure") == "True"

    await kvlab.wait(failed)
    assert (await kvlab.vm("db"))["spec"]["runStrategy"] == "Always"


async def _download(export: Obj, token: str, url: str) -> bytes:
    context = ssl.create_default_context(cadata=export["status"]["links"]["external"]["cert"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, \
            session.get(url, headers={TOKEN_HEADER: token}) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_export_of_a_stopped_vm_serves_its_disk_with_a_checksum(kvlab: KubeVirtLab) -> None:
    await _disk_vm(kvlab, "engine", "Always")
    await kvlab.wait_phase("engine", "Running")
    export = {"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
              "metadata": {"name": "backup", "namespace": NS},
              "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine",
                                  "name": "engine"}}}
    await kvlab.api.create(EXPORTS, export, NS)
    pending = await _wait_field(kvlab, EXPORTS, "backup", "phase", "Pending")
    ready_cond = next(c for c in pending["status"]["conditions"] if c["type"] == "Ready")
    assert "is running" in ready_cond["message"]
    await kvlab.subresource("engine", "stop")
    ready = await _wait_field(kvlab, EXPORTS, "backup", "phase", "Ready")
    status = ready["status"]
    secret = await kvlab.api.get(SECRETS, status["tokenSecretRef"], NS)
    assert secret is not None
    token = base64.b64decode(secret["data"]["token"]).decode()
    [volume] = status["links"]["external"]["volumes"]
    assert volume["name"] == "root"
    raw = next(f["url"] for f in volume["formats"] if f["format"] == "raw")
    assert raw.startswith("https://127.0.0.1:")
    data = await _download(ready, token, raw)
    assert len(data) == DISK_SIZE
    assert hashlib.sha256(data).hexdigest() == disk_sha256("vms/engine-disk", DISK_SIZE)
    # Starting the VM takes the export down again.
    await kvlab.subresource("engine", "start")
    await _wait_field(kvlab, EXPORTS, "backup", "phase", "Pending")


async def test_export_of_a_snapshot_while_the_vm_runs(kvlab: KubeVirtLab) -> None:
    await _disk_vm(kvlab, "engine", "Always")
    await kvlab.wait_phase("engine", "Running")
    await kvlab.api.create(SNAPSHOTS, _snapshot("nightly", "engine"), NS)
    await _wait_field(kvlab, SNAPSHOTS, "nightly", "readyToUse", True)
    await kvlab.api.create(SECRETS, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "my-token", "namespace": NS},
        "data": {"token": base64.b64encode(b"t0ken").decode()}}, NS)
    export = {"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
              "metadata": {"name": "from-snap", "namespace": NS},
              "spec": {"tokenSecretRef": "my-token",
                       "source": {"apiGroup": "snapshot.kubevirt.io",
                                  "kind": "VirtualMachineSnapshot", "name": "nightly"}}}
    await kvlab.api.create(EXPORTS, export, NS)
    ready = await _wait_field(kvlab, EXPORTS, "from-snap", "phase", "Ready")
    assert ready["status"]["virtualMachineName"] == "engine"
    [volume] = ready["status"]["links"]["external"]["volumes"]
    gz = next(f["url"] for f in volume["formats"] if f["format"] == "gzip")
    import gzip

    data = gzip.decompress(await _download(ready, "t0ken", gz))
    assert hashlib.sha256(data).hexdigest() == disk_sha256("vms/engine-disk", DISK_SIZE)


def _dv(name: str, source: Obj, size: str = "16Mi") -> Obj:
    return {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"source": source,
                     "storage": {"accessModes": ["ReadWriteMany"], "storageClassName": "shared",
                                 "resources": {"requests": {"storage": size}}}}}


IMAGE = hashlib.shake_256(b"lab image").digest(2 * 1024 * 1024 + 5)  # raw bytes of the image
IMAGE_GZ = gzip.compress(IMAGE, mtime=0)  # what the server sends
USER, PASSWORD = "importer", "pa55-not-logged"


@contextlib.asynccontextmanager
async def _image_server(tls: bool = False) -> AsyncIterator[tuple[str, str]]:
    """An HTTP(S) server with the image gzipped behind basic auth; yields (base URL, CA PEM)."""
    async def image(request: web.Request) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            raise web.HTTPUnauthorized()
        return web.Response(body=IMAGE_GZ, content_type="application/gzip")

    app = web.Application()
    app.router.add_get("/engine.img.gz", image)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context, ca_pem = None, ""
    with tempfile.TemporaryDirectory() as tmp:
        if tls:
            ca_pem, cert, key = _make_certificates(Path(tmp), "127.0.0.1")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", ca_pem
        finally:
            await runner.cleanup()


async def _dv_done(kvlab: KubeVirtLab, name: str, restarts: int = 0) -> Obj:
    """The DataVolume once Succeeded, or once it has restarted ``restarts`` times."""
    async def done() -> bool:
        st = ((await kvlab.api.get(DATAVOLUMES, name, NS)) or {}).get("status") or {}
        running = next((c for c in st.get("conditions") or [] if c["type"] == "Running"), {})
        return st.get("phase") == "Succeeded" or (
            restarts > 0 and int(st.get("restartCount") or 0) >= restarts
            and running.get("reason") == "Error")  # between attempts (the back-off)

    try:
        await kvlab.wait(done)
    except TimeoutError:
        raise AssertionError(((await kvlab.api.get(DATAVOLUMES, name, NS)) or {}).get(
            "status")) from None
    obj = await kvlab.api.get(DATAVOLUMES, name, NS)
    assert obj is not None
    return obj


def _running(dv: Obj) -> Obj:
    return next(c for c in dv["status"]["conditions"] if c["type"] == "Running")


async def _creds(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(SECRETS, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "image-creds", "namespace": NS},
        "data": {"accessKeyId": base64.b64encode(USER.encode()).decode(),
                 "secretKey": base64.b64encode(PASSWORD.encode()).decode()}}, NS)


async def test_datavolume_http_import_downloads_the_image_into_the_claim(
        kvlab: KubeVirtLab) -> None:
    await _creds(kvlab)
    async with _image_server() as (base, _):
        await kvlab.api.create(DATAVOLUMES, _dv("image", {"http": {
            "url": f"{base}/engine.img.gz", "secretRef": "image-creds"}}), NS)
        seen: list[str] = []

        async def succeeded() -> bool:
            obj = await kvlab.api.get(DATAVOLUMES, "image", NS)
            phase = ((obj or {}).get("status") or {}).get("phase", "")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            return phase == "Succeeded"

        await kvlab.wait(succeeded)
        assert seen[0] == "Pending" and seen[-1] == "Succeeded"
        final = await kvlab.api.get(DATAVOLUMES, "image", NS)
        assert final is not None and final["status"]["progress"] == "100.0%"
    pvc = await kvlab.api.get(PVCS, "image", NS)
    assert pvc is not None and pvc["status"]["phase"] == "Bound"
    notes = pvc["metadata"]["annotations"]
    # the claim holds the image's raw (gunzipped) bytes, then zeros up to its size
    assert notes[CONTENT_SHA_ANNOTATION] == hashlib.sha256(IMAGE).hexdigest()
    assert notes[CONTENT_SIZE_ANNOTATION] == str(len(IMAGE))
    seed = notes["lab.hostedengine.io/disk-seed"]
    assert read_disk(seed, len(IMAGE) + 10) == IMAGE + bytes(10)


async def test_datavolume_import_failures_restart_the_importer_like_cdi(
        kvlab: KubeVirtLab) -> None:
    await _creds(kvlab)
    async with _image_server(tls=True) as (base, ca_pem):
        url = f"{base}/engine.img.gz"
        # the server's CA is not trusted without certConfigMap: TLS is always verified
        await kvlab.api.create(DATAVOLUMES, _dv("untrusted", {"http": {
            "url": url, "secretRef": "image-creds"}}), NS)
        # a wrong URL, a wrong checksum, an image larger than the claim
        await kvlab.api.create(CONFIGMAPS, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "image-ca", "namespace": NS}, "data": {"ca.pem": ca_pem}}, NS)
        good = {"secretRef": "image-creds", "certConfigMap": "image-ca"}
        await kvlab.api.create(DATAVOLUMES, _dv("missing", {"http": {
            "url": f"{base}/nothing.img", **good}}), NS)
        await kvlab.api.create(DATAVOLUMES, _dv("bad-sum", {"http": {
            "url": url, "checksum": "sha256:" + "0" * 64, **good}}), NS)
        await kvlab.api.create(DATAVOLUMES, _dv("small", {"http": {"url": url, **good}},
                                                size="1Mi"), NS)
        good_sum = "sha256:" + hashlib.sha256(IMAGE_GZ).hexdigest()
        await kvlab.api.create(DATAVOLUMES, _dv("trusted", {"http": {
            "url": url, "checksum": good_sum, **good}}), NS)
        untrusted = await _dv_done(kvlab, "untrusted", restarts=2)
        missing = await _dv_done(kvlab, "missing", restarts=2)
        bad_sum = await _dv_done(kvlab, "bad-sum", restarts=1)
        small = await _dv_done(kvlab, "small", restarts=1)
        trusted = await _dv_done(kvlab, "trusted")
    for dv in (untrusted, missing, bad_sum, small):
        assert dv["status"]["phase"] == "ImportInProgress", dv["status"]  # never Failed
        assert _running(dv)["status"] == "False" and _running(dv)["reason"] == "Error"
    assert "certificate signed by unknown authority" in _running(untrusted)["message"]
    assert _running(missing)["message"] == (
        "Unable to connect to http data source: expected status code 200, got 404. "
        "Status: 404 Not Found")
    assert _running(bad_sum)["message"].startswith("checksum mismatch: expected sha256:000")
    assert "larger than the reported available storage" in _running(small)["message"]
    assert trusted["status"]["phase"] == "Succeeded"
    pvc = await kvlab.api.get(PVCS, "trusted", NS)
    assert pvc is not None
    assert pvc["metadata"]["annotations"][CONTENT_SHA_ANNOTATION] == \
        hashlib.sha256(IMAGE).hexdigest()
    assert PASSWORD not in json.dumps([untrusted, missing, bad_sum, small, trusted])


async def test_datavolume_upload_through_the_upload_proxy_with_a_token(
        kvlab: KubeVirtLab) -> None:
    cdi = kvlab.kv.storage.cdi
    await kvlab.api.create(DATAVOLUMES, _dv("upload", {"upload": {}}), NS)
    ready = await _wait_field(kvlab, DATAVOLUMES, "upload", "phase", "UploadReady")
    assert _running(ready)["status"] == "True"
    config = await kvlab.api.get(CDICONFIGS, "config")
    assert config is not None and config["status"]["uploadProxyURL"] == cdi.upload_proxy
    bundle = await kvlab.api.get(CONFIGMAPS, "cdi-uploadproxy-signer-bundle", "cdi")
    assert bundle is not None
    context = ssl.create_default_context(cadata=bundle["data"]["ca-bundle.crt"])
    url = f"https://{config['status']['uploadProxyURL']}/v1beta1/upload"
    request = {"apiVersion": "upload.cdi.kubevirt.io/v1beta1", "kind": "UploadTokenRequest",
               "metadata": {"name": "upload"}, "spec": {"pvcName": "upload"}}
    token = (await cdi.token_request(NS, request))["status"]["token"]
    body = IMAGE_GZ
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, ssl=context,
                                headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with session.post(url, data=body, ssl=context,
                                headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200, await resp.text()
        # done: a second upload finds the DataVolume no longer UploadReady
        async with session.post(url, data=body, ssl=context,
                                headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 503
    done = await kvlab.api.get(DATAVOLUMES, "upload", NS)
    assert done is not None and done["status"]["phase"] == "Succeeded"
    pvc = await kvlab.api.get(PVCS, "upload", NS)
    assert pvc is not None
    assert pvc["metadata"]["annotations"][CONTENT_SHA_ANNOTATION] == \
        hashlib.sha256(IMAGE).hexdigest()


async def test_vm_with_a_datavolume_template_provisions_before_it_starts(
    kvlab: KubeVirtLab,
) -> None:
    volumes = [{"name": "root", "dataVolume": {"name": "tpl-root"}}]
    body = vm_body("tpl", "Always", volumes=volumes)
    body["spec"]["dataVolumeTemplates"] = [{
        "metadata": {"name": "tpl-root"},
        "spec": {"source": {"blank": {}},
                 "storage": {"accessModes": ["ReadWriteMany"], "storageClassName": "shared",
                             "resources": {"requests": {"storage": "1Gi"}}}}}]
    await kvlab.api.create(VMS, body, NS)
    vmi = await kvlab.wait_phase("tpl", "Running")
    dv = await kvlab.api.get(DATAVOLUMES, "tpl-root", NS)
    assert dv is not None and dv["status"]["phase"] == "Succeeded"
    assert dv["metadata"]["ownerReferences"][0]["kind"] == "VirtualMachine"
    cond = next(c for c in vmi["status"]["conditions"] if c["type"] == "LiveMigratable")
    assert cond["status"] == "True"


async def test_engine_imported_from_a_broken_image_never_gets_healthy(
    kvlab: KubeVirtLab,
) -> None:
    from hosted_engine.lab.kubevirt.guest import ENGINE_HEALTH_PATH

    await _creds(kvlab)
    async with _image_server() as (base, _):
        volumes = [{"name": "root", "dataVolume": {"name": "engine-root"}}]
        body = vm_body("engine", "Always", volumes=volumes,
                       annotations={GUEST_HTTP_ANNOTATION: "engine"})
        body["spec"]["dataVolumeTemplates"] = [{
            "metadata": {"name": "engine-root"},
            "spec": {"source": {"http": {"url": f"{base}/engine.img.gz?v=4.6-broken",
                                         "secretRef": "image-creds"}},
                     "storage": {"accessModes": ["ReadWriteMany"], "storageClassName": "shared",
                                 "resources": {"requests": {"storage": "1Gi"}}}}}]
        await kvlab.api.create(VMS, body, NS)
        vmi = await kvlab.wait_phase("engine", "Running")
    url = f"http://{vmi['status']['interfaces'][0]['ipAddress']}:8080{ENGINE_HEALTH_PATH}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 503 and "DB Up" not in await resp.text()


async def test_in_place_restore_replaces_the_claim(kvlab: KubeVirtLab) -> None:
    await _disk_vm(kvlab, "db", "Halted")
    await kvlab.wait_printable("db", "Stopped")
    await kvlab.api.create(SNAPSHOTS, _snapshot("s", "db"), NS)
    await _wait_field(kvlab, SNAPSHOTS, "s", "readyToUse", True)
    before = await kvlab.api.get(PVCS, "db-disk", NS)
    assert before is not None
    restore = {"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
               "metadata": {"name": "in-place", "namespace": NS},
               "spec": {"target": {"kind": "VirtualMachine", "name": "db"},
                        "virtualMachineSnapshotName": "s",
                        "volumeRestorePolicy": "InPlace"}}
    await kvlab.api.create(RESTORES, restore, NS)
    done = await _wait_field(kvlab, RESTORES, "in-place", "complete", True, timeout=15)
    assert done["status"]["restores"][0]["persistentVolumeClaim"] == "db-disk"
    after = await kvlab.api.get(PVCS, "db-disk", NS)
    assert after is not None and after["metadata"]["uid"] != before["metadata"]["uid"]
    assert after["metadata"]["annotations"]["lab.hostedengine.io/disk-seed"] == "vms/db-disk"


async def test_deleting_a_snapshot_deletes_its_content(kvlab: KubeVirtLab) -> None:
    await _disk_vm(kvlab, "db", "Halted")
    await kvlab.api.create(SNAPSHOTS, _snapshot("s", "db"), NS)
    snap = await _wait_field(kvlab, SNAPSHOTS, "s", "readyToUse", True)
    content = snap["status"]["virtualMachineSnapshotContentName"]
    await kvlab.api.delete(SNAPSHOTS, "s", NS)

    async def gone() -> bool:
        return (await kvlab.api.get(SNAPSHOTS, "s", NS) is None
                and await kvlab.api.get(SNAPSHOT_CONTENTS, content, NS) is None)

    await kvlab.wait(gone)


async def test_export_is_removed_after_its_ttl(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(PVCS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                 "resources": {"requests": {"storage": "1Mi"}}}}, NS)
    export = {"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
              "metadata": {"name": "short", "namespace": NS},
              "spec": {"ttlDuration": "1m",  # 0.6 s with the tests' API time scale
                       "source": {"apiGroup": "", "kind": "PersistentVolumeClaim",
                                  "name": "data"}}}
    await kvlab.api.create(EXPORTS, export, NS)
    ready = await _wait_field(kvlab, EXPORTS, "short", "phase", "Ready")
    assert ready["status"]["ttlExpirationTime"]

    async def expired() -> bool:
        return await kvlab.api.get(EXPORTS, "short", NS) is None

    await kvlab.wait(expired)
    assert ("vms", "short") not in kvlab.kv.exports.entries
