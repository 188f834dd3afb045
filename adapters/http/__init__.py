"""The HTTP API (`subledger serve`): FastAPI over the same Ledger as the command line."""
