"""The HTTP front end (aiohttp): bearer-token authentication, body decoding, JSON rendering,
chunked watch streams. All semantics live in :mod:`hosted_engine.lab.apiserver.core`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from typing import Any

import yaml
from aiohttp import web

from hosted_engine.lab.apiserver import protobuf
from hosted_engine.lab.apiserver.core import ApiCore, ApiRequest, ApiResponse
from hosted_engine.lab.apiserver.errors import ApiError

_PUBLIC = frozenset(("/healthz", "/readyz", "/livez"))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _unauthorized() -> web.Response:
    err = ApiError(401, "Unauthorized", "Unauthorized")
    return web.Response(status=401, body=_dumps(err.status()), content_type="application/json")


def build_app(core: ApiCore, token: str | None) -> web.Application:
    """The aiohttp application serving ``core``; ``token`` None disables authentication."""
    expected = f"Bearer {token}".encode() if token else None

    async def handler(request: web.Request) -> web.StreamResponse:
        if expected is not None and request.path not in _PUBLIC:
            got = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(got, expected):
                return _unauthorized()
        ctype = request.headers.get("Content-Type", "application/json")
        body: Any = None
        if "protobuf" in ctype and request.can_read_body:
            try:
                body = protobuf.decode_object(await request.read())
            except (protobuf.ProtobufError, UnicodeDecodeError, KeyError) as exc:
                err = ApiError(415, f"the body of the request was in an unknown format - "
                                    f"accepted media types include: application/json, "
                                    f"application/yaml ({exc})", "UnsupportedMediaType")
                return web.Response(status=415, body=_dumps(err.status()),
                                    content_type="application/json")
            ctype = "application/json"
        elif request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    body = yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw)
                except (ValueError, yaml.YAMLError) as exc:
                    err = ApiError(400, f"couldn't get version/kind; json parse error: {exc}",
                                   "BadRequest")
                    return web.Response(status=400, body=_dumps(err.status()),
                                        content_type="application/json")
        query = {k: request.query.getone(k) for k in request.query}
        req = ApiRequest(request.method, request.path, query, body, ctype,
                         request.headers.get("Accept", "application/json"),
                         user_agent=request.headers.get("User-Agent", ""))
        resp = await core.handle(req)
        return await _render(request, resp)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def _render(request: web.Request, resp: ApiResponse) -> web.StreamResponse:
    if resp.events is not None:
        stream = web.StreamResponse(status=200, headers={
            "Content-Type": "application/json", "Cache-Control": "no-cache",
            **resp.headers})
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        events = resp.events
        try:
            async for event in events:
                await stream.write(_dumps(event) + b"\n")
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(ConnectionResetError, ConnectionError):
            await stream.write_eof()
        return stream
    if resp.chunks is not None:
        stream = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        try:
            async for chunk in resp.chunks:
                await stream.write(chunk)
            await stream.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return stream
    body = resp.body
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = _dumps(body)
    return web.Response(status=resp.status, body=data, headers={
        "Content-Type": resp.content_type, **resp.headers})
