"""The whole lab: API server, BMCs, machines, kubelets, controllers and plugins, in one loop.

>>> async with Lab(hosts=3, timings=LabTimings.fast()) as lab:      # doctest: +SKIP
...     lab.write_kubeconfig(path)
...     await lab.faults.fail_node("node-2")

- The API server (:class:`~hosted_engine.lab.apiserver.LabApiServer`) serves HTTPS on 127.0.0.1;
  pods are deleted gracefully (the kubelets confirm), ``DefaultTolerationSeconds`` admission adds
  the not-ready/unreachable tolerations.
- Each node has a :class:`~hosted_engine.lab.bmc.NodePower`; with ``bmc=True`` a
  :class:`~hosted_engine.lab.bmc.BmcFarm` serves Redfish and IPMI for it (in threads). The
  credentials go into the Secret ``lab-system/bmc-credentials`` (and ``bmc-<node>`` per node),
  the endpoints into the ConfigMap ``lab-system/bmc-endpoints``.
- Simulators (kubelets, node lifecycle, scheduler, Jobs, PVs, then every plugin controller) run
  in one pass every ``timings.tick`` over a :class:`ClusterView` kept fresh by watches.
- Plugins: a module listed in :data:`PLUGIN_MODULES` that exists is imported and its
  ``setup(lab)`` called before the lab starts (the KubeVirt simulators come in this way); it
  may call :meth:`Lab.add_controller`, :meth:`Lab.add_task`, :meth:`Lab.informer`,
  :meth:`Lab.on_start`, the server's extension points, and fill the fault hooks
  (:class:`~hosted_engine.lab.sim.faults.LabFaults`).
- The control endpoint ``/apis/lab.hostedengine.io/v1/{faults,status}`` (same token as the API)
  lets ``hosted-engine lab fail-node ...`` act on a running lab.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from hosted_engine.clock import Clock, SystemClock
from hosted_engine.lab.apiserver import (
    AdmissionRequest,
    ApiError,
    LabApiServer,
    LocalClient,
    ServerConfig,
)
from hosted_engine.lab.sim.api import (
    CONFIGMAPS,
    JOBS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    PVCS,
    PVS,
    SECRETS,
    STORAGECLASSES,
    Conflict,
    Obj,
    Res,
    meta,
    name_of,
    ns_of,
)
from hosted_engine.lab.sim.faults import LabFaults
from hosted_engine.lab.sim.jobs import JobController
from hosted_engine.lab.sim.kubelet import NODE_LEASE_NAMESPACE, Kubelet, PodListener, StopTimeHook
from hosted_engine.lab.sim.node_lifecycle import NodeLifecycleController, add_default_tolerations
from hosted_engine.lab.sim.nodes import HostHardware, SimNode
from hosted_engine.lab.sim.scheduler import Scheduler
from hosted_engine.lab.sim.storage import VolumeController
from hosted_engine.lab.sim.timings import LabTimings

log = logging.getLogger(__name__)

LAB_NAMESPACE = "lab-system"
CONTROL_GROUP = "lab.hostedengine.io"
CONTROL_VERSION = "v1"
BMC_SECRET = "bmc-credentials"
BMC_CONFIGMAP = "bmc-endpoints"
#: modules that extend the lab; each exposes ``setup(lab)``. A missing module is skipped.
PLUGIN_MODULES: tuple[str, ...] = ("hosted_engine.lab.kubevirt.plugin",)
_BUILTIN_GROUPS = {"", "apps", "batch", "coordination.k8s.io", "storage.k8s.io", "policy"}


# -- the simulators' API over the in-process client ------------------------------------------


class LocalApi:
    """:class:`~hosted_engine.lab.sim.api.Api` over the server's :class:`LocalClient`."""

    def __init__(self, client: LocalClient) -> None:
        self.client = client
        #: requests sent, by verb (the benchmark's API request rate)
        self.requests: Counter[str] = Counter()

    async def get(self, res: Res, name: str, namespace: str | None = None) -> Obj | None:
        self.requests["get"] += 1
        try:
            return await self.client.get(res.group, res.version, res.plural, name, namespace)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    async def list(
        self,
        res: Res,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        self.requests["list"] += 1
        result = await self.client.list(
            res.group, res.version, res.plural, namespace, label_selector, field_selector
        )
        items: list[Obj] = result.get("items") or []
        return items

    async def create(self, res: Res, body: Obj, namespace: str | None = None) -> Obj | None:
        self.requests["create"] += 1
        try:
            return await self.client.create(res.group, res.version, res.plural, body, namespace)
        except ApiError as exc:
            if exc.code == 409:
                return None
            raise

    async def patch(
        self,
        res: Res,
        name: str,
        body: Obj,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: str | None = None,
    ) -> Obj | None:
        self.requests["patch"] += 1
        kind = patch_type or ("strategic" if res.group in _BUILTIN_GROUPS else "merge")
        try:
            return await self.client.patch(
                res.group, res.version, res.plural, name, body, namespace, kind, subresource or ""
            )
        except ApiError as exc:
            if exc.code == 404:
                return None
            if exc.code == 409:
                raise Conflict(str(exc)) from exc
            raise

    async def delete(
        self,
        res: Res,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> bool:
        self.requests["delete"] += 1
        try:
            await self.client.delete(
                res.group,
                res.version,
                res.plural,
                name,
                namespace,
                propagation_policy=propagation,
                grace_period_seconds=grace_period_seconds,
                preconditions={"uid": uid} if uid else None,
            )
        except ApiError as exc:
            if exc.code in (404, 409):
                return False
            raise
        return True


# -- informers and the cluster view -------------------------------------------------------------


class InformerItems(list[Obj]):
    """What :meth:`Informer.items` returns: the objects, plus ``by_key`` ((namespace, name) ->
    object) taken at the same moment, so that consumers need not index them again."""

    by_key: dict[tuple[str, str], Obj]


class Informer:
    """A watch-fed cache of one resource (list, then watch; relist after 410 or a cut)."""

    def __init__(self, client: LocalClient, res: Res, namespace: str | None = None) -> None:
        self.client = client
        self.res = res
        self.namespace = namespace
        self.objects: dict[tuple[str, str], Obj] = {}
        self.synced = asyncio.Event()
        self.changed = 0
        self._items: InformerItems | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"informer-{self.res.plural}"
            )

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await _cancel(self._task)
            self._task = None

    def items(self) -> InformerItems:
        """Every cached object. The same list object is returned until something changes
        (callers may compare it by identity to skip work; never mutate it)."""
        if self._items is None:
            items = InformerItems(self.objects.values())
            items.by_key = dict(self.objects)
            self._items = items
        return self._items

    def get(self, name: str, namespace: str = "") -> Obj | None:
        return self.objects.get((namespace, name))

    async def _run(self) -> None:
        r = self.res
        while True:
            try:
                listed = await self.client.list(r.group, r.version, r.plural, self.namespace)
                self.objects = {(ns_of(o), name_of(o)): o for o in listed.get("items") or []}
                self._items = None
                self.changed += 1
                self.synced.set()
                rv = (listed.get("metadata") or {}).get("resourceVersion")
                async for event in self.client.watch(
                    r.group,
                    r.version,
                    r.plural,
                    self.namespace,
                    resource_version=rv,
                    allow_bookmarks=True,
                ):
                    if self._stopping:
                        return
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        break
                    if kind == "BOOKMARK":
                        continue
                    key = (ns_of(obj), name_of(obj))
                    if kind == "DELETED":
                        self.objects.pop(key, None)
                    else:
                        self.objects[key] = obj
                    self._items = None
                    self.changed += 1
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.code == 404:  # a CRD not installed yet
                    self.synced.set()
                    await asyncio.sleep(0.5)
                    continue
                log.warning("informer %s: %s; relisting", r.plural, exc)
            except Exception:
                log.exception("informer %s failed; relisting", r.plural)
            await asyncio.sleep(0.05)


@dataclass
class ClusterView:
    """One consistent-enough snapshot per pass (objects are shared: never mutate them)."""

    nodes: list[Obj]
    pods: list[Obj]
    pods_by_node: dict[str, list[Obj]]
    leases: dict[str, Obj]
    informers: dict[Res, Informer] = field(default_factory=dict)

    def objects(self, res: Res) -> list[Obj]:
        informer = self.informers.get(res)
        return informer.items() if informer is not None else []


class Controller(Protocol):
    """A plugin controller: called once per pass."""

    async def reconcile(self, view: ClusterView, now: float) -> None: ...


# -- the lab ---------------------------------------------------------------------------------------


class Lab:
    """A simulated KubeVirt cluster with ``hosts`` nodes (node-1 .. node-N)."""

    def __init__(
        self,
        hosts: int = 3,
        *,
        timings: LabTimings | None = None,
        hardware: HostHardware | None = None,
        bmc: bool = True,
        redfish: bool = True,
        ipmi: bool = True,
        tls_enabled: bool = True,
        port: int = 0,
        token: str | None = None,
        state_dir: Path | None = None,
        workdir: Path | None = None,
        clock: Clock | None = None,
        certificates: Any = None,
        plugins: bool = True,
        server: LabApiServer | None = None,
    ) -> None:
        """``server``: an API server already running (``hosted-engine lab up`` starts it);
        the lab then neither starts nor stops it."""
        if hosts < 0:
            raise ValueError("hosts must be >= 0")
        self.hosts = hosts
        self.timings = timings or LabTimings()
        self.hardware = hardware or HostHardware()
        self.want_bmc = bmc and hosts > 0
        self.want_redfish = redfish
        self.want_ipmi = ipmi
        self.clock: Clock = clock or SystemClock()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lab-sim-"))
        self._own_server = server is None
        if server is None:
            server = LabApiServer(
                port=port,
                tls_enabled=tls_enabled,
                token=token,
                state_dir=state_dir,
                config=ServerConfig(pod_graceful_deletion=True),
                clock=self.clock,
                certificates=certificates,
            )
        else:
            # pods bound to a node now wait for their kubelet to confirm a graceful delete
            server.core.config.pod_graceful_deletion = True
        self.server = server
        self.client: LocalClient = self.server.client
        self.api = LocalApi(self.client)
        self.nodes: dict[str, SimNode] = {}
        self.power: dict[str, Any] = {}
        self.kubelets: dict[str, Kubelet] = {}
        self.farm: Any = None
        self.faults = LabFaults(self)
        self.pod_listeners: list[PodListener] = []
        self.stop_hooks: list[StopTimeHook] = []
        self.controllers: list[Controller] = []
        self._informers: dict[Res, Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._task_factories: list[Callable[[], Awaitable[None]]] = []
        self._start_hooks: list[Callable[[], Awaitable[None]]] = []
        self._stop_hooks: list[Callable[[], Awaitable[None]]] = []
        self._loop_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.passes = 0
        self.started = False
        self.lifecycle = NodeLifecycleController(self.api, self.timings, self.wall)
        self.scheduler = Scheduler(self.api, self.timings, self.wall)
        self.jobs = JobController(self.api, self.timings, self.wall)
        self.volumes = VolumeController(self.api, self.timings, self.wall)
        self.plugins_loaded: list[str] = []
        if plugins:
            self._load_plugins()

    # -- extension points --------------------------------------------------------------------

    def wall(self) -> datetime:
        return self.clock.now()

    def now(self) -> float:
        """Simulation time (event-loop seconds)."""
        assert self.loop is not None, "the lab is not running"
        return self.loop.time()

    def add_controller(self, controller: Controller) -> None:
        """Run ``controller.reconcile(view, now)`` in every pass, after the built-in ones."""
        self.controllers.append(controller)

    def add_task(self, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` as a background task while the lab runs (cancelled on stop)."""
        self._task_factories.append(factory)
        if self.started and self.loop is not None:
            self._tasks.append(self.loop.create_task(_guarded(factory)))

    def on_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        """``await hook()`` once the API server serves, before the first pass (e.g. CRDs)."""
        self._start_hooks.append(hook)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._stop_hooks.append(hook)

    def informer(self, res: Res, namespace: str | None = None) -> Informer:
        """The watch-fed cache of ``res`` (created on first use; shared)."""
        informer = self._informers.get(res)
        if informer is None:
            informer = Informer(self.client, res, namespace)
            self._informers[res] = informer
            if self.started:
                informer.start()
        return informer

    def informer_if_any(self, plural: str) -> Informer | None:
        for res, informer in self._informers.items():
            if res.plural == plural:
                return informer
        return None

    def add_pod_listener(self, callback: PodListener) -> None:
        """``callback(event, node, pod_ref)``: "started", "stopped", "killed" (power loss)."""
        self.pod_listeners.append(callback)

    def add_stop_time_hook(self, hook: StopTimeHook) -> None:
        """How long a process-less pod takes to stop (e.g. a guest shutdown); None: default."""
        self.stop_hooks.append(hook)

    def _load_plugins(self) -> None:
        for name in PLUGIN_MODULES:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name is not None and name.startswith(exc.name):
                    continue
                raise
            module.setup(self)
            self.plugins_loaded.append(name)

    # -- endpoints for people and tests ---------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.token

    def kubeconfig(self) -> str:
        return self.server.kubeconfig()

    def write_kubeconfig(self, path: Path) -> Path:
        return self.server.write_kubeconfig(path)

    def bmc_endpoints(self) -> dict[str, Any]:
        return dict(self.farm.endpoints) if self.farm is not None else {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Lab:
        self.loop = asyncio.get_running_loop()
        self.server.register_admission(
            "mutating", "", "pods", "", "CREATE", self._default_tolerations
        )
        self.server.register_log_provider(self._pod_log)
        self.faults.register_endpoint(self.server)
        if self._own_server:
            await self.server.start()
        names = [f"node-{i}" for i in range(1, self.hosts + 1)]
        await self._start_machines(names)
        await self._seed()
        for kind in (NODES, PODS, JOBS, PVS, PVCS, STORAGECLASSES):
            self.informer(kind)
        self.informer(LEASES, NODE_LEASE_NAMESPACE)
        for informer in self._informers.values():
            informer.start()
        await asyncio.gather(*(i.synced.wait() for i in self._informers.values()))
        for hook in self._start_hooks:
            await hook()
        self.started = True
        # the kubelets register their nodes before the lab is "up"
        await self._pass()
        for factory in self._task_factories:
            self._tasks.append(self.loop.create_task(_guarded(factory)))
        self._loop_task = self.loop.create_task(self._run(), name="lab-passes")
        await self.wait_for(self._nodes_ready, timeout=30)
        return self

    async def _start_machines(self, names: Sequence[str]) -> None:
        from hosted_engine.lab.bmc import NodePower

        assert self.loop is not None
        dispatch = self.loop.call_soon_threadsafe
        for index, name in enumerate(names, start=1):
            power = NodePower(
                name,
                power_delay=self.timings.bmc_power_delay,
                shutdown_time=self.timings.os_shutdown_time,
                dispatch=dispatch,
            )
            self.power[name] = power
            node = SimNode(name, index, self.hardware, power, self.timings.node_boot_time, self.now)
            self.nodes[name] = node
            self.kubelets[name] = Kubelet(
                node,
                self.api,
                self.timings,
                self.wall,
                self.workdir,
                self.pod_listeners,
                self.stop_hooks,
            )
        if self.want_bmc and names:
            from hosted_engine.lab.bmc import BmcFarm

            farm = BmcFarm(
                dict(self.power),
                redfish=self.want_redfish,
                ipmi=self.want_ipmi,
                workdir=self.workdir / "bmc",
            )
            await asyncio.to_thread(farm.start)
            self.farm = farm

    async def _seed(self) -> None:
        for ns in (LAB_NAMESPACE,):
            await self.api.create(
                NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )
        if self.farm is None:
            return
        creds = self.farm.credentials
        ca_pem = ""
        if self.farm.ca is not None:
            ca_pem = Path(self.farm.ca.ca_path).read_text()

        def secret(name: str, node: str | None) -> Obj:
            data = {"username": creds.username, "password": creds.password}
            if ca_pem:
                data["ca.crt"] = ca_pem
            labels = {"app.kubernetes.io/part-of": "lab"}
            if node:
                labels["lab.hostedengine.io/node"] = node
            return {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": LAB_NAMESPACE, "labels": labels},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }

        await self._put(SECRETS, secret(BMC_SECRET, None), LAB_NAMESPACE)
        endpoints: dict[str, str] = {}
        for name, ep in self.farm.endpoints.items():
            await self._put(SECRETS, secret(f"bmc-{name}", name), LAB_NAMESPACE)
            if ep.redfish_url:
                endpoints[f"{name}.redfish"] = f"{ep.redfish_url}{ep.redfish_system_path}"
            if ep.ipmi_port:
                endpoints[f"{name}.ipmi"] = f"{ep.address}:{ep.ipmi_port}"
            endpoints[f"{name}.systemUUID"] = ep.system_uuid
        if ca_pem:
            endpoints["ca.crt"] = ca_pem
        await self._put(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": BMC_CONFIGMAP, "namespace": LAB_NAMESPACE},
                "data": endpoints,
            },
            LAB_NAMESPACE,
        )

    async def _put(self, res: Res, body: Obj, namespace: str) -> None:
        if await self.api.create(res, body, namespace) is None:
            await self.client.replace(
                res.group,
                res.version,
                res.plural,
                name_of(body),
                {**body, "metadata": {**body["metadata"]}},
                namespace,
            )

    async def stop(self) -> None:
        if self._loop_task is not None:
            await _cancel(self._loop_task)
            self._loop_task = None
        for task in self._tasks:
            await _cancel(task)
        self._tasks.clear()
        for hook in self._stop_hooks:
            with contextlib.suppress(Exception):
                await hook()
        for kubelet in self.kubelets.values():
            await kubelet.shutdown()
        for informer in self._informers.values():
            await informer.stop()
        if self.farm is not None:
            await asyncio.to_thread(self.farm.stop)
            self.farm = None
        for power in self.power.values():
            power.close()
        if self._own_server:
            await self.server.stop()
        self.started = False
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Lab:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the passes ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.timings.tick)
            try:
                await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lab pass failed")

    def view(self) -> ClusterView:
        nodes = self._informers[NODES].items()
        pods = self._informers[PODS].items()
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            by_node.setdefault(str((pod.get("spec") or {}).get("nodeName") or ""), []).append(pod)
        leases = {name_of(lease): lease for lease in self._informers[LEASES].items()}
        return ClusterView(nodes, pods, by_node, leases, dict(self._informers))

    async def _pass(self) -> None:
        now = self.now()
        view = self.view()
        node_objs = {name_of(n): n for n in view.nodes}
        for name, kubelet in self.kubelets.items():
            try:
                await kubelet.sync(node_objs.get(name), view.pods_by_node.get(name, ()), now)
            except Conflict:
                pass
            except Exception:
                log.exception("kubelet %s", name)
        steps: list[Callable[[], Awaitable[None]]] = [
            lambda: self.lifecycle.reconcile(view.nodes, view.leases, view.pods_by_node, now),
            lambda: self.scheduler.reconcile(view.nodes, view.pods, now),
            lambda: self.jobs.reconcile(view.objects(JOBS), view.pods, now),
            lambda: self.volumes.reconcile(
                view.objects(PVS), view.objects(PVCS), view.objects(STORAGECLASSES), now
            ),
            *[(lambda c=c: c.reconcile(view, now)) for c in self.controllers],
        ]
        for step in steps:
            await asyncio.sleep(0)  # let the HTTP front end and the informers in between
            try:
                await step()
            except Conflict:
                pass
            except Exception:
                log.exception("lab controller failed")
        self.passes += 1

    async def settle(self, passes: int = 2) -> None:
        """Wait until ``passes`` more passes ran (informers catch up in between)."""
        target = self.passes + passes
        while self.passes < target:
            await asyncio.sleep(self.timings.tick / 2 or 0.001)

    async def wait_for(
        self, predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0
    ) -> None:
        """Poll ``predicate`` (sync or async) until true; TimeoutError after ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            await asyncio.sleep(max(self.timings.tick / 2, 0.005))

    def _nodes_ready(self) -> bool:
        informer = self._informers[NODES]
        for name, node in self.nodes.items():
            if not node.running():
                continue
            obj = informer.get(name)
            if obj is None:
                return False
            ready = [
                c
                for c in (obj.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready" and c.get("status") == "True"
            ]
            if not ready:
                return False
        return True

    # -- admission and logs ----------------------------------------------------------------

    def _default_tolerations(self, req: AdmissionRequest) -> None:
        if req.object is not None:
            add_default_tolerations(req.object, int(self.timings.default_toleration_seconds))

    def _pod_log(self, namespace: str, pod: str, container: str, query: Any) -> Any:
        obj = self._informers[PODS].get(pod, namespace) if PODS in self._informers else None
        node = str(((obj or {}).get("spec") or {}).get("nodeName") or "")
        kubelet = self.kubelets.get(node)
        if kubelet is None:
            return b""
        if not kubelet.node.connected():
            raise ApiError(
                500,
                f'Get "https://{kubelet.node.internal_ip}:10250/containerLogs/{namespace}/'
                f'{pod}/{container}": dial tcp {kubelet.node.internal_ip}:10250: connect: '
                "no route to host",
                "InternalError",
            )
        if str((query or {}).get("follow", "")).lower() == "true":
            return kubelet.follow_log(namespace, pod, container)
        text = kubelet.container_log(namespace, pod, container)
        return text or ""


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it. Cancels again while it runs: ``asyncio.wait_for`` in
    Python 3.11 can swallow a cancellation that arrives as its inner future completes
    (python/cpython#86296), which would leave a watch loop running and ``stop`` hanging."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


async def _guarded(factory: Callable[[], Awaitable[None]]) -> None:
    try:
        await factory()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("lab task failed")


def pod_key(pod: Obj) -> tuple[str, str]:
    return (ns_of(pod), name_of(pod))


def uid_of(obj: Obj) -> str:
    return str(meta(obj).get("uid", ""))
