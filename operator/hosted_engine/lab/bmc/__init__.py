"""The lab's BMCs: each node's power switch, a Redfish service and IPMI BMCs bound to it.

- :mod:`.power`: :class:`NodePower` (the switch, with power delay, soft-off shutdown time and
  listeners) and the :class:`PowerTarget` protocol BMCs drive.
- :mod:`.redfish`: sushy-tools' Redfish emulator over HTTPS with a driver mapped to the switches.
- :mod:`.ipmi`: pyghmi BMC servers, one per node (``ipmitool -I lanplus`` works against them).
- :mod:`.farm`: :class:`BmcFarm` starts both for N nodes and returns each node's endpoints.
- :mod:`.tls`: the lab CA that signs the Redfish certificate.
"""

from __future__ import annotations

from hosted_engine.lab.bmc.farm import BmcCredentials, BmcFarm, NodeBmcEndpoints
from hosted_engine.lab.bmc.power import NodePower, PowerCause, PowerEvent, PowerState, PowerTarget

__all__ = [
    "BmcCredentials",
    "BmcFarm",
    "NodeBmcEndpoints",
    "NodePower",
    "PowerCause",
    "PowerEvent",
    "PowerState",
    "PowerTarget",
]
