"""Thin kopf handlers: parse, ask logic, let adapters act. Importing this package registers them.

``hosted-engine run`` imports this package and runs kopf with the handlers it registers.
"""

from hosted_engine.handlers import (
    backup,
    host,
    hostedengine,
    kopf_relist,  # deletions missed while a watch was down (re-list): see the module
    kopf_scale,  # before kopf.operator() builds its toggle sets: see the module
    restore,
    rollingmaintenance,
    startup,
    storagedomain,
)

__all__ = [
    "backup",
    "host",
    "hostedengine",
    "kopf_relist",
    "kopf_scale",
    "restore",
    "rollingmaintenance",
    "startup",
    "storagedomain",
]
