"""A Host's BMC: its power manager built from ``spec.powerManagement`` and the Secrets it names.

Credentials (keys ``username`` and ``password``) and the optional CA bundle are read from their
Secrets on every action, so a rotated password is used at once; they stay
:class:`pydantic.SecretStr` and never reach a log, a status or an Event. Errors name the Secret
and key, never a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from hosted_engine.adapters.kube import Kube, KubeError
from hosted_engine.adapters.power import (
    BmcCredentials,
    BmcTarget,
    PowerResult,
    power_manager,
)
from hosted_engine.models.host import PowerAction, PowerManagement


@dataclass(frozen=True)
class CredentialsProblem:
    """The Secret could not be read: why (no secret values in it)."""

    message: str


def run_power_action(
    kube: Kube, spec: PowerManagement, action: PowerAction, *, poll_interval: float = 0.5
) -> PowerResult | CredentialsProblem:
    """Carry out ``action`` on the BMC within ``spec.actionTimeout`` (CloudStack's 60 s)."""
    ref = spec.credentials_secret_ref
    try:
        username = kube.read_secret(ref.namespace, ref.name, "username").get_secret_value()
        password = kube.read_secret(ref.namespace, ref.name, "password")
        ca_pem: str | None = None
        if spec.verify_tls and spec.ca_bundle_secret_ref is not None:
            ca = spec.ca_bundle_secret_ref
            ca_pem = kube.read_secret(ca.namespace, ca.name, ca.key).get_secret_value()
    except KubeError as exc:
        return CredentialsProblem(f"cannot read the BMC credentials: {exc}")
    timeout = max(spec.action_timeout.total_seconds(), 1.0)
    manager = power_manager(
        BmcTarget.from_spec(spec, ca_bundle_pem=ca_pem),
        BmcCredentials(username, password),
        timeout=timeout,
        poll_interval=min(poll_interval, timeout / 4),
    )
    try:
        return manager.run(action)
    finally:
        manager.close(timeout=0.5)
