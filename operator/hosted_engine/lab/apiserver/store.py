"""The in-memory object store: one monotonic resourceVersion counter, objects indexed by
resource and namespace, a bounded event log per resource for watch replay, and watchers.

Stored objects are never mutated in place: every write stores a new dict (unchanged subtrees may
be shared with the previous version). Readers may therefore hand out stored objects without a
copy as long as they serialize them (HTTP) or copy them (the local client).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import Any

from hosted_engine.lab.apiserver.selectors import Selector

Obj = dict[str, Any]
Key = tuple[str, str]  # (group, plural)


class Event:
    __slots__ = ("obj", "prev", "rv", "type")

    def __init__(self, rv: int, type_: str, obj: Obj, prev: Obj | None) -> None:
        self.rv = rv
        self.type = type_
        self.obj = obj
        self.prev = prev


_CLOSE = object()


class Watcher:
    """One watch stream: a namespace filter, a selector and a queue of events."""

    def __init__(self, namespace: str | None, selector: Selector, max_queue: int) -> None:
        self.namespace = namespace
        self.selector = selector
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.max_queue = max_queue
        self.closed = False

    def translate(self, ev: Event) -> tuple[str, Obj] | None:
        """The event this watcher sees, with selector transitions (ADDED when an object starts
        matching, DELETED when it stops), or None."""
        sel = self.selector
        if sel.empty:
            return ev.type, ev.obj
        now = sel.matches(ev.obj)
        if ev.type == "MODIFIED":
            before = ev.prev is not None and sel.matches(ev.prev)
            if now and before:
                return "MODIFIED", ev.obj
            if now:
                return "ADDED", ev.obj
            if before:
                return "DELETED", ev.obj
            return None
        return (ev.type, ev.obj) if now else None

    def offer(self, ev: Event) -> None:
        if self.closed:
            return
        if self.namespace is not None and \
                (ev.obj.get("metadata") or {}).get("namespace") != self.namespace:
            return
        seen = self.translate(ev)
        if seen is None:
            return
        if self.queue.qsize() >= self.max_queue:
            self.close()  # a consumer too slow is cut off, like the real watch cache does
            return
        self.queue.put_nowait((ev.rv, seen[0], seen[1]))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(_CLOSE)

    @staticmethod
    def is_close(item: Any) -> bool:
        return item is _CLOSE


class Bucket:
    """All objects of one resource (all versions share a bucket)."""

    def __init__(self, log_size: int) -> None:
        self.objects: dict[str, dict[str, Obj]] = {}  # namespace ("" if cluster) -> name -> obj
        self.log: deque[Event] = deque(maxlen=log_size)
        self.compacted_rv = 0  # events with rv <= this are no longer in the log
        self.watchers: set[Watcher] = set()
        self.count = 0

    def get(self, namespace: str, name: str) -> Obj | None:
        ns = self.objects.get(namespace)
        return None if ns is None else ns.get(name)

    def iter(self, namespace: str | None) -> Iterator[Obj]:
        if namespace is not None:
            yield from (self.objects.get(namespace) or {}).values()
        else:
            for ns in self.objects.values():
                yield from ns.values()

    def append(self, ev: Event) -> None:
        if len(self.log) == self.log.maxlen and self.log:
            self.compacted_rv = self.log[0].rv
        self.log.append(ev)
        for w in list(self.watchers):
            w.offer(ev)


class Store:
    """Objects by resource, with one resourceVersion counter and indexes for GC."""

    def __init__(self, log_size: int = 1000, max_watch_queue: int = 100_000) -> None:
        self.rv = 1
        self.log_size = log_size
        self.max_watch_queue = max_watch_queue
        self.buckets: dict[Key, Bucket] = {}
        # uid -> (key, namespace, name) of every stored object
        self.uids: dict[str, tuple[Key, str, str]] = {}
        # owner uid -> set of (key, namespace, name) of dependents
        self.dependents: dict[str, set[tuple[Key, str, str]]] = {}
        self.dirty = False

    def bucket(self, key: Key) -> Bucket:
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Bucket(self.log_size)
        return b

    def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        b = self.buckets.get(key)
        return None if b is None else b.get(namespace, name)

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    @staticmethod
    def _owner_uids(obj: Obj | None) -> set[str]:
        if not obj:
            return set()
        return {ref.get("uid", "") for ref in
                (obj.get("metadata") or {}).get("ownerReferences") or [] if isinstance(ref, dict)}

    def put(self, key: Key, obj: Obj, prev: Obj | None) -> Obj:
        """Store a new version (assigning its resourceVersion) and emit ADDED/MODIFIED."""
        rv = self.next_rv()
        meta = obj["metadata"] = dict(obj["metadata"])
        meta["resourceVersion"] = str(rv)
        ns, name = meta.get("namespace") or "", meta["name"]
        b = self.bucket(key)
        objs = b.objects.setdefault(ns, {})
        if name not in objs:
            b.count += 1
        objs[name] = obj
        uid = meta.get("uid", "")
        self.uids[uid] = (key, ns, name)
        self._reindex(key, ns, name, prev, obj)
        self.dirty = True
        b.append(Event(rv, "ADDED" if prev is None else "MODIFIED", obj, prev))
        return obj

    def remove(self, key: Key, obj: Obj) -> Obj:
        """Remove an object, emitting DELETED with a new resourceVersion."""
        rv = self.next_rv()
        final = dict(obj)
        meta = final["metadata"] = dict(obj["metadata"])
        meta["resourceVersion"] = str(rv)
        ns, name = meta.get("namespace") or "", meta["name"]
        b = self.bucket(key)
        objs = b.objects.get(ns)
        if objs is not None and objs.pop(name, None) is not None:
            b.count -= 1
            if not objs:
                del b.objects[ns]
        self.uids.pop(meta.get("uid", ""), None)
        self._reindex(key, ns, name, obj, None)
        self.dirty = True
        b.append(Event(rv, "DELETED", final, obj))
        return final

    def _reindex(self, key: Key, ns: str, name: str, old: Obj | None, new: Obj | None) -> None:
        before, after = self._owner_uids(old), self._owner_uids(new)
        if before == after:
            return
        ref = (key, ns, name)
        for uid in before - after:
            deps = self.dependents.get(uid)
            if deps is not None:
                deps.discard(ref)
                if not deps:
                    del self.dependents[uid]
        for uid in after - before:
            self.dependents.setdefault(uid, set()).add(ref)

    def drop_bucket(self, key: Key) -> list[Obj]:
        """Remove every object of a resource (CRD deletion); returns the final objects."""
        b = self.buckets.get(key)
        if b is None:
            return []
        removed = [self.remove(key, obj) for obj in list(b.iter(None))]
        for w in list(b.watchers):
            w.close()
        return removed
