"""Shared building blocks of the API models.

* :class:`CamelModel`: snake_case in Python, camelCase on the wire (``by_alias`` dumps), unknown
  fields refused in specs (:class:`SpecModel`) and ignored in statuses (:class:`StatusModel`).
* :class:`Duration`: Kubernetes-style duration strings (``"90s"``, ``"5m"``, ``"1h30m"``) that
  parse to :class:`~datetime.timedelta`; :class:`DurationRange` bounds one in the model *and* in
  the CRD (a CEL rule on the field).
* :class:`Quantity`: Kubernetes quantities (``"74Gi"``, ``"500m"``, ``4``) with exact parsing;
  :class:`QuantityRange` bounds one the same way.
* Secret references, a label selector, the object metadata the operator reads, and the string
  types with the patterns the CRDs carry (DNS names, IPv4, MAC, IQN, WWID, cron, e-mail ...).

Every rule expressed in the CRD schema (enum, bound, pattern, CEL) is also enforced here, so an
object that bypassed the schema is reported the same way, with the field named in the error.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from hosted_engine import API_GROUP, API_VERSION

# --------------------------------------------------------------------------------------------
# Patterns (RE2-compatible: they are used by the API server too). Always anchored.
# --------------------------------------------------------------------------------------------

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
FQDN_PATTERN = rf"^({_HOST_LABEL}\.)*{_HOST_LABEL}$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"^({_OCTET}\.){{3}}{_OCTET}$"
# A host name or an IPv4/IPv6 address (BMCs, storage servers, SMTP servers).
HOST_ADDRESS_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?)$"
MAC_PATTERN = r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$"
IQN_PATTERN = (
    r"^(iqn\.[0-9]{4}-[0-9]{2}\.[A-Za-z0-9][-A-Za-z0-9.]*(:[^\s]+)?"
    r"|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16}([0-9A-Fa-f]{16})?)$"
)
WWID_PATTERN = r"^[0-9A-Fa-f]{16,64}$"
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|[0-9*/,?LW#A-Za-z-]+( +[0-9*/,?LW#A-Za-z-]+){4,5})$"
)
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
TIME_ZONE_PATTERN = r"^[A-Za-z][-A-Za-z0-9_+]*(/[-A-Za-z0-9_+]+)*$"
HTTP_URL_PATTERN = r"^https?://[^\s]+$"
ABSOLUTE_PATH_PATTERN = r"^/[^\x00]*$"
IMAGE_PATTERN = r"^[^\s]+$"

DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
"""A DNS-1123 label (names of namespaced objects such as PVCs, Secrets, ConfigMaps)."""
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
"""A DNS-1123 subdomain (names of Nodes, Hosts, StorageDomains, StorageClasses ...)."""
Fqdn = Annotated[str, Field(pattern=FQDN_PATTERN, min_length=1, max_length=253)]
IPv4 = Annotated[str, Field(pattern=IPV4_PATTERN, max_length=15)]
HostAddress = Annotated[str, Field(pattern=HOST_ADDRESS_PATTERN, min_length=1, max_length=253)]
MacAddress = Annotated[str, Field(pattern=MAC_PATTERN, max_length=17)]
Iqn = Annotated[str, Field(pattern=IQN_PATTERN, max_length=223)]
Wwid = Annotated[str, Field(pattern=WWID_PATTERN, max_length=64)]
Email = Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=254)]
LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN, min_length=1, max_length=316)]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]
HttpUrl = Annotated[str, Field(pattern=HTTP_URL_PATTERN, max_length=2048)]
AbsolutePath = Annotated[str, Field(pattern=ABSOLUTE_PATH_PATTERN, max_length=1024)]
Image = Annotated[str, Field(pattern=IMAGE_PATTERN, min_length=1, max_length=512)]
Port = Annotated[int, Field(ge=1, le=65535)]
ShortText = Annotated[str, Field(max_length=256)]
LongText = Annotated[str, Field(max_length=1024)]
"""A reason or message in a status or spec (at most 1024 characters)."""
Message = Annotated[str, Field(max_length=32768)]

# --------------------------------------------------------------------------------------------
# Base models
# --------------------------------------------------------------------------------------------

_ACRONYMS = {"id": "ID", "ip": "IP", "tls": "TLS", "url": "URL", "cpu": "CPU", "api": "API"}


def camel(name: str) -> str:
    """snake_case -> lowerCamelCase with Kubernetes' acronyms (``verify_tls`` -> ``verifyTLS``,
    ``host_id`` -> ``hostID``)."""
    first, *rest = name.split("_")
    return first + "".join(_ACRONYMS.get(part, part.capitalize()) for part in rest)


class CamelModel(BaseModel):
    """Base of every API model: snake_case attributes, camelCase on the wire.

    ``model_dump()`` uses the camelCase aliases by default; :meth:`to_dict` is the wire form
    (aliases, JSON types, no ``None`` values) to put into a patch.
    """

    model_config = ConfigDict(
        alias_generator=camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, JSON-compatible values, ``None`` left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SpecModel(CamelModel):
    """Desired state written by users: unknown fields are refused (typos are errors)."""

    model_config = ConfigDict(extra="forbid")


class StatusModel(CamelModel):
    """Observed state written by the operator: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------------------------
# CEL rules, attached to models and fields
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry.

    ``field_path`` (optional) is the JSON path, relative to the node carrying the rule, that the
    API server names in its error (e.g. ``.capacity``).
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    """``json_schema_extra`` carrying the given CEL rules."""
    return {"x-kubernetes-validations": [r.to_schema() for r in rules]}


def exactly_one(obj: BaseModel, fields: Sequence[str], what: str) -> None:
    """Raise a ValueError naming the camelCase fields unless exactly one of them is set."""
    names = [camel(f) for f in fields]
    chosen = [n for f, n in zip(fields, names, strict=True) if getattr(obj, f) is not None]
    if len(chosen) != 1:
        listed = ", ".join(names)
        got = ", ".join(chosen) if chosen else "none"
        raise ValueError(f"{what}: set exactly one of {listed} (got {got})")


def exactly_one_cel(fields: Sequence[str], what: str) -> CelRule:
    """The CEL twin of :func:`exactly_one`."""
    names = [camel(f) for f in fields]
    terms = " + ".join(f"(has(self.{n}) ? 1 : 0)" for n in names)
    return CelRule(rule=f"{terms} == 1", message=f"{what}: set exactly one of {', '.join(names)}")


@dataclasses.dataclass(frozen=True)
class UniqueItems:
    """A list of scalars without duplicates: ``x-kubernetes-list-type: set`` in the CRD."""

    def check(self, items: list[Any]) -> list[Any]:
        seen: set[Any] = set()
        dupes = []
        for item in items:
            if item in seen:
                dupes.append(item)
            seen.add(item)
        if dupes:
            raise ValueError(f"duplicate entries: {', '.join(map(str, dict.fromkeys(dupes)))}")
        return items

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = dict(handler(schema))
        out["x-kubernetes-list-type"] = "set"
        return out


# --------------------------------------------------------------------------------------------
# Duration
# --------------------------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|h|m|s))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_DURATION_RE = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"h": Decimal(3600), "m": Decimal(60), "s": Decimal(1), "ms": Decimal("0.001")}


def parse_duration(text: str) -> timedelta:
    """Parse a Kubernetes-style duration (``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``)."""
    if not isinstance(text, str) or not _DURATION_RE.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: use a Kubernetes-style duration such as "
            "'90s', '5m' or '1h30m' (units h, m, s, ms)"
        )
    total = sum(
        (Decimal(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text)),
        Decimal(0),
    )
    return timedelta(seconds=float(total))


def format_duration(value: timedelta) -> str:
    """The shortest canonical string for a duration (``"1h30m"``, ``"90s"`` -> ``"1m30s"``)."""
    millis = round(value.total_seconds() * 1000)
    if millis < 0:
        raise ValueError("durations are never negative")
    if millis == 0:
        return "0s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, ms = divmod(rest, 1000)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds:
        out += f"{seconds}s"
    if ms:
        out += f"{ms}ms"
    return out


class Duration(str):
    """A Kubernetes-style duration string; it stays a ``str`` and parses to a timedelta."""

    __slots__ = ()

    def __new__(cls, value: str | timedelta) -> Duration:
        text = format_duration(value) if isinstance(value, timedelta) else value
        parse_duration(text)
        return super().__new__(cls, text)

    @property
    def timedelta(self) -> timedelta:
        return parse_duration(self)

    def total_seconds(self) -> float:
        return parse_duration(self).total_seconds()

    @classmethod
    def _validate(cls, value: str) -> Duration:
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._validate,
            core_schema.str_schema(strict=True, max_length=64),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": DURATION_PATTERN, "maxLength": 64}


class _BoundsAnnotation:
    """A field annotation checked twice: by the model (``check``) and by CEL rules in the
    generated schema (``rules``)."""

    def rules(self) -> list[CelRule]:
        raise NotImplementedError

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = dict(handler(schema))
        out["x-kubernetes-validations"] = [
            *out.get("x-kubernetes-validations", []),
            *(r.to_schema() for r in self.rules()),
        ]
        return out


@dataclasses.dataclass(frozen=True)
class DurationRange(_BoundsAnnotation):
    """Bounds of a :class:`Duration` field, checked by the model and by a CEL rule."""

    minimum: str | None = None
    maximum: str | None = None

    def rules(self) -> list[CelRule]:
        out = []
        if self.minimum is not None:
            out.append(
                CelRule(
                    rule=f"duration(self) >= duration('{self.minimum}')",
                    message=f"must be at least {self.minimum}",
                )
            )
        if self.maximum is not None:
            out.append(
                CelRule(
                    rule=f"duration(self) <= duration('{self.maximum}')",
                    message=f"must be at most {self.maximum}",
                )
            )
        return out

    def check(self, value: Duration) -> Duration:
        if self.minimum is not None and value.timedelta < parse_duration(self.minimum):
            raise ValueError(f"duration {value} is too short: must be at least {self.minimum}")
        if self.maximum is not None and value.timedelta > parse_duration(self.maximum):
            raise ValueError(f"duration {value} is too long: must be at most {self.maximum}")
        return value


def duration_field(
    default: str,
    description: str,
    *,
    minimum: str | None = None,
    maximum: str | None = None,
) -> Any:
    """A Field with a Duration default (documented with its bounds)."""
    bounds = []
    if minimum:
        bounds.append(f"at least {minimum}")
    if maximum:
        bounds.append(f"at most {maximum}")
    suffix = f" ({', '.join(bounds)})" if bounds else ""
    return Field(default=Duration(default), description=f"{description}{suffix}")


# --------------------------------------------------------------------------------------------
# Quantity
# --------------------------------------------------------------------------------------------

QUANTITY_PATTERN = (
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: str | int) -> Decimal:
    """The exact value of a Kubernetes quantity (``"74Gi"`` -> 79456894976, ``"500m"`` -> 0.5)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid quantity {value!r}: quantities are never negative")
        return Decimal(value)
    text = str(value).strip()
    match = _QUANTITY_RE.fullmatch(text)
    if not match:
        raise ValueError(
            f"invalid quantity {value!r}: use a Kubernetes quantity such as '74Gi', '500m' or '4'"
        )
    number, suffix = match.group(1), match.group(3) or ""
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the pattern prevents it
        raise ValueError(f"invalid quantity {value!r}") from exc
    if suffix not in _SUFFIX:  # a decimal exponent: e3, E-2 ...
        return base * (Decimal(10) ** int(suffix[1:]))
    return base * _SUFFIX[suffix]


def format_bytes(n: int) -> str:
    """A byte count in the largest binary unit that divides it exactly (``"74Gi"``)."""
    if n < 0:
        raise ValueError("byte counts are never negative")
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(_SUFFIX[suffix])
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


class Quantity(str):
    """A Kubernetes quantity, kept as its string and parsed exactly on demand.

    On the wire it is int-or-string (``cpu: 4`` and ``memory: 16Gi`` both work).
    """

    __slots__ = ()

    def __new__(cls, value: str | int) -> Quantity:
        parse_quantity(value)
        return super().__new__(cls, str(value))

    @property
    def value(self) -> Decimal:
        return parse_quantity(self)

    def to_bytes(self) -> int:
        """The value rounded up to a whole number (bytes for memory and disks)."""
        return int(self.value.to_integral_value(rounding=ROUND_CEILING))

    def to_cores(self) -> float:
        return float(self.value)

    @classmethod
    def from_bytes(cls, n: int) -> Quantity:
        return cls(format_bytes(n))

    @classmethod
    def _validate(cls, value: str | int) -> Quantity:
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._validate,
            core_schema.union_schema(
                [core_schema.int_schema(strict=True), core_schema.str_schema(strict=True)]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
        }


def quantity_cel(expr: str) -> str:
    """CEL for the quantity in ``expr`` (an int-or-string node): Kubernetes' quantity library."""
    return f"quantity(string({expr}))"


@dataclasses.dataclass(frozen=True)
class QuantityRange(_BoundsAnnotation):
    """Bounds of a :class:`Quantity` field, checked by the model and (``cel=True``) by a CEL rule.

    The CEL rule needs Kubernetes' quantity library (``quantity()``, ``compareTo``), which plain
    CEL engines such as cel-python lack; ``cel=False`` keeps a bound in the model only.
    """

    minimum: str | None = None
    maximum: str | None = None
    cel: bool = True

    def rules(self) -> list[CelRule]:
        out: list[CelRule] = []
        if not self.cel:
            return out
        if self.minimum is not None:
            out.append(
                CelRule(
                    rule=f"{quantity_cel('self')}.compareTo(quantity('{self.minimum}')) >= 0",
                    message=f"must be at least {self.minimum}",
                )
            )
        if self.maximum is not None:
            out.append(
                CelRule(
                    rule=f"{quantity_cel('self')}.compareTo(quantity('{self.maximum}')) <= 0",
                    message=f"must be at most {self.maximum}",
                )
            )
        return out

    def check(self, value: Quantity) -> Quantity:
        if self.minimum is not None and value.value < parse_quantity(self.minimum):
            raise ValueError(f"quantity {value} is too small: must be at least {self.minimum}")
        if self.maximum is not None and value.value > parse_quantity(self.maximum):
            raise ValueError(f"quantity {value} is too large: must be at most {self.maximum}")
        return value


# --------------------------------------------------------------------------------------------
# References, selectors, metadata
# --------------------------------------------------------------------------------------------


class SecretRef(SpecModel):
    """A Secret in the object's own namespace (namespaced kinds) or in ``namespace``."""

    name: DnsLabel = Field(description="Name of the Secret.")
    namespace: DnsLabel | None = Field(
        default=None,
        description=(
            "Namespace of the Secret. Required for cluster-scoped kinds (Host, StorageDomain); "
            "defaults to the object's namespace for namespaced kinds."
        ),
    )


class SecretKeyRef(SecretRef):
    """One key of a Secret."""

    key: str = Field(
        description="Key inside the Secret.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class ClusterSecretRef(SpecModel):
    """A Secret referenced from a cluster-scoped object: the namespace is required."""

    name: DnsLabel = Field(description="Name of the Secret.")
    namespace: DnsLabel = Field(description="Namespace of the Secret.")


class ClusterSecretKeyRef(ClusterSecretRef):
    """One key of a Secret referenced from a cluster-scoped object."""

    key: str = Field(
        description="Key inside the Secret.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(SpecModel):
    key: LabelKey = Field(description="The label key the requirement applies to.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=64,
        description="Values for In and NotIn (non-empty); empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values and not self.values:
            raise ValueError(f"values must be non-empty when operator is {self.operator}")
        if not needs_values and self.values:
            raise ValueError(f"values must be empty when operator is {self.operator}")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="(self.operator in ['In', 'NotIn']) == "
                "(has(self.values) && size(self.values) > 0)",
                message="values must be non-empty for In and NotIn, and empty otherwise",
            )
        )
    )


class LabelSelector(SpecModel):
    """A Kubernetes label selector (matchLabels AND matchExpressions)."""

    match_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=64, description="Labels that must all match."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Requirements that must all hold."
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with ``labels`` is selected (pure, same semantics as Kubernetes)."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == SelectorOperator.IN:
                if not present or labels[req.key] not in req.values:
                    return False
            elif req.operator == SelectorOperator.NOT_IN:
                if present and labels[req.key] in req.values:
                    return False
            elif req.operator == SelectorOperator.EXISTS:
                if not present:
                    return False
            elif present:
                return False
        return True


class ObjectMeta(CamelModel):
    """The part of ``metadata`` the operator reads (everything else is ignored)."""

    name: str = Field(default="", max_length=253)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None


# --------------------------------------------------------------------------------------------
# Resources: the top-level models and what the CRD generator needs to know about each kind
# --------------------------------------------------------------------------------------------


class Scope(StrEnum):
    NAMESPACED = "Namespaced"
    CLUSTER = "Cluster"


@dataclasses.dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0

    def to_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclasses.dataclass(frozen=True)
class ResourceInfo:
    """Names, scope and printer columns of one kind (consumed by :mod:`.crdgen`)."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Scope
    description: str
    printer_columns: tuple[PrinterColumn, ...]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{API_GROUP}"

    @property
    def namespaced(self) -> bool:
        return self.scope == Scope.NAMESPACED


class Resource(CamelModel):
    """A whole custom object (``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status``).

    Subclasses set ``resource`` and narrow ``spec``/``status`` to their models. Parse a kopf
    body with ``Kind.model_validate(dict(body))``.
    """

    resource: ClassVar[ResourceInfo]

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}")
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("kind") and hasattr(cls, "resource"):
            data = {**data, "kind": cls.resource.kind}
        return data


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def error_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """``("vm", "network", 0, "gateway")`` -> ``spec.vm.network[0].gateway``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # pydantic puts function-validator names into loc; keep field names only.
            if part.startswith("function-") or "[" in part:
                continue
            out = f"{out}.{part}" if out else part
    return out or "(root)"


def validation_messages(exc: ValidationError, prefix: str = "") -> list[str]:
    """One ``field.path: message`` line per error, camelCase paths, for conditions and Events."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{error_path(err['loc'], prefix)}: {msg}")
    return lines


def describe_validation_error(exc: ValidationError, prefix: str = "", limit: int = 5) -> str:
    """A short human summary (at most ``limit`` errors) of a ValidationError."""
    lines = validation_messages(exc, prefix)
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more
