"""The HostedEngine's pure parts: settings mapping, rendering, the observation built from API
objects, the status patch and the notification filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hosted_engine.logic import engine_vm as ev
from hosted_engine.logic import ha
from hosted_engine.models.hostedengine import HostedEngineSpec

T0 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def spec(**extra: Any) -> HostedEngineSpec:
    body: dict[str, Any] = {
        "vm": {
            "memory": "16Gi",
            "disk": {"storageDomain": "hosted-engine"},
            "image": {"containerDisk": {"image": "quay.io/ovirt/engine:4.5"}},
            "network": {"fqdn": "engine.example.com"},
        },
        **extra,
    }
    return HostedEngineSpec.model_validate(body)


def iso(t: datetime) -> str:
    return t.isoformat()


def node(name: str, *, ready: bool = True, memory: str = "64Gi",
         network_unavailable: bool = False) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": "True" if ready else "False",
              "lastHeartbeatTime": iso(T0)}]
    if network_unavailable:
        conds.append({"type": "NetworkUnavailable", "status": "True"})
    return {"metadata": {"name": name}, "status": {"conditions": conds,
                                                   "allocatable": {"memory": memory}}}


def host(name: str, *, deploy: bool = True, power: bool = True, **status: Any
         ) -> dict[str, Any]:
    spec_: dict[str, Any] = {"nodeName": name, "hostedEngine": "deploy" if deploy else "undeploy"}
    if power:
        spec_["powerManagement"] = {"type": "redfish", "address": "10.0.0.1"}
    return {"metadata": {"name": name, "labels": {}, "annotations": {}},
            "spec": spec_, "status": status}


# --------------------------------------------------------------------------------------------
# settings


def test_settings_map_the_crd_and_keep_code_defaults_for_the_rest() -> None:
    s = ev.settings_from_spec(spec(
        health={"interval": "2s", "timeout": "1s", "failureThreshold": 4,
                "restartGrace": "30s", "startupGrace": "5m"},
        failover={"silenceThreshold": "7s", "requireFencing": False, "moveThreshold": 600,
                  "startRetries": {"limit": 3, "initialBackoff": "2s", "maxBackoff": "1m"}},
        sparesCount=2, shutdownTimeout="45s",
    ))
    assert s.health_interval == timedelta(seconds=2)
    assert s.health_timeout == timedelta(seconds=1)
    assert s.failures_before_bad == 4
    assert s.restart_grace == timedelta(seconds=30)
    assert s.startup_grace == timedelta(minutes=5)
    assert s.host_silence == timedelta(seconds=7)
    assert s.fencing_required is False
    assert s.move_hysteresis == 600
    assert s.max_start_attempts == 3
    assert s.backoff.delay(1) == timedelta(seconds=2)
    assert s.backoff.delay(10) == timedelta(minutes=1)
    assert s.spares == 2
    assert s.stop_timeout == timedelta(seconds=45)
    # not in the CRD: the machine's own defaults
    assert s.fence_timeout == ha.Settings().fence_timeout
    assert s.stable_period == ha.Settings().stable_period


def test_user_request_and_run_strategy() -> None:
    assert ev.user_request(spec()) == ha.UserRequest(True, False, 0)
    assert ev.user_request(spec(running=False, stopMode="PowerOff", resetSeq=3)) == \
        ha.UserRequest(False, True, 3)
    assert ev.run_strategy(spec(), T0) == "Always"
    gm = spec(maintenance={"mode": "global", "until": iso(T0 + timedelta(minutes=5))})
    assert ev.run_strategy(gm, T0) == "Manual"
    assert ev.run_strategy(gm, T0 + timedelta(minutes=6)) == "Always"  # expired


def test_health_url_fills_fqdn_and_ip() -> None:
    assert ev.health_url(spec(), None) == \
        "http://engine.example.com/ovirt-engine/services/health"
    s = spec(health={"url": "http://{ip}:8080/ovirt-engine/services/health"})
    assert ev.health_url(s, None) is None
    assert ev.health_url(s, "127.77.0.9") == "http://127.77.0.9:8080/ovirt-engine/services/health"


# --------------------------------------------------------------------------------------------
# rendering


def test_vm_renders_disk_on_the_domain_cloud_init_and_placement() -> None:
    disk = ev.DiskTarget("sd-hosted-engine", "Block", ("ReadWriteMany",))
    vm = ev.render_vm("ovirt", "engine", spec(), mac="00:16:3e:00:00:01", disk=disk,
                      strategy="Always", placement=[("n1", 3400), ("n2", 0), ("n3", 1700)],
                      annotations={"lab.hostedengine.io/guest-http": "engine",
                                   "hostedengine.io/fence-request": "x/1",
                                   "kubectl.kubernetes.io/last-applied-configuration": "{}"})
    assert vm["spec"]["runStrategy"] == "Always"
    (dv,) = vm["spec"]["dataVolumeTemplates"]
    storage = dv["spec"]["storage"]
    assert storage == {"storageClassName": "sd-hosted-engine", "accessModes": ["ReadWriteMany"],
                       "volumeMode": "Block", "resources": {"requests": {"storage": "58Gi"}}}
    assert dv["spec"]["source"] == {"registry": {"url": "docker://quay.io/ovirt/engine:4.5"}}
    tpl = vm["spec"]["template"]
    assert tpl["metadata"]["labels"][ev.ENGINE_VM_LABEL] == "engine"
    assert tpl["metadata"]["annotations"] == {"lab.hostedengine.io/guest-http": "engine"}
    assert tpl["spec"]["domain"]["memory"] == {"guest": "16Gi"}
    assert tpl["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == \
        "00:16:3e:00:00:01"
    volumes = {v["name"]: v for v in tpl["spec"]["volumes"]}
    assert volumes["cloudinit"]["cloudInitNoCloud"] == {"secretRef": {"name": "engine-cloudinit"}}
    na = tpl["spec"]["affinity"]["nodeAffinity"]
    (term,) = na["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": ev.HOSTNAME_LABEL, "operator": "NotIn", "values": ["n2"]} in \
        term["matchExpressions"]
    weights = {p["preference"]["matchExpressions"][0]["values"][0]: p["weight"]
               for p in na["preferredDuringSchedulingIgnoredDuringExecution"]}
    assert weights == {"n1": 99, "n3": 50}


def test_affinity_prefers_the_chosen_host() -> None:
    aff = ev.affinity([("n1", 3400), ("n2", 3400)], prefer="n2")
    weights = {p["preference"]["matchExpressions"][0]["values"][0]: p["weight"]
               for p in aff["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]}
    assert weights == {"n1": 99, "n2": 100}


def test_url_and_pvc_image_sources() -> None:
    disk = ev.DiskTarget("c")
    s = spec(vm={"memory": "16Gi", "disk": {"storageDomain": "d"},
                 "image": {"url": {"url": "https://x.example/e.qcow2",
                                   "certConfigMap": "ca"}},
                 "network": {"fqdn": "e.example.com"}})
    vm = ev.render_vm("ns", "e", s, mac="00:16:3e:00:00:02", disk=disk, strategy="Always")
    assert vm["spec"]["dataVolumeTemplates"][0]["spec"]["source"] == {
        "http": {"url": "https://x.example/e.qcow2", "certConfigMap": "ca"}}
    s = spec(vm={"memory": "16Gi", "disk": {"storageDomain": "d"},
                 "image": {"pvc": {"claimName": "golden"}}, "network": {"fqdn": "e.example.com"}})
    vm = ev.render_vm("ns", "e", s, mac="00:16:3e:00:00:02", disk=disk, strategy="Manual")
    assert vm["spec"]["dataVolumeTemplates"][0]["spec"]["source"] == {
        "pvc": {"name": "golden", "namespace": "ns"}}
    assert vm["spec"]["runStrategy"] == "Manual"


def test_cloud_init_and_static_network() -> None:
    s = spec(vm={"memory": "16Gi", "disk": {"storageDomain": "d"},
                 "image": {"containerDisk": {"image": "i:1"}},
                 "network": {"fqdn": "engine.example.com", "bootProtocol": "static",
                             "address": "192.0.2.10", "prefix": 24, "gateway": "192.0.2.1",
                             "dnsServers": ["192.0.2.53"]},
                 "cloudInit": {"rootSshKeys": ["ssh-ed25519 AAAA k"],
                               "rootSshAccess": "without-password",
                               "etcHosts": ["192.0.2.10 engine.example.com engine"],
                               "extraUserData": "packages: [vim]\n"}})
    text = ev.cloud_init_user_data(s, "rootpw", "adminpw")
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert data["fqdn"] == "engine.example.com" and data["hostname"] == "engine"
    assert data["ssh_authorized_keys"] == ["ssh-ed25519 AAAA k"]
    assert data["chpasswd"]["users"][0]["password"] == "rootpw"
    assert data["packages"] == ["vim"]
    files = {f["path"]: f for f in data["write_files"]}
    assert files["/etc/ssh/sshd_config.d/50-hosted-engine.conf"]["content"] == \
        "PermitRootLogin prohibit-password\n"
    assert files["/etc/hosts"]["append"] is True
    net = yaml.safe_load(ev.network_data(s, "00:16:3e:00:00:03") or "")
    eth = net["ethernets"]["eth0"]
    assert eth["addresses"] == ["192.0.2.10/24"]
    assert eth["routes"] == [{"to": "0.0.0.0/0", "via": "192.0.2.1"}]
    assert eth["nameservers"] == {"addresses": ["192.0.2.53"]}
    assert ev.network_data(spec(), "00:16:3e:00:00:03") is None
    secret = ev.render_secret("ns", "e", text, None)
    assert secret["stringData"] == {"userdata": text}
    vm = ev.render_vm("ns", "e", s, mac="00:16:3e:00:00:03", disk=ev.DiskTarget("c"),
                      strategy="Always")
    vols = {v["name"]: v for v in vm["spec"]["template"]["spec"]["volumes"]}
    assert vols["cloudinit"]["cloudInitNoCloud"]["networkDataSecretRef"] == {
        "name": "e-cloudinit"}


# --------------------------------------------------------------------------------------------
# observation


def test_allowed_hosts_filters_by_deploy_names_and_selector() -> None:
    hosts = [host("a"), host("b"), host("c", deploy=False)]
    hosts[1]["metadata"]["labels"] = {"zone": "x"}
    assert [h["metadata"]["name"] for h in ev.allowed_hosts(spec(), hosts)] == ["a", "b"]
    s = spec(hosts={"selector": {"matchLabels": {"zone": "x"}}})
    assert [h["metadata"]["name"] for h in ev.allowed_hosts(s, hosts)] == ["b"]
    s = spec(hosts={"names": ["a"]})
    assert [h["metadata"]["name"] for h in ev.allowed_hosts(s, hosts)] == ["a"]


def test_fence_status_follows_the_hosts_interface() -> None:
    me = ev.fence_requester("ns", "e")
    h = host("a")
    assert ev.fence_status(h, me)[0] is ha.FenceStatus.NONE
    h["metadata"]["annotations"][ev.FENCE_REQUEST_ANNOTATION] = f"{me}/r1"
    assert ev.fence_status(h, me)[0] is ha.FenceStatus.REQUESTED
    for phase, want in (("Refused", ha.FenceStatus.REQUESTED),
                        ("PoweringOff", ha.FenceStatus.IN_PROGRESS),
                        ("Failed", ha.FenceStatus.FAILED),
                        ("Confirmed", ha.FenceStatus.CONFIRMED)):
        h["status"] = {"fencing": {"requestID": "r1", "phase": phase, "message": "m"}}
        assert ev.fence_status(h, me)[0] is want, phase
    # someone else's confirmed fence (the Host's own NonResponsive handling) counts too
    other = host("b", state="Fenced", fencing={"requestID": "x", "phase": "Confirmed"})
    assert ev.fence_status(other, me)[0] is ha.FenceStatus.CONFIRMED
    assert ev.can_fence(host("a")) and not ev.can_fence(host("a", power=False))


def test_observe_builds_hosts_vm_and_request() -> None:
    vmi = {"metadata": {"name": "e", "uid": "u1"},
           "status": {"phase": "Running", "nodeName": "a",
                      "conditions": [{"type": "LiveMigratable", "status": "True"}]}}
    world = ev.World(
        vm={"metadata": {"name": "e"}, "spec": {"runStrategy": "Always"}},
        vmi=vmi, vmi_since=T0,
        hosts=(host("a"), host("b"), host("c", power=False)),
        nodes={"a": node("a"), "b": node("b", network_unavailable=True),
               "c": node("c", ready=False)},
        leases={"a": T0, "b": T0},
        used_memory={"a": 60 * 1024**3},
        probes=(ha.Probe(T0, ha.ProbeResult.OK),),
    )
    obs, h2n = ev.observe(spec(), world, "ns", "e")
    assert h2n == {"a": "a", "b": "b", "c": "c"}
    hosts = {h.name: h for h in obs.hosts}
    assert hosts["a"].free_memory == 4 * 1024**3 and hosts["a"].last_heartbeat == T0
    assert hosts["b"].network == 0.0
    assert hosts["c"].ready is False and hosts["c"].can_fence is False
    assert obs.vm.phase is ha.VmiPhase.RUNNING and obs.vm.node == "a"
    assert obs.vm.desired_running and obs.vm.live_migratable and obs.vm.since == T0
    assert obs.engine_memory == 16 * 1024**3
    assert obs.request == ha.UserRequest(True, False, 0)


def test_vmi_translations_for_the_machine() -> None:
    vm = {"metadata": {"name": "e"}, "spec": {"runStrategy": "Always"}}
    pending = {"metadata": {"name": "e"}, "status": {"phase": "Pending"}}
    assert ev.engine_vm(ev.World(vm=vm, vmi=pending), {}).phase is None
    failed = {"metadata": {"name": "e"}, "status": {"phase": "Failed", "nodeName": "a"}}
    assert ev.engine_vm(ev.World(vm=vm, vmi=failed), {}).phase is ha.VmiPhase.FAILED
    # ended on a fenced host: reported bound there, so the machine counts a host loss
    lost = ev.engine_vm(ev.World(vm=vm, vmi=failed), {}, frozenset({"a"}))
    assert lost.phase is ha.VmiPhase.RUNNING and lost.node == "a"
    assert ev.engine_vm(ev.World(vm=None), {}).exists is False


def test_the_machine_on_observed_objects_starts_on_the_best_host() -> None:
    world = ev.World(
        vm={"metadata": {"name": "e"}, "spec": {"runStrategy": "Always"}},
        hosts=(host("a"), host("b")),
        nodes={"a": node("a"), "b": node("b")},
        leases={"a": T0, "b": T0},
        used_memory={"a": 60 * 1024**3},
    )
    obs, _ = ev.observe(spec(), world, "ns", "e")
    decision = ha.step(ev.settings_from_spec(spec()), ha.Memory(), obs, T0)
    assert ha.StartEngine("b") in decision.actions
    body = ev.status_body(decision, conditions=[], generation=3, spec=spec(), now=T0,
                          vm_info={"name": "e", "phase": None}, maintenance_since=None)
    assert body["state"] == "EngineStart" and body["observedGeneration"] == 3
    rows = {r["host"]: r for r in body["hosts"]}
    assert rows["a"]["score"] == 3000 and rows["b"]["score"] == 3400
    assert body["ha"] == ha.memory_to_dict(decision.memory)
    assert body["maintenance"] == {"mode": "none"}
    assert body["vm"] == {"name": "e"}
    conds = ev.merge_conditions([], [a for a in decision.actions
                                     if isinstance(a, ha.SetCondition)],
                                generation=3, now=T0)
    assert {c["type"] for c in conds} >= {"Available", "Degraded", "GlobalMaintenance",
                                          "SparesSatisfied", "Progressing"}


def test_status_ha_round_trips_through_the_model() -> None:
    """status.ha is typed in the CRD: the machine's memory survives the model (pruning)."""
    from hosted_engine.models.hostedengine import HaMemory

    mem = ha.Memory(state=ha.State.FENCING, since=T0, host="a", reason="r", attempts=2,
                    failed_starts=(ha.FailedStart("a", T0),), lost_host="a",
                    placement=(("a", 0), ("b", 3400)),
                    conditions=(("Available", "False", "Fencing", "m"),),
                    failover=ha.FailoverRecord("a", T0, T0), reset_seq=4)
    data = ha.memory_to_dict(mem)
    kept = HaMemory.model_validate(data).to_dict()
    assert ha.memory_from_dict(kept) == mem


@pytest.mark.parametrize(("pattern", "old", "new", "want"), [
    ("maintenance|start|stop|up|down", ha.State.ENGINE_START, ha.State.ENGINE_STARTING, True),
    ("maintenance|start|stop|up|down", ha.State.HOST_LOST, ha.State.FENCING, False),
    ("fencing", ha.State.HOST_LOST, ha.State.FENCING, True),
    ("EngineUp-", ha.State.ENGINE_UP, ha.State.ENGINE_STOP, True),
])
def test_notification_filter(pattern: str, old: ha.State, new: ha.State, want: bool) -> None:
    assert ev.notification_matches(pattern, old, new) is want


def test_notification_text_names_the_transition() -> None:
    subject, body = ev.notification_text(
        "e", "ns", "engine.example.com", ha.Notify(ha.State.ENGINE_UP, ha.State.ENGINE_STOP,
                                                   "a", "why"), T0)
    assert subject.endswith("EngineUp-EngineStop")
    assert "on host a" in body and "why" in body


def test_a_bmc_off_reading_older_than_the_heartbeat_is_stale() -> None:
    """A node powered back on (not through its BMC) renews its lease: the Host's last BMC
    reading 'Off' no longer makes it a lost host."""
    off = {"powerManagement": {"powerState": "Off", "checkedAt": iso(T0)}}
    world = ev.World(hosts=(host("a", **off), host("b", **off)),
                     nodes={"a": node("a"), "b": node("b")},
                     leases={"a": T0 + timedelta(seconds=5), "b": T0 - timedelta(seconds=5)})
    obs, _ = ev.observe(spec(), world, "ns", "e")
    hosts = {h.name: h for h in obs.hosts}
    assert hosts["a"].bmc_power is ha.PowerState.UNKNOWN
    assert hosts["b"].bmc_power is ha.PowerState.OFF


def test_affinity_never_excludes_every_scored_host() -> None:
    """Every engine host scored 0 (an operator behind its Lease events saw them all silent):
    the affinity keeps the engine-host label and excludes none of them, never
    ``NotIn [all of them]`` -- a VMI created with that can never be scheduled."""
    aff = ev.affinity([("node-1", 0), ("node-2", 0), ("node-3", 0)], prefer="node-1")
    (term,) = aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": ev.ENGINE_HOST_LABEL, "operator": "In", "values": ["true"]}]
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in aff["nodeAffinity"]


def test_affinity_excludes_the_zero_scored_hosts_while_one_is_left() -> None:
    aff = ev.affinity([("node-1", 0), ("node-2", 3400), ("node-3", 0)])
    (term,) = aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert {"key": ev.HOSTNAME_LABEL, "operator": "NotIn", "values": ["node-1", "node-3"]} in \
        term["matchExpressions"]
    # a host listed twice (two Hosts on one node) is one candidate
    aff = ev.affinity([("node-1", 0), ("node-1", 0)])
    (term,) = aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert all(e["operator"] != "NotIn" for e in term["matchExpressions"])
