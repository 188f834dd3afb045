"""The support console: server-rendered pages at /console over the same read models, replay
functions and tokens as the API (docs/console.md). It reads; the only POSTs are signing in
and out, which record nothing in the ledger."""

from adapters.console.routes import router

__all__ = ["router"]
