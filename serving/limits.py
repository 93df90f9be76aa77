"""A cap on request bodies, checked before anything parses them (413 beyond ``RECSYS_MAX_BODY_BYTES``)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException

TOO_LARGE = 413


class BodyLimitMiddleware:
    """Pure ASGI middleware: refuse a declared ``Content-Length`` over the cap at once, and stop reading a
    streamed (chunked) body as soon as it passes the cap."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI re-raises an HTTPException met while reading the body
                    raise HTTPException(TOO_LARGE, self._detail)
            return message

        await self.app(scope, counted, send)

    @property
    def _detail(self) -> str:
        return f"request body over {self.max_bytes} bytes (RECSYS_MAX_BODY_BYTES); send smaller batches"

    async def _refuse(self, send: Any) -> None:
        body = orjson.dumps({"detail": self._detail})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": TOO_LARGE, "headers": headers})
        await send({"type": "http.response.body", "body": body})
