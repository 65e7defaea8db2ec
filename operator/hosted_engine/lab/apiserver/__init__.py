"""The lab's Kubernetes API server (see docs/decisions/0001-own-lab-api-server.md).

- :class:`LabApiServer`: HTTPS (or HTTP) on 127.0.0.1 with a bearer token; ``server.client`` is
  the in-process :class:`LocalClient` with exactly the HTTP semantics.
- Extension points: :meth:`LabApiServer.register_admission` (mutating/validating hooks),
  :meth:`LabApiServer.register_aggregated` (aggregated API groups such as
  ``subresources.kubevirt.io``), :meth:`LabApiServer.register_log_provider` (pod logs),
  :meth:`LabApiServer.add_fault` (fault injection), an injectable clock, eviction with
  PodDisruptionBudgets.
"""

from __future__ import annotations

from hosted_engine.lab.apiserver.admission import AdmissionRequest, FaultRule
from hosted_engine.lab.apiserver.core import ApiCore, ApiRequest, ApiResponse, ServerConfig
from hosted_engine.lab.apiserver.errors import ApiError
from hosted_engine.lab.apiserver.local import LocalClient, resource_path
from hosted_engine.lab.apiserver.server import LabApiServer

__all__ = [
    "AdmissionRequest",
    "ApiCore",
    "ApiError",
    "ApiRequest",
    "ApiResponse",
    "FaultRule",
    "LabApiServer",
    "LocalClient",
    "ServerConfig",
    "resource_path",
]
