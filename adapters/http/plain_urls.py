"""URLs of printable text only. Every id and parameter the API takes is printable, so a path or
query holding a control or format character (a NUL, a bidi override) is refused 400 before any
route reads it: PostgreSQL cannot even compare a text holding NUL, and an error message echoing
the id would carry the character on."""

from __future__ import annotations

from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http.problems import problem
from domain.text import one_line, unprintable


class PlainUrls:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = unquote(scope.get("query_string", b"").decode("latin-1"), errors="replace")
            for part, text in (("path", scope["path"]), ("query", query)):
                if unprintable(text):
                    response = problem("invalid_request", f"the URL's {part} holds a control or formatting character "
                                       f"({one_line(text)[:80]}): ids and parameters are printable text")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
