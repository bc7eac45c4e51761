"""Tailor's server: builds the Gradio app from ui/ and launches it.

`python app.py [--host] [--port] [--workspace] [--model] [--auth]` is the same as `tailor serve`."""

from __future__ import annotations

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
    if not settings.is_loopback and not pairs:
        raise StartupError(
            f"Refusing to listen on {settings.host} without credentials: anyone on the network could read "
            "your conversations. Pass --auth user:password (or set TAILOR_AUTH), or bind 127.0.0.1."
        )
    return pairs or None


def build_app(core: Core):
    from ui.app import build_ui

    return build_ui(core)


def serve(settings: Settings, *, block: bool = True):
    auth = check_binding(settings)
    core = open_core(settings, progress=lambda msg: print(msg, flush=True))
    demo = build_app(core)
    demo.queue(default_concurrency_limit=4)
    print(f"Tailor: workspace {core.workspace.root}, model {core.engine.name} on {core.engine.hardware.describe()}",
          flush=True)
    demo.launch(server_name=settings.host, server_port=settings.port, auth=auth, prevent_thread_lock=not block,
                show_error=True, quiet=False, footer_links=["api", "settings"])
    return core, demo


def main(argv: list[str] | None = None) -> int:
    from cli.main import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
