"""Decoding of the Kubernetes protobuf envelope for the few kinds kubectl sends as protobuf.

kubectl's typed clients (``kubectl create namespace|configmap|secret|serviceaccount``,
``kubectl drain``'s evictions) send ``application/vnd.kubernetes.protobuf`` bodies: the magic
``k8s\\x00`` and a ``runtime.Unknown`` (typeMeta, raw) whose raw bytes are the object message of
k8s.io/api's generated.proto. The lab answers in JSON (clients accept it) and decodes these
kinds into their JSON form; any other kind is refused with 415.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"

# message name -> field number -> (json name, kind, repeated)
# kinds: str, bytes, int, bool, time, map, bmap (map<string, bytes>), or a message name
Field = tuple[str, str, bool]
MESSAGES: dict[str, dict[int, Field]] = {
    "TypeMeta": {1: ("apiVersion", "str", False), 2: ("kind", "str", False)},
    "Unknown": {1: ("typeMeta", "TypeMeta", False), 2: ("raw", "raw", False),
                3: ("contentEncoding", "str", False), 4: ("contentType", "str", False)},
    "ObjectMeta": {1: ("name", "str", False), 2: ("generateName", "str", False),
                   3: ("namespace", "str", False), 5: ("uid", "str", False),
                   6: ("resourceVersion", "str", False), 7: ("generation", "int", False),
                   8: ("creationTimestamp", "time", False),
                   10: ("deletionGracePeriodSeconds", "int", False),
                   11: ("labels", "map", False), 12: ("annotations", "map", False),
                   13: ("ownerReferences", "OwnerReference", True),
                   14: ("finalizers", "str", True)},
    "OwnerReference": {1: ("kind", "str", False), 3: ("name", "str", False),
                       4: ("uid", "str", False), 5: ("apiVersion", "str", False),
                       6: ("controller", "bool", False),
                       7: ("blockOwnerDeletion", "bool", False)},
    "ConfigMap": {1: ("metadata", "ObjectMeta", False), 2: ("data", "map", False),
                  3: ("binaryData", "bmap", False), 4: ("immutable", "bool", False)},
    "Secret": {1: ("metadata", "ObjectMeta", False), 2: ("data", "bmap", False),
               3: ("type", "str", False), 4: ("stringData", "map", False),
               5: ("immutable", "bool", False)},
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False)},
    "NamespaceSpec": {1: ("finalizers", "str", True)},
    "ServiceAccount": {1: ("metadata", "ObjectMeta", False),
                       4: ("automountServiceAccountToken", "bool", False)},
    "Eviction": {1: ("metadata", "ObjectMeta", False),
                 2: ("deleteOptions", "DeleteOptions", False)},
    "DeleteOptions": {1: ("gracePeriodSeconds", "int", False),
                      2: ("preconditions", "Preconditions", False),
                      3: ("orphanDependents", "bool", False),
                      4: ("propagationPolicy", "str", False), 5: ("dryRun", "str", True)},
    "Preconditions": {1: ("uid", "str", False), 2: ("resourceVersion", "str", False)},
    "Time": {1: ("seconds", "int", False), 2: ("nanos", "int", False)},
    # kubectl create deployment|job
    "Deployment": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "DeploymentSpec", False)},
    "DeploymentSpec": {1: ("replicas", "int", False), 2: ("selector", "LabelSelector", False),
                       3: ("template", "PodTemplateSpec", False),
                       5: ("minReadySeconds", "int", False),
                       6: ("revisionHistoryLimit", "int", False), 7: ("paused", "bool", False),
                       9: ("progressDeadlineSeconds", "int", False)},
    "Job": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "JobSpec", False)},
    "JobSpec": {1: ("parallelism", "int", False), 2: ("completions", "int", False),
                3: ("activeDeadlineSeconds", "int", False),
                4: ("selector", "LabelSelector", False), 5: ("manualSelector", "bool", False),
                6: ("template", "PodTemplateSpec", False), 7: ("backoffLimit", "int", False),
                8: ("ttlSecondsAfterFinished", "int", False)},
    "LabelSelector": {1: ("matchLabels", "map", False)},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "PodSpec", False)},
    "PodSpec": {2: ("containers", "Container", True), 3: ("restartPolicy", "str", False),
                4: ("terminationGracePeriodSeconds", "int", False),
                5: ("activeDeadlineSeconds", "int", False), 6: ("dnsPolicy", "str", False),
                7: ("nodeSelector", "map", False), 8: ("serviceAccountName", "str", False),
                10: ("nodeName", "str", False)},
    "Container": {1: ("name", "str", False), 2: ("image", "str", False),
                  3: ("command", "str", True), 4: ("args", "str", True),
                  5: ("workingDir", "str", False), 7: ("env", "EnvVar", True),
                  14: ("imagePullPolicy", "str", False)},
    "EnvVar": {1: ("name", "str", False), 2: ("value", "str", False)},
    "MapEntry": {1: ("key", "raw", False), 2: ("value", "raw", False)},
}


_OMIT_ZERO = frozenset(("generation", "deletionGracePeriodSeconds"))


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((num, wire, value))
    return out


def decode(message: str, buf: bytes) -> dict[str, Any]:
    spec = MESSAGES[message]
    out: dict[str, Any] = {}
    for num, _, value in _fields(buf):
        if num not in spec:
            continue
        name, kind, repeated = spec[num]
        if kind in ("map", "bmap"):
            entry = decode("MapEntry", value)
            val = entry.get("value", b"")
            out.setdefault(name, {})[entry.get("key", b"").decode()] = (
                base64.b64encode(val).decode() if kind == "bmap" else val.decode())
            continue
        if kind == "str":
            conv: Any = value.decode()
        elif kind == "raw":
            conv = value
        elif kind == "int":
            conv = value - (1 << 64) if value >= 1 << 63 else value
        elif kind == "bool":
            conv = bool(value)
        elif kind == "time":
            t = decode("Time", value)
            if not t.get("seconds"):
                continue  # the zero time is absent in JSON
            conv = datetime.fromtimestamp(t.get("seconds", 0), UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
        else:
            conv = decode(kind, value)
        if repeated:
            out.setdefault(name, []).append(conv)
        elif conv != "" and not (conv == 0 and name in _OMIT_ZERO):
            out[name] = conv  # Go's omitempty: empty strings and zero counters are absent
    return out


def decode_object(data: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object, or ProtobufError for unknown kinds."""
    if not data.startswith(MAGIC):
        raise ProtobufError("missing k8s protobuf magic")
    unknown = decode("Unknown", data[len(MAGIC):])
    type_meta = unknown.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in MESSAGES or kind in ("TypeMeta", "Unknown", "MapEntry", "Time"):
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not supported by the lab; "
                            "send JSON")
    obj = decode(kind, unknown.get("raw", b""))
    obj["apiVersion"] = type_meta.get("apiVersion", "")
    obj["kind"] = kind
    return obj
