"""The certificate authority of the lab's Redfish BMC.

The lab API server's generator (:func:`hosted_engine.lab.apiserver.tls.generate`) makes the CA
and a server certificate for 127.0.0.1 and localhost; this module keeps them in a directory the
caller owns. Clients verify the BMC against ``ca.pem`` exactly as they would against a real
BMC's CA bundle: nothing in the lab needs ``verify=False``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from hosted_engine.lab.apiserver.tls import generate


class LabCA:
    """A fresh CA (EC P-256) and its server certificate for 127.0.0.1, valid for a day."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._certificates = generate(days=1)
        self.ca_path = self.directory / "ca.pem"
        self.ca_path.write_bytes(self._certificates.ca_pem)

    @property
    def ca_pem(self) -> bytes:
        return self._certificates.ca_pem

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context with the certificate (TLS 1.2 at least)."""
        context = self._certificates.server_context(self.directory / "server")
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
