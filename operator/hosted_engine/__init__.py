"""hosted-engine-operator: oVirt's self-hosted engine and CloudStack's host operations on KubeVirt.

Layers (enforced by import-linter, see pyproject.toml):
models (pydantic) <- logic (pure) <- adapters (API, BMC, SMTP, S3) <- handlers (thin kopf).
``lab`` is the simulated cluster; ``cli`` is the command line. The operator packages never import
either.
"""

__version__ = "0.1.0"

API_GROUP = "hostedengine.io"
API_VERSION = "v1alpha1"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "hosted-engine-operator"
FINALIZER = f"{API_GROUP}/finalizer"
