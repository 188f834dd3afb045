"""A cap on request bodies: every body the API takes is a few hundred bytes, so one of
megabytes is refused 413 (problem+json) as it arrives, before it is buffered or parsed."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 1 << 20


def too_large() -> HTTPException:
    return HTTPException(413, f"the request body is larger than {MAX_BODY} bytes")


class BodyLimit:
    """Raised from `receive`, the refusal reaches the app's handlers as an HTTPException; FastAPI
    re-raises those while reading a body, so it is answered 413 rather than a parsing error."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        received = 0

        async def limited() -> Message:
            nonlocal received
            if not declared.isdigit() or int(declared) > self.limit:
                raise too_large()
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise too_large()
            return message

        await self.app(scope, limited, send)
