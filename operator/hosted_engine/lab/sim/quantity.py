"""Kubernetes resource quantities ("500m", "2Gi", "1.5", "1e3") as integers.

CPU is counted in millicores, everything else in base units (bytes, pods), as the scheduler does.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(value: Any) -> Decimal:
    """The numeric value of a quantity; raises ValueError when it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = str(value).strip()
    if not text:
        raise ValueError("empty quantity")
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            return _number(text[: -len(suffix)], value) * factor
    if text[-1] in _DECIMAL and text[-1] != "":
        return _number(text[:-1], value) * _DECIMAL[text[-1]]
    return _number(text, value)


def _number(text: str, original: Any) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a quantity: {original!r}") from exc


def to_units(resource: str, value: Any) -> int:
    """Integer units the scheduler compares: millicores for cpu, base units otherwise.

    Rounds up like the API server does (a request of 0.1m cpu counts as 1m).
    """
    amount = parse_quantity(value)
    if resource == "cpu":
        amount *= 1000
    whole = int(amount)
    return whole + 1 if amount > whole else whole


def format_milli(millicores: int) -> str:
    return f"{millicores // 1000}" if millicores % 1000 == 0 else f"{millicores}m"
