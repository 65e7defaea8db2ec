"""The shared harness of the integration tests: the operator, in-process, on the lab.

- :class:`LabCluster`: a whole :class:`~hosted_engine.lab.sim.lab.Lab` (API server, nodes,
  kubelets, scheduler, PV controller, KubeVirt simulators) with fast timings in a background
  thread, the project's CRDs from ``crds/`` applied (and kopf's peering CRDs when asked for).
- :class:`OperatorThread`: the real operator -- ``kopf.operator`` with every handler of
  ``hosted_engine.handlers`` -- in its own thread and event loop, against the lab's kubeconfig,
  standalone or with peering; stopped cleanly through kopf's stop flag.
- :class:`Cluster`: what a test drives: a :class:`~hosted_engine.adapters.kube.Kube` client on
  the lab, apply/get/patch/delete helpers and waits for a condition or a field (with timeout).

Nothing here sleeps for a fixed time to let something happen: every wait polls for the
expected state and fails with the last value seen when the timeout passes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import kopf
import yaml
from hosted_engine.adapters import kube as kube_adapter
from hosted_engine.adapters.kube import Kube, Resource, hostedengine_resource
from hosted_engine.lab.sim.lab import Lab
from hosted_engine.lab.sim.runner import LabRunner
from hosted_engine.lab.sim.timings import LabTimings

ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
PEERING_CRDS = ROOT / "manifests" / "crds" / "kopf-peering.yaml"
PEERING_OBJECT = ROOT / "manifests" / "peering.yaml"
DEFAULT_TIMEOUT = 20.0
POLL = 0.05

CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
PVS = Resource("", "v1", "persistentvolumes", namespaced=False)
PVCS = Resource("", "v1", "persistentvolumeclaims", namespaced=True)
STORAGECLASSES = Resource("storage.k8s.io", "v1", "storageclasses", namespaced=False)
EVENTS = Resource("", "v1", "events", namespaced=True)
SECRETS = Resource("", "v1", "secrets", namespaced=True)
STORAGEDOMAINS = hostedengine_resource("storagedomains", namespaced=False)
HOSTEDENGINES = hostedengine_resource("hostedengines", namespaced=True)
HOSTS = hostedengine_resource("hosts", namespaced=False)

T = TypeVar("T")
log = logging.getLogger(__name__)


class WaitTimeout(AssertionError):
    pass


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEFAULT_TIMEOUT,
             describe: Callable[[], Any] | None = None) -> T:
    """Poll ``probe`` until it returns something truthy; return it. On timeout, fail naming
    ``what`` and showing ``describe()`` (the last state, for the failure message)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = describe() if describe is not None else value
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; last: {seen!r}")
        time.sleep(POLL)


def yaml_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return out


class LabCluster:
    """The lab in a background thread, with the project's CRDs installed; with
    ``peering_crds=True`` also kopf's peering CRDs and the operator's ClusterKopfPeering
    (manifests/peering.yaml), which an operator with peering on needs to start."""

    def __init__(self, hosts: int = 3, *, timings: LabTimings | None = None, bmc: bool = False,
                 peering_crds: bool = False, **lab_options: Any) -> None:
        self.lab = Lab(hosts, timings=timings or LabTimings.fast(), bmc=bmc, **lab_options)
        self.runner = LabRunner(self.lab)
        self.peering_crds = peering_crds
        self._client: Any = None
        self.kube: Kube | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.runner.kubeconfig_path

    def start(self) -> LabCluster:
        self.runner.start()
        self._client = self.runner.api_client()
        self.kube = Kube(self._client)
        paths = sorted(CRDS_DIR.glob("*.yaml"))
        if self.peering_crds:
            paths.append(PEERING_CRDS)
        for crd in yaml_documents(paths):
            self.kube.create_or_get(CRDS, crd)
        for crd in yaml_documents(paths):
            name = crd["metadata"]["name"]
            wait_for(f"CRD {name} established", lambda name=name: self._established(name))
        if self.peering_crds:
            for peering in yaml_documents([PEERING_OBJECT]):
                self.kube.create_or_get(CLUSTER_PEERINGS, peering)
        return self

    def _established(self, name: str) -> bool:
        assert self.kube is not None
        crd = self.kube.find(CRDS, name) or {}
        return any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in (crd.get("status") or {}).get("conditions") or [])

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.runner.stop()

    def __enter__(self) -> LabCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OperatorThread:
    """``kopf.operator`` with the project's handlers, in a thread with its own event loop.

    ``standalone=True`` (the default) runs without peering; otherwise the replica joins the
    ``peering`` object (its CRDs must be installed: ``LabCluster(peering_crds=True)``) with
    ``priority``. The operator's adapters are pointed at ``kubeconfig`` (process-wide, like
    ``hosted-engine run``), so run one operator per lab at a time.
    """

    def __init__(self, kubeconfig: Path, *, standalone: bool = True,
                 peering: str = "hosted-engine-operator", priority: int = 0,
                 namespaces: tuple[str, ...] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.standalone = standalone
        self.peering = peering
        self.priority = priority
        self.namespaces = namespaces
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        kwargs: dict[str, Any] = {
            "clusterwide": not self.namespaces,
            "namespaces": list(self.namespaces),
            "priority": self.priority,
            "stop_flag": self._stop,
            "ready_flag": self._ready,
            "memo": kopf.Memo(),
        }
        if self.standalone:
            kwargs["standalone"] = True
        else:
            kwargs["peering_name"] = self.peering
        try:
            loop.run_until_complete(kopf.operator(**kwargs))
        except BaseException as exc:  # reported by stop()/start()
            self.error = exc
            self._ready.set()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, timeout: float = 30.0) -> OperatorThread:
        import hosted_engine.handlers  # noqa: F401 - registers every handler

        kube_adapter.configure(str(self.kubeconfig))
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the operator did not get ready in time")
        if self.error is not None:
            raise RuntimeError(f"the operator failed to start: {self.error}") from self.error
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the operator did not stop in time")

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def conditions(obj: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The object's conditions by type."""
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def field(obj: Mapping[str, Any] | None, path: str) -> Any:
    """``field(obj, "status.probe.reachable")`` (None when any step is missing)."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


class Cluster:
    """A lab with the operator running: what integration tests use."""

    def __init__(self, lab: LabCluster, operator: OperatorThread | None) -> None:
        self.lab = lab
        self.operator = operator
        assert lab.kube is not None
        self.kube: Kube = lab.kube

    @property
    def kubeconfig(self) -> Path:
        return self.lab.kubeconfig

    # -- objects -------------------------------------------------------------------------------

    def create(self, resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.kube.create(resource, body)

    def get(self, resource: Resource, name: str, namespace: str | None = None
            ) -> dict[str, Any] | None:
        return self.kube.find(resource, name, namespace)

    def list(self, resource: Resource, namespace: str | None = None, *,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        return self.kube.list(resource, namespace, label_selector=label_selector)

    def patch(self, resource: Resource, name: str, patch: Mapping[str, Any],
              namespace: str | None = None) -> dict[str, Any]:
        return self.kube.patch(resource, name, patch, namespace)

    def patch_status(self, resource: Resource, name: str, status: Mapping[str, Any],
                     namespace: str | None = None) -> dict[str, Any]:
        return self.kube.patch_status(resource, name, status, namespace)

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        return self.kube.delete(resource, name, namespace)

    def ensure_namespace(self, name: str) -> None:
        self.kube.create_or_get(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )

    def apply_yaml(self, path: Path) -> list[dict[str, Any]]:
        """Create every document of ``path`` (a directory: every *.yaml under it, sorted)."""
        paths = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
        return [self.kube.create(_resource_of(d), d) for d in yaml_documents(paths)]

    def events_for(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        return [e for e in self.list(EVENTS, namespace)
                if (e.get("involvedObject") or {}).get("name") == name]

    def event_reasons(self, name: str, namespace: str = "default") -> list[str]:
        return [str(e.get("reason")) for e in self.events_for(name, namespace)]

    # -- waits ---------------------------------------------------------------------------------

    def wait_condition(self, resource: Resource, name: str, type_: str, *,
                       status: str | None = None, reason: str | None = None,
                       namespace: str | None = None, timeout: float = DEFAULT_TIMEOUT
                       ) -> dict[str, Any]:
        """Wait until condition ``type_`` has ``status`` and/or ``reason``; return it."""
        def probe() -> dict[str, Any] | None:
            cond = conditions(self.get(resource, name, namespace)).get(type_)
            if cond is None:
                return None
            if status is not None and cond.get("status") != status:
                return None
            if reason is not None and cond.get("reason") != reason:
                return None
            return cond

        return wait_for(f"{resource.plural}/{name} {type_} status={status} reason={reason}",
                        probe, timeout,
                        describe=lambda: conditions(self.get(resource, name, namespace)))

    def wait_field(self, resource: Resource, name: str, path: str, expected: Any = None, *,
                   predicate: Callable[[Any], bool] | None = None,
                   namespace: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Wait until ``path`` equals ``expected`` (or satisfies ``predicate``); return it."""
        check = predicate or (lambda value: value == expected)

        def probe() -> tuple[Any] | None:
            value = field(self.get(resource, name, namespace), path)
            return (value,) if check(value) else None

        found = wait_for(f"{resource.plural}/{name} {path} == {expected!r}", probe, timeout,
                         describe=lambda: field(self.get(resource, name, namespace), path))
        return found[0]

    def wait_gone(self, resource: Resource, name: str, namespace: str | None = None,
                  timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_for(f"{resource.plural}/{name} to be gone",
                 lambda: self.get(resource, name, namespace) is None, timeout)


_KNOWN: dict[tuple[str, str], Resource] = {
    ("v1", "PersistentVolume"): PVS,
    ("v1", "PersistentVolumeClaim"): PVCS,
    ("v1", "Namespace"): NAMESPACES,
    ("v1", "Secret"): SECRETS,
    ("storage.k8s.io/v1", "StorageClass"): STORAGECLASSES,
}


def _resource_of(doc: Mapping[str, Any]) -> Resource:
    api_version, kind = str(doc.get("apiVersion")), str(doc.get("kind"))
    if (api_version, kind) in _KNOWN:
        return _KNOWN[(api_version, kind)]
    group, _, version = api_version.rpartition("/")
    plural = kind.lower() + ("es" if kind.endswith("s") else "s")
    namespaced = kind not in ("StorageDomain", "Host")
    return Resource(group, version, plural, namespaced)
