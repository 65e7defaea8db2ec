"""Thin kopf handlers: parse, ask logic, let adapters act. Importing this package registers them.

``hosted-engine run`` imports this package and runs kopf with the handlers it registers.
"""

from hosted_engine.handlers import (
    backup,
    host,
    hostedengine,
    restore,
    rollingmaintenance,
    startup,
    storagedomain,
)

__all__ = [
    "backup",
    "host",
    "hostedengine",
    "restore",
    "rollingmaintenance",
    "startup",
    "storagedomain",
]
