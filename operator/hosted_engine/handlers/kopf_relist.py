"""kopf re-lists without reporting what was deleted meanwhile: deliver those deletions.

kopf lists a resource, then watches from the list's resourceVersion. When it must list again
(the operator paused by peering while another replica acted, then resumed; a ``410 Gone``),
it yields the objects that exist (type ``None``) and a ``LISTED`` bookmark, but nothing for the
objects deleted while it was not watching: kopf 1.45's indexes (``@kopf.index``) drop an entry
only on a ``DELETED`` event, and so do our own caches (the Host reconciler's world). The
reliability suite's lab chaos test found it: a paused replica resumed after the other one had
replaced the engine's VMI, and its ``he_vmis`` index still held the old VMI on the fenced node
(the engine stuck in EngineStart, Degraded, or reported up on the wrong host: 19 of 27 labs).

client-go's reflector does this with ``Replace`` (``DeletedFinalStateUnknown``); here
:func:`continuous_watch` wraps kopf's own: it remembers the metadata of every object it passed
on, per resource and namespace, and when a listing ends it yields a ``DELETED`` event, with the
last metadata seen (name, namespace, uid, resourceVersion, labels, annotations, owners), for each
remembered object the listing did not contain, before the ``LISTED`` bookmark. kopf then runs
what it runs on a deletion: index entries discarded, ``@kopf.on.event`` handlers called with
type ``DELETED``, the per-object memory forgotten.

:func:`install` replaces kopf's ``continuous_watch`` (the module attribute that
``infinite_watch`` calls); it refuses, with a warning, if kopf's signature is not the expected.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kopf._cogs.clients import watching

log = logging.getLogger(__name__)

_ORIGINAL: Any = watching.continuous_watch
_EXPECTED = ("settings", "resource", "namespace", "operator_pause_waiter")
#: the metadata kept per object (what kopf's indexes, filters and our deletion handlers read)
_KEPT = ("name", "namespace", "uid", "resourceVersion", "labels", "annotations",
         "ownerReferences", "generation")

#: (operator, resource, namespace) -> uid -> the last metadata-only body passed on; the
#: operator is its kopf settings object (kept referenced, so its id is not reused), as tests
#: run several operators in one process
_KNOWN: dict[tuple[int, Any, Any], tuple[Any, dict[str, dict[str, Any]]]] = {}


def _trimmed(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "metadata": {k: meta[k] for k in _KEPT if k in meta}}


def _uid(obj: Any) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    uid = (obj.get("metadata") or {}).get("uid")
    return str(uid) if uid else None


async def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
    """kopf's ``continuous_watch``, plus a ``DELETED`` event for each object a new listing no
    longer has."""
    settings = kwargs.get("settings")
    key = (id(settings), kwargs.get("resource"), kwargs.get("namespace"))
    known = _KNOWN.setdefault(key, (settings, {}))[1]
    listed: set[str] | None = set()  # the uids of this listing, until it ends
    async for item in _ORIGINAL(**kwargs):
        if item is watching.Bookmark.LISTED:
            if listed is not None:
                for missing in [u for u in known if u not in listed]:
                    gone = known.pop(missing)
                    log.debug("%s/%s deleted while not watched: delivered as DELETED",
                              gone["metadata"].get("namespace"), gone["metadata"].get("name"))
                    yield {"type": "DELETED", "object": gone}
                listed = None
            yield item
            continue
        if isinstance(item, Mapping):
            obj = item.get("object")
            uid = _uid(obj)
            if uid is not None and isinstance(obj, Mapping):
                kind = item.get("type")
                if kind == "DELETED":
                    known.pop(uid, None)
                elif kind in (None, "ADDED", "MODIFIED"):
                    known[uid] = _trimmed(obj)
                    if kind is None and listed is not None:
                        listed.add(uid)
        yield item


def forget() -> None:
    """Drop what is remembered (tests; a new operator in the same process)."""
    _KNOWN.clear()


def _compatible() -> bool:
    try:
        params = inspect.signature(_ORIGINAL).parameters
    except (TypeError, ValueError):
        return False
    return (tuple(params) == _EXPECTED and inspect.isasyncgenfunction(_ORIGINAL)
            and hasattr(watching, "Bookmark") and hasattr(watching.Bookmark, "LISTED"))


def install() -> bool:
    """Put :func:`continuous_watch` in place of kopf's; True if done."""
    if watching.continuous_watch is continuous_watch:
        return True
    if not _compatible():
        log.warning("kopf's continuous_watch is not the one expected: objects deleted while "
                    "a watch was down stay in the caches until the operator restarts")
        return False
    watching.continuous_watch = continuous_watch
    return True


def uninstall() -> None:
    """Back to kopf's own (tests)."""
    watching.continuous_watch = _ORIGINAL


install()
