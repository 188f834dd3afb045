"""Who may call a route is checked before what its JSON body says, malformed bodies included.

FastAPI parses a JSON body before it resolves a route's dependencies, so a body that was not
JSON at all was answered 400 to a caller without a token (401) or outside the workspace (403).
A route of this class hands such a body on as a JSON value no body model takes, and keeps the
parse error for the refusal (problems.py): the caller's token is checked first, and a caller
who may call the route still reads where the body stopped being JSON.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Coroutine

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Message

from adapters import json_text

NOT_JSON = b'"the body is not JSON"'
"""What the route's dependencies and body model see instead of a malformed body."""


def sent_as_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def malformed(request: Request) -> json.JSONDecodeError | None:
    """The parse error of the body a route of this class was sent, if it was not JSON."""
    return getattr(request.state, "malformed_json", None)


class CallerFirst(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            body = await request.body()
            if body and sent_as_json(request):
                try:
                    json_text.loads(body)
                except (ValueError, RecursionError) as error:
                    request.state.malformed_json = error if isinstance(error, json.JSONDecodeError) else \
                        json.JSONDecodeError(str(error) or "nested too deeply", "", 0)

                    async def instead() -> Message:
                        return {"type": "http.request", "body": NOT_JSON, "more_body": False}

                    request = Request(request.scope, instead)
            return await handler(request)

        return checked
