"""Accounts in the web app (issue #17; the rules: assistant/accounts.py).

Two things live here, so that no tab has to think about users:
- where a request's user comes from: Gradio's login puts the signed-in name on every event's
  request, and `install_accounts` registers a source that reads it, so the conversation log
  acts for that user in every event;
- which events change what the team shares in a way only an admin may (deleting or restoring
  examples, documents and adapters): each is wrapped once, by its api_name, to refuse anyone
  else with a clear message before it runs.
"""

from __future__ import annotations

import functools

import gradio as gr

from assistant.accounts import AccessDenied, Accounts, add_user_source

# api_name -> what the refusal says only an admin may do
ADMIN_EVENTS = {
    "dataset_delete": "delete examples from the shared dataset",
    "dataset_undo": "undo changes to the shared dataset",
    "dataset_clean_fix": "remove examples from the shared dataset",
    "knowledge_delete": "delete documents",
    "tune_delete_adapter": "delete adapters",
}


def gradio_user() -> str | None:
    """The signed-in user of the Gradio event being run in this thread, if any."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return getattr(request, "username", None) if request is not None else None


def install_accounts(demo: gr.Blocks, accounts: Accounts) -> None:
    """Make the log act for each event's signed-in user, and gate the admins' events."""
    add_user_source(gradio_user)
    if not accounts.enabled:
        return
    for block_fn in demo.fns.values():
        what = ADMIN_EVENTS.get(block_fn.api_name or "")
        if what is not None and block_fn.fn is not None:
            block_fn.fn = _admin_only(block_fn.fn, accounts, what)


def _admin_only(fn, accounts: Accounts, what: str):
    @functools.wraps(fn)
    def gated(*args, **kwargs):
        try:
            accounts.require_admin(what)
        except AccessDenied as exc:  # shown as the event's error; nothing runs
            raise gr.Error(str(exc)) from None
        return fn(*args, **kwargs)

    return gated
