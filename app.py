"""Tailor's server: one FastAPI app served by uvicorn, with the OpenAI-compatible API at /v1
(assistant/api.py) and the Gradio web app from ui/ mounted at "/".

One server, one port, one engine: the browser, gradio_client scripts and OpenAI clients all
talk to the same process, so an adapter published by a training job is picked up by all of
them without a restart.

`python app.py [--host] [--port] [--workspace] [--model] [--auth]` is the same as `tailor serve`."""

from __future__ import annotations

import argparse
import logging
import sys

from assistant.errors import TailorError
from assistant.runtime import Core, open_core
from assistant.settings import Settings

log = logging.getLogger("tailor")


class StartupError(TailorError):
    """The server refuses to start (unsafe binding, bad settings)."""


def check_binding(settings: Settings) -> list[tuple[str, str]] | None:
    """Off loopback, the app must have credentials: it can read every conversation."""
    try:
        pairs = settings.auth_pairs()
    except ValueError as exc:
        raise StartupError(f"TAILOR_AUTH / --auth: {exc}") from exc
    try:
        settings.accounts()
    except ValueError as exc:
        raise StartupError(f"TAILOR_ADMINS: {exc}") from exc
    if not settings.is_loopback and not pairs:
        raise StartupError(
            f"Refusing to listen on {settings.host} without credentials: anyone on the network could read "
            "your conversations. Pass --auth user:password (or set TAILOR_AUTH), or bind 127.0.0.1."
        )
    return pairs or None


def build_app(core: Core):
    from ui.app import build_ui

    return build_ui(core)


def check_api_keys(settings: Settings) -> dict[str, str | None]:
    """The /v1 keys, each with the user it is bound to (or None)."""
    try:
        return settings.api_key_users()
    except ValueError as exc:
        raise StartupError(f"TAILOR_API_KEYS: {exc}") from exc


def build_server(core: Core, settings: Settings):
    """The FastAPI app: /v1 first, then the web UI mounted at "/" (Starlette matches routes in
    order, so the mount does not shadow /v1). Returns (app, demo)."""
    import os

    # Gradio's uploads and cache live in the workspace, not the system temp folder (every local
    # user can read that). Some gradio modules read this once when first imported, so it is
    # set before; ui.uploads.use_workspace_folder creates the folder 0700.
    os.environ["GRADIO_TEMP_DIR"] = str(core.workspace.root / "tmp" / "gradio")
    import gradio as gr
    from fastapi import FastAPI

    from serving.api import ApiConfig, install_api
    from serving.middleware import LoginThrottle
    from serving.queue import RequestLimiter
    from ui.app import PAGE_CSS, PAGE_JS
    from ui.quiet_queue import quiet_gradio_queue

    auth = check_binding(settings)
    keys = check_api_keys(settings)
    demo = build_app(core)
    # The web UI's own queue is bounded too: beyond max_size Gradio tells the browser the
    # queue is full instead of piling up work.
    demo.queue(default_concurrency_limit=max(4, core.engine.parallel), max_size=settings.max_queue)
    quiet_gradio_queue(demo)  # no 1 ms polling while nothing is queued (ui/quiet_queue.py)
    app = FastAPI(title="Tailor", docs_url=None, redoc_url=None, openapi_url=None)
    # As many /v1 requests run as the engine decodes together (1 on torch, TAILOR_PARALLEL on
    # llama.cpp); the rest wait in the bounded queue.
    limiter = RequestLimiter(
        max_active=core.engine.parallel, max_queue=settings.max_queue, timeout_s=settings.queue_timeout
    )
    install_api(
        app,
        core.chat,
        limiter,
        ApiConfig(
            key_users=keys,
            accounts=core.conversations.accounts.enabled,
            open_without_key=settings.is_loopback,
            max_request_bytes=settings.max_request_kb * 1024,
            max_messages=settings.max_messages,
            allowed_origins=settings.allowed_origin_list(),
        ),
    )
    app.state.limiter = limiter
    if auth:
        app.add_middleware(LoginThrottle)  # a back-off per address after wrong passwords
    gr.mount_gradio_app(
        app,
        demo,
        path="/",
        auth=auth,
        show_error=True,
        footer_links=["api", "settings"],
        max_file_size=f"{settings.max_upload_mb}mb",
        server_name=settings.host,
        server_port=settings.port,
        css=PAGE_CSS,
        js=PAGE_JS,
    )
    return app, demo


def serve(settings: Settings, *, block: bool = True):
    import threading

    import uvicorn

    check_binding(settings)  # refuse an unsafe binding before spending time loading the model
    check_api_keys(settings)
    core = open_core(settings, progress=lambda msg: print(msg, flush=True))
    app, demo = build_server(core, settings)
    keys = settings.api_key_list()
    print(
        f"Tailor: workspace {core.workspace.root}, model {core.engine.name}, engine {core.engine.describe()}",
        flush=True,
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"Web app:        http://{host}:{settings.port}/", flush=True)
    closed = "closed: set TAILOR_API_KEYS"
    access = "API key required" if keys else "open on localhost" if settings.is_loopback else closed
    print(f"OpenAI API:     http://{host}:{settings.port}/v1 ({access})", flush=True)
    accounts = core.conversations.accounts
    if accounts.enabled:
        print(
            f"Accounts:       {len(accounts.users)} users, each with their own conversations;"
            f" admins: {', '.join(sorted(accounts.admins))}",
            flush=True,
        )
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=3)
    )
    if block:
        server.run()
    else:
        threading.Thread(target=server.run, daemon=True, name="tailor-server").start()
    return core, demo


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's own options, shared by `python app.py` and `tailor serve` (cli/ calls this;
    the server never imports the CLI, so the layers point one way: cli -> app -> ui)."""
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 7860)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="credentials for the web UI (default $TAILOR_AUTH)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        home=getattr(args, "workspace", None),
        model=getattr(args, "model", None),
        host=args.host,
        port=args.port,
        auth=args.auth,
    )


def main(argv: list[str] | None = None) -> int:
    """`python app.py [--host] [--port] [--workspace] [--model] [--auth]`, as `tailor serve`."""
    parser = argparse.ArgumentParser(prog="app.py", description="Start Tailor's web app and /v1 API.")
    parser.add_argument("--workspace", metavar="DIR", help="workspace folder (default: $TAILOR_HOME or ./workspace)")
    parser.add_argument("--model", metavar="ID_OR_PATH", help="model (default: $TAILOR_MODEL or the embedded one)")
    add_serve_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        serve(settings_from_args(args))
    except TailorError as exc:
        print(f"tailor: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
