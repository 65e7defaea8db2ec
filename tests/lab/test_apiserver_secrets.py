"""Secrets: ``stringData`` is a write-only convenience field, merged into ``data``.

Kubernetes docs, "Secrets" (https://kubernetes.io/docs/concepts/configuration/secret/) and the
Secret API reference (https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-
resources/secret-v1/): "stringData allows specifying non-binary secret data in string form. It
is provided as a write-only input field for convenience. All keys and values are merged into
the data field on write, overwriting any existing values. The stringData field is never output
when reading from the API." The same holds for a create, an update (PUT) and a patch.
"""

from __future__ import annotations

import base64
from typing import Any

from lab_api import Api

SECRETS = "/api/v1/namespaces/default/secrets"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


async def test_create_merges_string_data_into_data_and_never_returns_it(api: Api) -> None:
    """A create answers, stores and lists the values base64 in ``data``; a ``stringData`` key
    overwrites the same ``data`` key; ``stringData`` is in no answer."""
    created = await api.ok("POST", SECRETS, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
        "data": {"user": b64("old"), "keep": b64("kept")},
        "stringData": {"user": "admin", "password": "pa:ss wörd"}})
    read = await api.ok("GET", f"{SECRETS}/s1")
    (listed,) = (await api.ok("GET", SECRETS))["items"]
    for secret in (created, read, listed):
        assert "stringData" not in secret
        assert secret["data"]["password"] == b64("pa:ss wörd")
        assert decoded(secret) == {"user": "admin", "keep": "kept", "password": "pa:ss wörd"}
        assert secret["type"] == "Opaque"


async def test_update_and_patches_merge_string_data(api: Api) -> None:
    """PUT, JSON merge patch and strategic merge patch with ``stringData`` change ``data``
    (keys not named are kept) and store no ``stringData``."""
    secret = await api.ok("POST", SECRETS, {"metadata": {"name": "s2"},
                                            "stringData": {"a": "1"}})
    secret["stringData"] = {"b": "2"}
    put = await api.ok("PUT", f"{SECRETS}/s2", secret)
    assert decoded(put) == {"a": "1", "b": "2"} and "stringData" not in put
    merged = await api.ok("PATCH", f"{SECRETS}/s2", {"stringData": {"a": "one"}},
                          ctype="application/merge-patch+json")
    assert decoded(merged) == {"a": "one", "b": "2"} and "stringData" not in merged
    strategic = await api.ok("PATCH", f"{SECRETS}/s2", {"stringData": {"c": "3"}},
                             ctype="application/strategic-merge-patch+json")
    assert decoded(strategic) == {"a": "one", "b": "2", "c": "3"}
    read = await api.ok("GET", f"{SECRETS}/s2")
    assert "stringData" not in read and decoded(read) == {"a": "one", "b": "2", "c": "3"}
    assert int(read["metadata"]["resourceVersion"]) > int(put["metadata"]["resourceVersion"])


async def test_server_side_apply_and_dry_run_merge_string_data(api: Api) -> None:
    """Server-side apply creates with ``data``; a dry-run create answers the merged object
    and stores nothing."""
    applied = await api.ok("PATCH", f"{SECRETS}/s3",
                           {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
                            "stringData": {"token": "t0k"}},
                           ctype="application/apply-patch+yaml", query={"fieldManager": "t"})
    assert decoded(applied) == {"token": "t0k"} and "stringData" not in applied
    dry = await api.ok("POST", SECRETS, {"metadata": {"name": "s4"}, "stringData": {"x": "y"}},
                       query={"dryRun": "All"})
    assert decoded(dry) == {"x": "y"} and "stringData" not in dry
    missing = await api.req("GET", f"{SECRETS}/s4")
    assert missing.status == 404


async def test_string_data_values_must_be_strings(api: Api) -> None:
    """``stringData`` is a map of strings: another value is a 400 decoding error and nothing
    is created."""
    resp = await api.req("POST", SECRETS, {"metadata": {"name": "s5"},
                                           "stringData": {"port": 623}})
    assert resp.status == 400 and resp.body["reason"] == "BadRequest"
    assert (await api.req("GET", f"{SECRETS}/s5")).status == 404

