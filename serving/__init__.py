"""Serving: the HTTP surface beside the web UI. The OpenAI-compatible API under /v1 (`api`,
`requests` for parsing, `errors` for OpenAI's error shape), the bounded request queue
(`queue`) and the server's ASGI middleware (`middleware`: body cap, login back-off).
Imports the core (assistant) and nothing above it; only app.py imports this package."""
